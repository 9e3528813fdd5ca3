"""Changing a subscription in the portal: the change page (plan, billing frequency, quantity,
addons, coupon; now or at the end of the term) with a live preview, cancelling a scheduled
change, reactivating, and the recovery page the payment-failed email links to.

DESIGN rule 5, preview equals charge: every figure these pages show comes from the billing
service itself run with ``dry_run=True``. The confirm form carries a digest of those figures;
confirming runs the dry run once more and goes on only if the digest is unchanged, then runs
the very same service for real. A refusal (``BillingError``) is shown next to the field it
names and nothing is written. No view here runs in a database transaction: cards are charged
outside any (rule 7), and each service opens its own.

Reactivating on another plan is "reactivate, then change now": the service reactivates on
the current plan (new term, its invoice) and ``subscription_change`` moves it to the chosen
plan at once (prorated: the unused current plan is credited in full, the new one charged).
The preview shows both steps; the second step's figures need the subscription live, so they
come from ``subscription_change(dry_run=True)`` run after a real reactivation inside a
transaction that is always rolled back, with automatic charging switched off inside it, so
no card is ever touched and nothing of it survives.
"""

import contextlib
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts.decorators import recently_authenticated
from billing import selectors
from billing.clock import billing_today
from billing.enums import ChangeTiming, InvoiceKind, InvoiceStatus, PaymentStatus, PortalRole
from billing.enums import SubscriptionStatus as S
from billing.errors import BillingError, InvalidTransition, ValidationFailed
from billing.models import (
    Invoice,
    InvoicePaymentLock,
    Organization,
    Payment,
    PaymentMethod,
    Subscription,
)
from billing.money import format_money
from billing.services.payment_methods import payment_method_add, payment_method_remove
from billing.services.payments import new_idempotency_key, payment_collect, payment_reconcile
from billing.services.subscriptions import (
    ChangeRequest,
    ChargesSummary,
    Outcome,
    change_is_upgrade,
    merchant_cancelled,
    reactivation_is_in_term,
    subscription_change,
    subscription_reactivate,
    subscription_scheduled_change_cancel,
    subscription_set_auto_charge,
)
from portal.access import portal_view
from portal.change_forms import (
    FIGURES_CHANGED,
    TIMING_CHOICE,
    ChangeOptions,
    Figures,
    ReactivateForm,
    ReactivationPlanForm,
    SubscriptionChangeForm,
    change_options,
    figures_digest,
    is_nothing,
    request_figures,
    summary_figures,
)

