"""Paying invoices (one, or everything outstanding), receipts, receipt PDFs, the payments list.

Paying is never wrapped in a database transaction: ``payment_collect`` commits a pending
payment before it calls the gateway (DESIGN rule 7). The confirmation page shows what
confirming does — credit applied first, then one card charge — and a fingerprint of those
amounts travels with the form, so a payment never charges other amounts than the ones shown.

New cards: one that is not to be saved is tokenized, charged and removed again. One to be saved
is saved (default card, auto-charge card of the subscriptions) only after its charge succeeded,
so a declined card never becomes anyone's default; the sandbox form still has the number in
hand then, so the saved copy is tokenized afresh and the one-off token removed. Saving needs
a recent re-authentication, as every other card change does.
"""

import contextlib
import datetime
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import messages
from django.core import signing
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_safe

from accounts.decorators import recently_authenticated
from billing import selectors
from billing.clock import billing_today
from billing.enums import InvoiceStatus, PaymentStatus, PortalRole
from billing.errors import BillingError
from billing.models import Customer, Invoice, Organization, Payment, PaymentMethod
from billing.money import ZERO
from billing.periods import start_of_day
from billing.services.payment_methods import payment_method_add, payment_method_remove
from billing.services.payments import (
    new_idempotency_key,
    payment_collect,
    payment_quote,
    payment_reconcile,
)
from portal.access import portal_view
from portal.documents import pdf_response
from portal.payment_forms import PayForm, PaymentFilterForm