MANAGE = {"role": PortalRole.ADMIN, "preference": "show_subscriptions"}
CHANGEABLE = (S.LIVE, S.NON_RENEWING, S.IN_TRIAL)
REACTIVATABLE = (S.CANCELLED, S.EXPIRED)
IN_FLIGHT = (PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
CHANGE_PREFERENCES = (
    "allow_plan_change",
    "allow_frequency_change",
    "allow_quantity_change",
    "allow_addon_change",
    "allow_coupons",
)
RESTART_SAME_DAY = (
    "A term of this subscription was already invoiced today, so a new one cannot start today. "
    "Please try again tomorrow or contact us."
)
# Confirmations already carried out in this session: {form token: (level, message)}.
CONFIRMED_SESSION_KEY = "portal_subscription_confirmations"
CONFIRMED_KEPT = 20


# ----------------------------------------------------------------------------- change
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(**MANAGE)
def subscription_change_view(request, public_id):
    if not _any_change_allowed(request.portal.preferences):
        raise Http404
    subscription = _subscription(request, public_id)
    if request.method == "POST" and (replayed := _replayed(request, subscription)):
        return replayed
    options = change_options(request.portal.preferences, subscription)
    data = request.POST if request.method == "POST" else None
    form = SubscriptionChangeForm(data, options=options)
    preview = _change_preview(request.portal, subscription, form) if data else ChangePreview()
    if data and _confirming(request) and preview.ready:
        if form.cleaned_data.get("figures") == preview.digest:
            if done := _change_confirm(request, subscription, form, preview):
                return done
        else:
            form.add_error(None, FIGURES_CHANGED)
    return _render_change(request, subscription, form, options, preview)


@dataclass
class ChangePreview:
    """The change asked for, when it applies, and the service's dry-run summary of it."""

    request: ChangeRequest | None = None
    summary: ChargesSummary | None = None
    timing: str = ""
    timing_rule: str = ""  # now, term_end, or choice (the customer picks)
    upgrade: bool | None = None
    digest: str = ""

    @property
    def ready(self) -> bool:
        return self.summary is not None


def _change_preview(portal, subscription, form: SubscriptionChangeForm) -> ChangePreview:
    preview = ChangePreview()
    if subscription.status not in CHANGEABLE or not form.is_valid():
        return preview
    preview.request = change = form.change_request()
    if is_nothing(change):
        return preview
    preferences = portal.preferences
    try:
        preview.upgrade = change_is_upgrade(subscription=subscription, request=change)
        _refuse_direction(preferences, form.changed_part(change), change, upgrade=preview.upgrade)
        preview.timing_rule = (
            preferences.upgrade_timing if preview.upgrade else preferences.downgrade_timing
        )
        preview.timing = _timing(form, preview.timing_rule, upgrade=preview.upgrade)
        if subscription.status == S.NON_RENEWING and preview.timing == ChangeTiming.TERM_END:
            raise ValidationFailed(
                f"This subscription ends on {subscription.cancel_at:%b %-d, %Y}: a change at "
                "the end of the term would never apply.",
                field="timing",
            )
        outcome = subscription_change(
            subscription=subscription, request=change, timing=preview.timing, dry_run=True
        )
    except BillingError as refused:
        form.field_error(refused.field, refused.message)
        return preview
    preview.summary = outcome.summary
    preview.digest = figures_digest(
        str(subscription.public_id),
        request_figures(change),
        preview.timing,
        summary_figures(outcome.summary),
    )
    return preview


def _refuse_direction(preferences, field: str, change: ChangeRequest, *, upgrade: bool) -> None:
    """Upgrades and downgrades are each switched on or off by the merchant; the refusal goes
    next to ``field``. A coupon alone is neither: the coupon preference governs it."""
    if change.plan is None and change.quantity is None and change.addons is None:
        return
    if upgrade and not preferences.allow_upgrades:
        raise ValidationFailed(
            "Upgrades cannot be made in the portal. Please contact us to upgrade.",
            field=field,
        )
    if not upgrade and not preferences.allow_downgrades:
        raise ValidationFailed(
            "Downgrades cannot be made in the portal. Please contact us to downgrade.",
            field=field,
        )


def _timing(form, rule: str, *, upgrade: bool) -> str:
    if rule != TIMING_CHOICE:
        return rule
    chosen = form.cleaned_data.get("timing")
    return chosen or (ChangeTiming.NOW if upgrade else ChangeTiming.TERM_END)


def _change_confirm(request, subscription, form, preview: ChangePreview):
    """Run the previewed change for real; the service charges the card if an invoice is due."""
    try:
        outcome = subscription_change(
            subscription=subscription,
            request=preview.request,
            timing=preview.timing,
            actor=request.user,
        )
    except BillingError as refused:
        form.field_error(refused.field, refused.message)
        return None
    level, message = _change_message(request.portal, outcome, preview.timing)
    return _finish(request, subscription, form.cleaned_data.get("token"), level, message)


def _render_change(request, subscription, form, options: ChangeOptions, preview: ChangePreview):
    context = {
        "subscription": subscription,
        "form": form,
        "options": options,
        "preview": preview,
        "changeable": subscription.status in CHANGEABLE,
        "scheduled": _scheduled(subscription, options),
        "timing_choices": ChangeTiming.choices,
        "links": _links(request.portal, subscription),
        "fresh_token": new_idempotency_key("done"),
    }
    template = "portal/subscriptions/change.html"
    partial = request.htmx and not request.htmx.history_restore_request and request.POST
    response = render(request, f"{template}#change-form" if partial else template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _scheduled(subscription, options: ChangeOptions) -> dict | None:
    """The pending end-of-term change, described with names rather than codes."""
    change = getattr(subscription, "scheduled_change", None)
    if change is None:
        return None
    names = {addon.code: addon.name for addon in options.addons}
    return {
        "change": change,
        "addons": [(names.get(code, code), quantity) for code, quantity in change.addons.items()],
        "applies_on": subscription.current_term_end,
    }


# ----------------------------------------------------------------------------- scheduled change
@require_POST
@portal_view(**MANAGE)
def scheduled_change_cancel(request, public_id):
    if not _any_change_allowed(request.portal.preferences):
        raise Http404
    subscription = _subscription(request, public_id)
    try:
        subscription_scheduled_change_cancel(subscription=subscription, actor=request.user)
    except BillingError as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, "The scheduled change was cancelled. Nothing else changed.")
    return redirect(_back_url(request, subscription))


# ----------------------------------------------------------------------------- reactivate
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=PortalRole.ADMIN, preference="allow_reactivation")
def subscription_reactivate_view(request, public_id):
    if not request.portal.preferences.show_subscriptions:
        raise Http404
    subscription = _subscription(request, public_id)
    if request.method == "POST" and (replayed := _replayed(request, subscription)):
        return replayed
    return _confirm_or_show(request, Reactivation(request, subscription))


def _confirm_or_show(request, flow):
    """POST confirms (if the figures are still those shown); GET and refusals show the page."""
    if request.method == "POST" and flow.ready:
        if flow.form.cleaned_data.get("figures") != flow.figures.digest:
            flow.error = FIGURES_CHANGED
        elif done := flow.confirm():
            return done
    return flow.render()


class PaidFlow:
    """What reactivation and recovery share: the figures, the confirm form (with the card
    when an invoice is paid first), the page, and how a stop after a payment is reported."""

    template = ""
    partial = ""  # the template's partial an htmx request gets

    def __init__(self, request, subscription: Subscription, unpaid):
        self.request, self.subscription = request, subscription
        self.error = ""
        self.figures = Figures(invoices=unpaid, term_end=subscription.current_term_end)
        self.form, self.new_card_blocked = _payment_form(request, subscription, self.figures)

    @property
    def token(self) -> str:
        return self.form.cleaned_data.get("token", "") if self.form.is_bound else ""

    def stopped_after_payment(self, payment, reason: str):
        if payment is None:
            self.error = reason
            return None
        message = format_html(
            "Your payment went through (receipt {}), but the subscription could not be "
            "reactivated: {} Please contact us.",
            payment.receipt_number,
            reason,
        )
        return _finish(self.request, self.subscription, self.token, messages.WARNING, message)

    def render(self):
        context = {
            "subscription": self.subscription,
            "flow": self,
            "form": self.form,
            "figures": self.figures,
            "error": self.error,
            "links": _links(self.request.portal, self.subscription),
            "reauthenticate_url": _reauthenticate_url(self.request),
            "fresh_key": new_idempotency_key(),
            "fresh_token": new_idempotency_key("done"),
        }
        template = self.template
        htmx = self.request.htmx
        if (
            self.partial
            and htmx
            and not htmx.history_restore_request
            and self.request.method == "GET"
        ):
            template += f"#{self.partial}"
        response = render(self.request, template, context)
        patch_vary_headers(response, ["HX-Request"])
        return response