PAGE_SIZE = 25
CURSOR_SALT = "portal.payments.cursor"
ONE_DAY = datetime.timedelta(days=1)
IN_FLIGHT = (PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
PAYER = {"role": PortalRole.PAYER, "preference": "allow_payments"}


class AmountsChanged(BillingError):
    default_message = (
        "The amounts changed since this page was opened. Check them and confirm again."
    )


# ----------------------------------------------------------------------------- paying
@sensitive_post_parameters("number", "cvc")
@portal_view(**PAYER)
@require_http_methods(["GET", "POST"])
def invoice_pay(request, public_id):
    invoice = request.portal.get(Invoice.objects.exclude(status=InvoiceStatus.DRAFT), public_id)
    return _checkout(request, [invoice], {"invoice": invoice})


@sensitive_post_parameters("number", "cvc")
@portal_view(**PAYER)
@require_http_methods(["GET", "POST"])
def pay_all(request):
    ids = selectors.open_invoices(request.portal.customer_ids).values_list("pk", flat=True)
    return _checkout(request, [Invoice(pk=pk) for pk in ids], {"invoice": None})


@dataclass
class CheckoutRow:
    invoice: Invoice
    balance: Decimal
    credits: list[tuple[int, Decimal]]  # (credit owner pk, amount)

    @property
    def credit(self) -> Decimal:
        return sum((amount for _owner, amount in self.credits), ZERO)

    @property
    def charge(self) -> Decimal:
        return self.balance - self.credit


@dataclass
class Checkout:
    """What confirming would do; ``problem`` says why there is nothing to pay."""

    currency: str = ""
    rows: list[CheckoutRow] = field(default_factory=list)
    problem: str = ""

    @property
    def balance_total(self) -> Decimal:
        return sum((row.balance for row in self.rows), ZERO)

    @property
    def credit_total(self) -> Decimal:
        return sum((row.credit for row in self.rows), ZERO)

    @property
    def charge_total(self) -> Decimal:
        return sum((row.charge for row in self.rows), ZERO)

    @property
    def charges(self) -> list[tuple[int, Decimal]]:
        return [(row.invoice.pk, row.charge) for row in self.rows if row.charge > 0]

    @property
    def summary(self) -> str:
        shown = "|".join(
            f"{row.invoice.public_id}:{row.balance}:{row.credit}:{row.charge}" for row in self.rows
        )
        return hashlib.sha256(shown.encode()).hexdigest()


def _quote(portal, invoices) -> Checkout:
    if not invoices:
        return Checkout(problem="There is nothing to pay right now.")
    try:
        quote = payment_quote(payer=portal.customer, invoices=invoices)
    except BillingError as error:
        return Checkout(problem=error.message)
    credits = selectors.credit_application_preview(
        payer_id=portal.customer.pk, invoices=quote.invoices
    )
    rows = [CheckoutRow(inv, balance, credits[inv.pk]) for inv, balance in quote.invoices]
    return Checkout(currency=quote.currency, rows=rows)


def _checkout(request, invoices, context):
    portal = request.portal
    cards = list(PaymentMethod.objects.filter(customer=portal.customer))
    if request.method == "POST":
        key = request.POST.get("idempotency_key", "")
        replayed = _payment_under_key(portal, key, actor=request.user)
        if replayed is not None:
            return _outcome(request, replayed, invoices, cards, context)
    checkout = _quote(portal, invoices)
    form = _pay_form(request, checkout, cards, data=request.POST or None)
    error = ""
    if request.method == "POST" and not checkout.problem and form.is_valid():
        try:
            return _confirm(request, checkout, form, invoices, cards, context)
        except AmountsChanged as changed:
            checkout = _quote(portal, invoices)
            form, error = _pay_form(request, checkout, cards, chosen=form), changed.message
        except BillingError as refused:
            if refused.field in form.fields:
                form.add_error(refused.field, refused.message)
            else:
                error = refused.message
    return _render_checkout(request, checkout, form, context, error)


def _pay_form(request, checkout, cards, *, data=None, chosen=None) -> PayForm:
    """The bound form, or a fresh one (new key) keeping the card the customer had chosen."""
    initial = {"idempotency_key": new_idempotency_key(), "summary": checkout.summary}
    if chosen is not None:
        initial["method"] = chosen.cleaned_data.get("method") or chosen.data.get("method")
    return PayForm(
        data,
        initial=initial,
        cards=cards,
        charge_needed=checkout.charge_total > 0,
        can_save=recently_authenticated(request),
        saving_allowed=request.portal.preferences.allow_payment_method_changes,
    )


def _render_checkout(request, checkout, form, context, error="", status=200):
    names = dict(request.portal.visible)
    for row in checkout.rows:
        row.customer_name = names.get(row.invoice.customer_id, "")
    context = {
        **context,
        "checkout": checkout,
        "form": form,
        "error": error,
        "today": billing_today(),
        "reauthenticate_url": f"{reverse('accounts_reauthenticate')}?"
        + urlencode({"next": request.path}),
    }
    return render(request, "portal/payments/pay.html", context, status=status)


def _confirm(request, checkout, form, invoices, cards, context):
    """Apply the credit shown, then charge the card once for the rest."""
    portal = request.portal
    if form.cleaned_data["summary"] != checkout.summary:
        raise AmountsChanged()
    one_off = None
    method = form.saved_card
    if form.wants_new_card:
        try:
            one_off = payment_method_add(
                customer=portal.customer, **form.card_details(), actor=request.user
            )
        except BillingError as refused:
            form.add_gateway_error(refused)
            return _render_checkout(request, checkout, form, context)
        method = one_off
    try:
        _apply_credit(portal, checkout, request.user)
        if not checkout.charges:
            return _paid_with_credit(request, checkout)
        to_charge = [row.invoice for row in checkout.rows if row.charge > 0]
        quote = payment_quote(payer=portal.customer, invoices=to_charge)
        if [(i.pk, amount) for i, amount in quote.invoices] != checkout.charges:
            raise AmountsChanged()
        payment = payment_collect(
            payer=portal.customer,
            invoices=to_charge,
            method=method,
            idempotency_key=form.cleaned_data["idempotency_key"],
            actor=request.user,
        )
        if one_off is not None and form.cleaned_data.get("save_card"):
            _save_card_after_success(request, form, payment, one_off)
    finally:
        if one_off is not None:
            _discard(one_off, request.user)
    return _outcome(request, payment, invoices, cards, context, chosen=form)


def _apply_credit(portal, checkout, actor) -> None:
    from billing.services.credits import credits_apply_to_invoice

    for row in checkout.rows:
        for owner_id, amount in row.credits:
            owner = portal.customer if owner_id == portal.customer.pk else None
            applied = credits_apply_to_invoice(
                invoice=row.invoice, owner=owner, limit=amount, actor=actor
            )
            if applied != amount:
                raise AmountsChanged()


def _save_card_after_success(request, form, payment, one_off) -> None:
    if payment.status != PaymentStatus.SUCCEEDED or payment.method_id != one_off.pk:
        return  # declined, or another submit of this form made the payment
    try:
        saved = payment_method_add(
            customer=request.portal.customer,
            **form.card_details(),
            make_default=True,
            use_for_subscriptions=True,
            actor=request.user,
        )
    except BillingError as refused:
        messages.warning(
            request, f"Your payment went through, but the card was not saved: {refused.message}"
        )
    else:
        messages.success(request, f"{saved} is saved as your default card.")


def _discard(card, actor) -> None:
    """Remove a card the customer did not ask to keep. One whose charge is still being
    confirmed must stay until that is settled (the service refuses); staff see it in admin."""
    with contextlib.suppress(BillingError):
        payment_method_remove(method=card, actor=actor)


def _payment_under_key(portal, key: str, *, actor) -> Payment | None:
    """A payment already made with this form (double submit): shown, never charged again."""
    payment = Payment.objects.filter(idempotency_key=key, customer=portal.customer).first()
    if payment is not None and payment.status in IN_FLIGHT:
        payment = payment_reconcile(payment=payment, actor=actor)
    return payment


def _outcome(request, payment, invoices, cards, context, *, chosen=None):
    if payment.status == PaymentStatus.FAILED:
        checkout = _quote(request.portal, invoices)
        form = _pay_form(request, checkout, cards, chosen=chosen)
        message = payment.failure_message or "The payment did not go through."
        return _render_checkout(request, checkout, form, context, error=message)
    if payment.status in IN_FLIGHT:
        messages.info(
            request,
            "We are still confirming your payment with the card provider. "
            "This page shows the outcome once it is known; please do not pay again meanwhile.",
        )
    else:
        messages.success(
            request, f"Thank you. Payment received (receipt {payment.receipt_number})."
        )
    if request.portal.preferences.show_payments:
        return redirect("portal:payment_detail", public_id=payment.public_id)
    return redirect("portal:dashboard")


def _paid_with_credit(request, checkout):
    numbers = ", ".join(row.invoice.number for row in checkout.rows)
    messages.success(request, f"Paid with your account credit: {numbers}.")
    if len(checkout.rows) == 1:
        try:
            return redirect(
                reverse("portal:invoice_detail", args=[checkout.rows[0].invoice.public_id])
            )
        except NoReverseMatch:
            pass
    return redirect("portal:dashboard")


# ----------------------------------------------------------------------------- receipts
@portal_view(preference="show_payments")
@require_safe
def payment_detail(request, public_id):
    payment = request.portal.get(_payments_with_credit(), public_id)
    context = {
        "payment": payment,
        "allocations": _allocations(payment),
        "refunds": list(payment.refunds.filter(status="succeeded").order_by("created_at")),
    }
    return render(request, "portal/payments/detail.html", context)


@portal_view(preference="show_payments")
@require_safe
def payment_pdf(request, public_id):
    payment = request.portal.get(_payments_with_credit(), public_id)
    if not payment.receipt_number:
        raise Http404  # only money received has a receipt
    context = {
        "payment": payment,
        "allocations": _allocations(payment),
        "organization": Organization.load(),
        "unapplied": payment.unapplied,
    }
    return pdf_response(
        "documents/receipt.html", context, filename=f"receipt-{payment.receipt_number}"
    )


def _payments_with_credit():
    """Payments with ``unapplied``: what a payment left as credit on the account."""
    return selectors.payments_with_unapplied(Payment.objects.select_related("customer"))


def _allocations(payment):
    return list(
        payment.allocations.select_related("invoice__customer").order_by("invoice__due_date", "id")
    )


# ----------------------------------------------------------------------------- list
@portal_view(preference="show_payments")
@require_safe
def payment_list(request):
    portal = request.portal
    customers = _branch_options(portal)
    form = PaymentFilterForm(
        request.GET, customers=[(key, name) for key, (_pk, name) in customers.items()]
    )
    form.is_valid()  # invalid filters are left out and shown next to their field
    chosen, zone = form.cleaned_data, Organization.load().zone
    payments = selectors.payments_of(
        portal.customer_ids,
        status=chosen.get("status", ""),
        created_from=start_of_day(chosen["date_from"], zone) if chosen.get("date_from") else None,
        created_before=start_of_day(chosen["date_to"] + ONE_DAY, zone)
        if chosen.get("date_to")
        else None,
        customer_id=customers.get(chosen.get("customer"), (None,))[0],
    ).select_related("customer")
    older, newer = _read_cursor(request.GET.get("older")), _read_cursor(request.GET.get("newer"))
    rows, has_newer, has_older = selectors.payment_keyset_page(
        payments, size=PAGE_SIZE, older_than=older, newer_than=newer
    )
    context = {
        "form": form,
        "payments": rows,
        "paged": bool(older or newer),
        "first_url": _page_url(request),
        "newer_url": _page_url(request, newer=_cursor(rows[0])) if rows and has_newer else "",
        "older_url": _page_url(request, older=_cursor(rows[-1])) if rows and has_older else "",
    }
    template = "portal/payments/list.html"
    partial = request.htmx and not request.htmx.history_restore_request
    response = render(request, f"{template}#table" if partial else template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _branch_options(portal) -> dict[str, tuple[int, str]]:
    """{public id: (pk, name)} of the customer and its visible branches; parents only."""
    if not portal.is_parent:
        return {}
    names = dict(portal.visible)
    ids = dict(Customer.objects.filter(pk__in=names).values_list("pk", "public_id"))
    return {str(ids[pk]): (pk, name) for pk, name in portal.visible if pk in ids}


def _cursor(payment: Payment) -> str:
    return signing.dumps([payment.created_at.isoformat(), payment.pk], salt=CURSOR_SALT)


def _read_cursor(token: str | None):
    """The (created_at, id) in a cursor, or None for a missing or tampered one (first page)."""
    if not token:
        return None
    try:
        moment, pk = signing.loads(token, salt=CURSOR_SALT)
        return datetime.datetime.fromisoformat(moment), int(pk)
    except (signing.BadSignature, ValueError, TypeError):
        return None


def _page_url(request, **cursor) -> str:
    """This list with the same filters and another cursor."""
    query = request.GET.copy()
    for key in ("older", "newer"):
        query.pop(key, None)
    query.update(cursor)
    return f"{request.path}?{query.urlencode()}"