class Reactivation(PaidFlow):
    """In the term after dunning: same dates, no new invoice (the open one paid first when
    the merchant requires it). Otherwise a new term from today, optionally on another plan."""

    template = "portal/subscriptions/reactivate.html"
    partial = "reactivation"

    def __init__(self, request, subscription: Subscription):
        preferences = request.portal.preferences
        self.merchant_cancelled = merchant_cancelled(subscription)
        self.possible = subscription.status in REACTIVATABLE and not self.merchant_cancelled
        self.in_term = self.possible and reactivation_is_in_term(subscription, billing_today())
        self.require_payment = preferences.reactivation_requires_payment
        unpaid = _unpaid(subscription) if self.in_term else []
        super().__init__(request, subscription, unpaid if self.require_payment else [])
        self.unpaid_left = [] if self.require_payment else unpaid
        self.plan_form = None
        if self.possible and not self.in_term and preferences.allow_plan_change:
            options = change_options(preferences, subscription, plans_only=True)
            if options.plan_choice:
                source = request.POST if request.method == "POST" else request.GET
                self.plan_form = ReactivationPlanForm(
                    source if source.get("plan") else None, options=options
                )
        # A new term's charges cost the service's dry run (and another plan a rolled-back
        # rehearsal): the bare page loads them on demand (htmx on load, or a button).
        self.deferred = (
            self.possible
            and not self.in_term
            and request.method == "GET"
            and not (request.GET.get("preview") or request.GET.get("plan"))
        )
        self.previewed = self.possible and not self.deferred and self._preview()
        self.ready = self.previewed and request.method == "POST" and self.form.is_valid()

    def _preview(self) -> bool:
        """The figures from the services' dry runs; False when a service refuses."""
        require_payment = self.require_payment and not self.figures.invoices
        try:
            if self.in_term:
                # Nothing is charged for reactivating within the term (the open invoice's
                # balance is the money here). Before any payment, the confirmation asks the
                # service whether the reactivation would go through.
                if self.request.method == "POST":
                    subscription_reactivate(
                        subscription=self.subscription,
                        require_payment=require_payment,
                        dry_run=True,
                    )
                return True
            if _term_invoiced_today(self.subscription):
                raise InvalidTransition(RESTART_SAME_DAY)
            self.figures.reactivation = subscription_reactivate(
                subscription=self.subscription, require_payment=require_payment, dry_run=True
            ).summary
            plan = self._plan()
            if plan is not None:
                change = ChangeRequest(plan=plan)
                upgrade = change_is_upgrade(subscription=self.subscription, request=change)
                _refuse_direction(self.request.portal.preferences, "plan", change, upgrade=upgrade)
                self.figures.change = _change_after_reactivation(self.subscription, change)
                self.figures.plan_code = plan.code
        except BillingError as refused:
            if refused.field == "plan" and self.plan_form is not None:
                self.plan_form.add_error("plan", refused.message)
            else:
                self.error = refused.message
            return False
        return True

    def _plan(self):
        if self.plan_form is None or not self.plan_form.is_bound:
            return None
        if not self.plan_form.is_valid():
            raise ValidationFailed(self.plan_form.errors["plan"][0], field="plan")
        return self.plan_form.chosen

    @property
    def plan(self):
        return self.plan_form.chosen if self.plan_form is not None else None

    def confirm(self):
        """Pay what must be paid first, reactivate, then move to the chosen plan."""
        request, subscription = self.request, self.subscription
        payment = one_off = None
        if self.figures.invoices:
            payment, one_off, problem = _pay(
                request, subscription, self.form, self.figures.invoices
            )
            if problem:
                self.error = problem
                return None
        try:
            outcome = subscription_reactivate(
                subscription=subscription, require_payment=self.require_payment, actor=request.user
            )
        except BillingError as refused:
            if not _reactivated_meanwhile(subscription):
                return self.stopped_after_payment(payment, refused.message)
            outcome = None  # another submit of this very form reactivated it
        except IntegrityError:  # the term was invoiced meanwhile (see _term_invoiced_today)
            return self.stopped_after_payment(payment, RESTART_SAME_DAY)
        changed, change_error, plan = None, "", self.plan if outcome is not None else None
        if plan is not None:
            try:
                changed = subscription_change(
                    subscription=subscription,
                    request=ChangeRequest(plan=plan),
                    timing=ChangeTiming.NOW,
                    actor=request.user,
                )
            except BillingError as refused:
                # Only when the reactivation's own charge failed (the subscription is past
                # due) or something changed in between: reported, the reactivation stands.
                change_error = refused.message
        card = _card_after_success(request, subscription, self.form, payment, one_off)
        level, message = _reactivation_message(
            request.portal,
            subscription,
            outcome,
            (plan, changed, change_error),
            payment,
            card,
            self.unpaid_left,
        )
        return _finish(request, subscription, self.token, level, message)


def _reactivated_meanwhile(subscription) -> bool:
    subscription.refresh_from_db(fields=["status"])
    return subscription.status not in REACTIVATABLE


def _term_invoiced_today(subscription) -> bool:
    """A new term from today would collide with the term invoice issued today already (the
    subscription was started, renewed or reactivated today, then cancelled): the service's
    dry run does not see it, and the real run would fail on the one-invoice-per-period rule."""
    return Invoice.objects.filter(
        subscription=subscription, period_start=billing_today(), kind=InvoiceKind.RECURRING
    ).exists()


def _change_after_reactivation(subscription, change: ChangeRequest) -> ChargesSummary:
    """The plan change's dry run as it will be right after the reactivation (module docstring).

    Everything here happens in one transaction that is always rolled back: automatic charging
    off (so the reactivation's invoice is not charged), the reactivation itself, then the
    change's dry run on the live subscription. Emails are queued on commit, so none is sent.
    """

    class RolledBack(Exception):
        pass

    summary = None
    try:
        with transaction.atomic():
            if subscription.auto_charge:
                subscription_set_auto_charge(subscription=subscription, enabled=False)
            subscription_reactivate(subscription=subscription, require_payment=False)
            summary = subscription_change(
                subscription=subscription,
                request=change,
                timing=ChangeTiming.NOW,
                dry_run=True,
            ).summary
            raise RolledBack
    except RolledBack:
        pass
    return summary


# ----------------------------------------------------------------------------- recover
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=PortalRole.PAYER, preference="allow_payments")
def subscription_recover(request, public_id):
    subscription = _subscription(request, public_id)
    if request.method == "POST" and (replayed := _replayed(request, subscription)):
        return replayed
    return _confirm_or_show(request, Recovery(request, subscription))


class Recovery(PaidFlow):
    """After a failed payment, in one step: a working card, the open invoice paid now and —
    when dunning cancelled the subscription within its term — the subscription reactivated."""

    template = "portal/subscriptions/recover.html"

    def __init__(self, request, subscription: Subscription):
        portal = request.portal
        rows = _unpaid(subscription)
        self.in_flight = any(invoice.in_flight for invoice, _balance in rows)
        super().__init__(request, subscription, [] if self.in_flight else rows)
        self.cancelled_in_term = reactivation_is_in_term(subscription, billing_today())
        # Reactivating is managing the subscription: an admin's right, when switched on.
        self.may_reactivate = (
            portal.can_manage
            and portal.preferences.allow_reactivation
            and portal.preferences.show_subscriptions
        )
        self.reactivate = self.cancelled_in_term and self.may_reactivate
        self.nothing_to_do = not rows and not self.reactivate
        self.previewed = not self.nothing_to_do and not self.in_flight and self._preview()
        self.ready = self.previewed and request.method == "POST" and self.form.is_valid()

    def _preview(self) -> bool:
        """The money is the open invoices' balances; reactivating within the term charges
        nothing. Before any payment, the confirmation asks the service whether the
        reactivation would go through."""
        if self.reactivate and self.request.method == "POST":
            try:
                subscription_reactivate(
                    subscription=self.subscription, require_payment=False, dry_run=True
                )
            except BillingError as refused:
                self.error = refused.message
                return False
        return True

    def confirm(self):
        request, subscription = self.request, self.subscription
        payment = one_off = None
        if self.figures.invoices:
            payment, one_off, problem = _pay(
                request, subscription, self.form, self.figures.invoices
            )
            if problem:
                self.error = problem
                return None
        reactivated = None
        if self.reactivate:
            try:
                reactivated = subscription_reactivate(
                    subscription=subscription, require_payment=True, actor=request.user
                )
            except BillingError as refused:
                if not _reactivated_meanwhile(subscription):
                    return self.stopped_after_payment(payment, refused.message)
        card = _card_after_success(request, subscription, self.form, payment, one_off)
        level, message = _recovery_message(subscription, reactivated, payment, card)
        return _finish(request, subscription, self.token, level, message)


# ----------------------------------------------------------------------------- paying
def _unpaid(subscription) -> list[tuple[Invoice, object]]:
    """The subscription's invoices still to be paid, oldest first, with their balances (each
    marked ``in_flight`` when a card payment of it is still being confirmed). One query."""
    rows = selectors.open_invoices([subscription.customer]).filter(subscription=subscription)
    rows = rows.annotate(
        in_flight=Exists(InvoicePaymentLock.objects.filter(invoice=OuterRef("pk")))
    )
    return [(invoice, invoice.balance_due) for invoice in rows]


def _payment_form(request, subscription, figures: Figures):
    """The bound or fresh confirm form. A new card becomes the subscription's card, so, as
    every card change, it needs a recent sign-in confirmation (the blocked flag says so)."""
    portal = request.portal
    cards_allowed = portal.preferences.allow_payment_method_changes and portal.can_pay
    new_card = cards_allowed and recently_authenticated(request)
    cards = (
        list(PaymentMethod.objects.filter(customer=subscription.customer))
        if figures.invoices
        else []
    )
    form = ReactivateForm(
        request.POST if request.method == "POST" else None,
        cards=cards,
        charge_needed=bool(figures.invoices),
        new_card_allowed=new_card,
    )
    return form, cards_allowed and not new_card


def _pay(request, subscription, form, invoices):
    """Charge the chosen card once for the invoices. Returns (payment, new card, problem).

    A new card is tokenized for this charge only and removed again afterwards; once
    everything succeeded the caller saves it for good (default card, pays the subscriptions),
    so a declined card never becomes anyone's card and nothing else changes.
    """
    customer = subscription.customer
    key = form.cleaned_data["idempotency_key"]
    earlier = Payment.objects.filter(idempotency_key=key, customer=customer).first()
    if earlier is not None:  # this form was submitted before: never charge twice
        if earlier.status in IN_FLIGHT:
            earlier = payment_reconcile(payment=earlier, actor=request.user)
        return _payment_result(earlier, None)
    one_off = None
    method = form.saved_card
    try:
        if form.wants_new_card:
            try:
                one_off = method = payment_method_add(
                    customer=customer, **form.card_details(), actor=request.user
                )
            except BillingError as refused:
                form.add_gateway_error(refused)
                return None, None, "Check the card details."
        try:
            payment = payment_collect(
                payer=customer,
                invoices=[invoice for invoice, _amount in invoices],
                method=method,
                idempotency_key=key,
                actor=request.user,
            )
        except BillingError as refused:
            return None, None, refused.message
    finally:
        if one_off is not None:
            # One whose charge is still being confirmed must stay; the service refuses then.
            with contextlib.suppress(BillingError):
                payment_method_remove(method=one_off, actor=request.user)
    return _payment_result(payment, one_off)


def _payment_result(payment: Payment, one_off):
    if payment.status == PaymentStatus.FAILED:
        return payment, one_off, payment.failure_message or "The payment did not go through."
    if payment.status in IN_FLIGHT:
        return (
            payment,
            one_off,
            "We are still confirming your payment with the card provider. Please come back to "
            "this page in a few minutes; do not pay again meanwhile.",
        )
    return payment, one_off, ""


def _card_after_success(request, subscription, form, payment, one_off) -> PaymentMethod | None:
    """The card that just paid becomes the subscription's card. A new card is saved now (the
    sandbox form still holds the number), as default and for the customer's subscriptions."""
    if payment is None or payment.status != PaymentStatus.SUCCEEDED:
        return None
    if one_off is not None:
        if payment.method_id != one_off.pk:
            return None  # another submit of this form made the payment
        try:
            return payment_method_add(
                customer=subscription.customer,
                **form.card_details(),
                make_default=True,
                use_for_subscriptions=True,
                actor=request.user,
            )
        except BillingError as refused:
            messages.warning(request, f"The card was not saved: {refused.message}")
            return None
    card = form.saved_card
    subscription.refresh_from_db(fields=["auto_charge", "payment_method", "status"])
    if card is not None and subscription.auto_charge and subscription.payment_method_id != card.pk:
        with contextlib.suppress(BillingError):
            subscription_set_auto_charge(
                subscription=subscription, enabled=True, method=card, actor=request.user
            )
    return card


# ----------------------------------------------------------------------------- results
def _finish(request, subscription, token, level, message):
    """Show the result once, remember it for a repeated submit, and leave the form."""
    if token:
        done = request.session.get(CONFIRMED_SESSION_KEY, {})
        done[token] = [level, str(message)]
        request.session[CONFIRMED_SESSION_KEY] = dict(list(done.items())[-CONFIRMED_KEPT:])
    messages.add_message(request, level, message)
    return redirect(_back_url(request, subscription))


def _replayed(request, subscription):
    """A confirm form submitted again (double click, reload): its first result, done once."""
    token = request.POST.get("token", "")
    earlier = request.session.get(CONFIRMED_SESSION_KEY, {}).get(token) if token else None
    if earlier is None:
        return None
    level, message = earlier
    # Our own message, built with format_html when it was first shown.
    messages.add_message(request, level, mark_safe(message))  # noqa: S308
    return redirect(_back_url(request, subscription))


def _money(amount) -> str:
    return format_money(amount, Organization.load().base_currency)


def _invoice_ref(portal, invoice):
    url = (
        _url("portal:invoice_detail", invoice.public_id) if portal.preferences.show_invoices else ""
    )
    if url:
        return format_html('<a href="{}">{}</a>', url, invoice.number)
    return invoice.number


def _invoice_sentence(portal, invoice, payment) -> tuple[int, str]:
    invoice.refresh_from_db(fields=["status"])
    ref, total = _invoice_ref(portal, invoice), _money(invoice.total)
    if payment is not None and payment.status == PaymentStatus.SUCCEEDED:
        return messages.SUCCESS, format_html(
            "Invoice {} for {}: {} was charged to {} (receipt {}).",
            ref,
            total,
            _money(payment.amount),
            payment.method_label,
            payment.receipt_number,
        )
    if payment is not None and payment.status == PaymentStatus.FAILED:
        return messages.WARNING, format_html(
            "Invoice {} for {} could not be charged: {} Please pay it or update your card.",
            ref,
            total,
            payment.failure_message or "the card was declined.",
        )
    if payment is not None:
        return messages.INFO, format_html(
            "We are still confirming the payment of invoice {} for {}.", ref, total
        )
    if invoice.status == InvoiceStatus.PAID:
        return messages.SUCCESS, format_html(
            "Invoice {} for {} was paid with your account credit.", ref, total
        )
    _paid, credited, balance = selectors.invoice_balance(invoice)
    if credited > 0:
        return messages.SUCCESS, format_html(
            "Invoice {} for {} is due: {} after your account credit of {}.",
            ref,
            total,
            _money(balance),
            _money(credited),
        )
    return messages.SUCCESS, format_html("Invoice {} for {} is due.", ref, total)


def _credit_sentence(note) -> str:
    return format_html(
        "Credit note {} for {} was added to your account; it pays your next invoices.",
        note.number,
        _money(note.amount),
    )


def _change_message(portal, outcome: Outcome, timing: str) -> tuple[int, str]:
    sub = outcome.subscription
    if sub.status == S.IN_TRIAL:
        return messages.SUCCESS, format_html(
            "Your trial now continues on {} × {}. Nothing was charged.", sub.plan.name, sub.quantity
        )
    if timing == ChangeTiming.TERM_END:
        return messages.SUCCESS, format_html(
            "Your change is scheduled for {}. Nothing was charged now.",
            f"{sub.current_term_end:%b %-d, %Y}",
        )
    level, parts = (
        messages.SUCCESS,
        [format_html("Your subscription is now {} × {}.", sub.plan.name, sub.quantity)],
    )
    if outcome.invoice is not None:
        level, sentence = _invoice_sentence(portal, outcome.invoice, outcome.payment)
        parts.append(sentence)
    if outcome.credit_note is not None:
        parts.append(_credit_sentence(outcome.credit_note))
    if outcome.invoice is None and outcome.credit_note is None:
        parts.append("Nothing was charged.")
    return level, format_html_join(" ", "{}", ((part,) for part in parts))


def _reactivation_message(portal, subscription, outcome, change, payment, card, unpaid_left):
    """What happened, in order: the payment, the reactivation and its invoice, the plan change."""
    plan, changed, change_error = change
    subscription.refresh_from_db()
    level, parts = messages.SUCCESS, []
    if payment is not None:
        parts.append(
            format_html(
                "Payment of {} received (receipt {}).",
                _money(payment.amount),
                payment.receipt_number,
            )
        )
    parts.append(
        format_html(
            "Your {} subscription is active again; your next billing date is {}.",
            subscription.plan.name,
            f"{subscription.current_term_end:%b %-d, %Y}",
        )
    )
    if outcome is not None and outcome.invoice is not None:
        level, sentence = _invoice_sentence(portal, outcome.invoice, outcome.payment)
        parts.append(sentence)
    if changed is not None:
        if changed.invoice is not None:
            change_level, sentence = _invoice_sentence(portal, changed.invoice, changed.payment)
            level = max(level, change_level)
            parts.append(sentence)
        if changed.credit_note is not None:
            parts.append(_credit_sentence(changed.credit_note))
    elif plan is not None:
        level = messages.WARNING
        reason = (
            "pay the open invoice first, then change the plan."
            if subscription.status != S.LIVE
            else change_error
        )
        parts.append(format_html("It was not moved to {}: {}", plan.name, reason))
    for invoice, balance in unpaid_left:
        parts.append(
            format_html(
                "Invoice {} ({} left to pay) is still due.",
                _invoice_ref(portal, invoice),
                _money(balance),
            )
        )
    if card is not None:
        parts.append(format_html("{} now pays this subscription.", str(card)))
    return level, format_html_join(" ", "{}", ((part,) for part in parts))


def _recovery_message(subscription, outcome, payment, card):
    subscription.refresh_from_db()
    parts = []
    if payment is not None:
        parts.append(
            format_html(
                "Thank you. Payment of {} received (receipt {}).",
                _money(payment.amount),
                payment.receipt_number,
            )
        )
    if subscription.status == S.LIVE:
        parts.append(
            format_html(
                "Your {} subscription is active{}; your next billing date is {}.",
                subscription.plan.name,
                " again" if outcome is not None else "",
                f"{subscription.current_term_end:%b %-d, %Y}",
            )
        )
    if card is not None:
        parts.append(format_html("{} now pays this subscription.", str(card)))
    return messages.SUCCESS, format_html_join(" ", "{}", ((part,) for part in parts))


# ----------------------------------------------------------------------------- helpers
def _subscription(request, public_id) -> Subscription:
    """The customer's subscription with what every page here reads, or 404."""
    return request.portal.get(
        Subscription.objects.select_related(
            "plan__product",
            "customer__group__price_list",
            "payment_method",
            "scheduled_change__plan",
            "scheduled_change__coupon",
        ),
        public_id,
    )


def _any_change_allowed(preferences) -> bool:
    return any(getattr(preferences, name) for name in CHANGE_PREFERENCES)


def _confirming(request) -> bool:
    """A real confirm: the confirm button, never a live (htmx) or button preview."""
    return (
        request.method == "POST"
        and request.POST.get("action") == "confirm"
        and not request.POST.get("preview")
    )


def _url(name: str, *args) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _links(portal, subscription) -> dict:
    """Where these pages may link (another area's page only if it exists), and the actions
    available to this contact on this subscription."""
    prefs = portal.preferences
    public_id = subscription.public_id
    shown = prefs.show_subscriptions
    return {
        "list": _url("portal:subscriptions") if shown else "",
        "detail": _url("portal:subscription_detail", public_id) if shown else "",
        "change": _url("portal:subscription_change", public_id)
        if portal.can_manage and _any_change_allowed(prefs) and prefs.show_subscriptions
        else "",
        "reactivate": _url("portal:subscription_reactivate", public_id)
        if portal.can_manage and prefs.allow_reactivation and prefs.show_subscriptions
        else "",
        "recover": _url("portal:subscription_recover", public_id)
        if portal.can_pay and prefs.allow_payments
        else "",
    }


def _back_url(request, subscription) -> str:
    """A safe ``next`` from the form, else the subscription's page, else the page we are on."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    detail = ""
    if request.portal.preferences.show_subscriptions:
        detail = _url("portal:subscription_detail", subscription.public_id)
    return detail or request.path


def _reauthenticate_url(request) -> str:
    return f"{reverse('accounts_reauthenticate')}?" + urlencode({"next": request.path})
