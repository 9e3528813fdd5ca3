"""The billing actions staff take on one subscription, invoice, customer or payment.

Each is an ``ObjectAction`` (see ``object_actions``): its form's defaults come from the object
and the portal preferences, its figures from the service's dry run (or, where a service has
none, from the same selectors the service reads), and confirming calls the service with
``request.user`` as the actor. The admin modules list them in ``object_actions``.
"""

import datetime
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import Q, Sum

from billing.admin.forms import (
    CreditNoteForm,
    InvoiceVoidForm,
    OfflinePaymentForm,
    OneTimeChargeForm,
    RefundForm,
    SubscriptionCancelForm,
    SubscriptionChangeForm,
    SubscriptionPauseForm,
    SubscriptionReactivateForm,
)
from billing.admin.object_actions import ActionResult, Figure, ObjectAction, Preview
from billing.clock import billing_today
from billing.enums import (
    CancelReason,
    ChangeTiming,
    CreditNoteReason,
    CreditNoteStatus,
    InvoiceStatus,
    PaymentMode,
    PaymentStatus,
    RefundStatus,
    SubscriptionStatus,
)
from billing.errors import InvalidTransition, ValidationFailed
from billing.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoicePaymentLock,
    Organization,
    Payment,
    PaymentMethod,
    Plan,
    Subscription,
)
from billing.money import ZERO, format_money, round_money
from billing.pricing import Totals
from billing.selectors import (
    credit_notes_with_remaining,
    customer_credit_balance,
    invoice_balance,
    open_invoices,
    payments_with_unapplied,
)
from billing.services.credits import (
    credit_note_issue,
    credits_apply_to_invoice,
    credits_apply_to_open_invoices,
)
from billing.services.invoices import (
    invoice_create_one_time,
    invoice_mark_uncollectible,
    invoice_void,
    one_time_charges,
)
from billing.services.payments import (
    PaymentQuote,
    payment_collect,
    payment_quote,
    payment_record_offline,
    payment_refund,
)
from billing.services.subscriptions import (
    ChangeRequest,
    ChargesSummary,
    Outcome,
    subscription_cancel,
    subscription_cancel_undo,
    subscription_change,
    subscription_extend_trial,
    subscription_pause,
    subscription_reactivate,
    subscription_resume,
)
from portal.models import PortalPreferences

S = SubscriptionStatus
UNPAID_INVOICE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
NOTHING_MOVES = "Nothing is charged or credited."


# ----------------------------------------------------------------------------- display
def _date(day: datetime.date | None) -> str:
    return day.isoformat() if day else "-"


def _quantity(value: Decimal | int) -> str:
    return f"{Decimal(value).normalize():f}"


def _unit_price(value: Decimal, currency: str) -> str:
    # Unit prices keep four places (metered usage); show them when they are not whole cents.
    if value == round_money(value, currency):
        return format_money(value, currency)
    return f"{currency} {value.normalize():,f}"


def _base_currency() -> str:
    return Organization.load().base_currency


def _invoice_rows(charges: Totals) -> tuple[tuple[str, ...], ...]:
    return tuple(
        (
            line.description,
            _quantity(line.quantity),
            _unit_price(line.unit_price, charges.currency),
            format_money(line.amount, charges.currency),
        )
        for line in charges.lines
    )


def _totals_figures(charges: Totals, credit_applied: Decimal) -> list[Figure]:
    money = charges.currency
    figures = [Figure("subtotal", "Subtotal", format_money(charges.subtotal, money))]
    if charges.discount_total:
        figures.append(Figure("discount", "Discount", format_money(-charges.discount_total, money)))
    if charges.tax_total:
        figures.append(
            Figure(
                "tax",
                f"Tax ({_quantity(charges.tax_rate)} %)",
                format_money(charges.tax_total, money),
            )
        )
    figures += [
        Figure("invoice_total", "Invoice total", format_money(charges.total, money)),
        Figure("credit_applied", "Customer credit applied", format_money(credit_applied, money)),
        Figure("due_now", "Due now", format_money(charges.total - credit_applied, money)),
    ]
    return figures


INVOICE_COLUMNS = ("Description", "Quantity", "Unit price", "Amount")


def summary_preview(summary: ChargesSummary) -> Preview:
    """A subscription service's ``ChargesSummary`` as the confirmation page shows it."""
    currency = summary.invoice.currency if summary.invoice else _base_currency()
    figures: list[Figure] = []
    rows: tuple[tuple[str, ...], ...] = ()
    if summary.invoice is not None:
        rows = _invoice_rows(summary.invoice)
        figures += _totals_figures(summary.invoice, summary.credit_applied)
    if summary.credit:
        figures.append(
            Figure("credit", "Credit note issued now", format_money(summary.credit, currency))
        )
    if summary.next_billing_date:
        figures.append(
            Figure("next_billing_date", "Next billing date", _date(summary.next_billing_date))
        )
    if summary.next_amount is not None:
        figures.append(
            Figure(
                "next_amount", "Next invoice amount", format_money(summary.next_amount, currency)
            )
        )
    notes = summary.notes or (() if figures else (NOTHING_MOVES,))
    return Preview(
        columns=INVOICE_COLUMNS if rows else (), rows=rows, figures=tuple(figures), notes=notes
    )


def quote_preview(quote: PaymentQuote, method: PaymentMethod) -> Preview:
    """What a card charge takes: each invoice's balance, and their sum."""
    return Preview(
        title="Payment",
        columns=("Invoice", "Due date", "Charged"),
        rows=tuple(
            (invoice.number, _date(invoice.due_date), format_money(amount, quote.currency))
            for invoice, amount in quote.invoices
        ),
        figures=(
            Figure("card", "Card", str(method)),
            Figure("charge_total", "Charged now", format_money(quote.total, quote.currency)),
        ),
    )


def payment_result(payment: Payment, headline: str = "") -> ActionResult:
    """The message for a card payment, whatever its outcome (a decline is not an exception)."""
    money = format_money(payment.amount, payment.currency)
    prefix = f"{headline} " if headline else ""
    if payment.status == PaymentStatus.SUCCEEDED:
        invoices = ", ".join(
            a.invoice.number for a in payment.allocations.select_related("invoice").order_by("pk")
        )
        return ActionResult(
            f"{prefix}Payment of {money} succeeded: receipt {payment.receipt_number}"
            + (f" (invoices {invoices})." if invoices else ".")
        )
    if payment.status == PaymentStatus.FAILED:
        reason = payment.failure_message or payment.failure_code or "no reason given"
        return ActionResult(f"{prefix}The payment of {money} failed: {reason}", messages.ERROR)
    return ActionResult(
        f"{prefix}The gateway has not confirmed the payment of {money} yet; it will be "
        "reconciled, never charged twice.",
        messages.WARNING,
    )


def outcome_result(headline: str, outcome: Outcome) -> ActionResult:
    """Name what a subscription service created: invoice, credit note, payment."""
    parts = [headline]
    if outcome.invoice is not None:
        invoice = Invoice.objects.get(pk=outcome.invoice.pk)
        parts.append(
            f"Invoice {invoice.number} issued for {format_money(invoice.total, invoice.currency)}"
            + (" (paid)" if invoice.status == InvoiceStatus.PAID else "")
        )
    if outcome.credit_note is not None:
        note = outcome.credit_note
        parts.append(
            f"Credit note {note.number} issued for {format_money(note.amount, note.currency)}"
        )
    message = ". ".join(parts) + "."
    if outcome.payment is None:
        return ActionResult(message)
    return payment_result(outcome.payment, headline=message)


# ----------------------------------------------------------------------------- subscriptions
SUBSCRIPTION_PERMISSIONS = ("billing.change_subscription",)
# Actions that may invoice and charge the subscription's card.
SUBSCRIPTION_CHARGE_PERMISSIONS = ("billing.change_subscription", "billing.add_payment")


class SubscriptionAction(ObjectAction):
    permissions = SUBSCRIPTION_PERMISSIONS

    def facts(self, sub: Subscription) -> list[tuple[str, object]]:
        facts: list[tuple[str, object]] = [
            ("Customer", sub.customer),
            ("Plan", f"{sub.plan.name} × {sub.quantity}"),
            ("Status", sub.get_status_display()),
        ]
        if sub.status == S.IN_TRIAL or sub.trial_end:
            facts.append(("Trial ends", _date(sub.trial_end)))
        facts += [
            ("Current term", f"{_date(sub.current_term_start)} to {_date(sub.current_term_end)}"),
            ("Card", sub.payment_method or "none"),
            ("Auto-charge", "on" if sub.auto_charge else "off"),
        ]
        if sub.cancel_at:
            facts.append(("Cancellation scheduled for", _date(sub.cancel_at)))
        return facts


class SubscriptionCancel(SubscriptionAction):
    slug = "cancel"
    label = "Cancel"
    title = "Cancel the subscription"
    intro = (
        "Cancel now, or at the end of the current term (non-renewing until then, and undoable). "
        "The checkboxes start from the portal preferences."
    )
    form_class = SubscriptionCancelForm
    submit_label = "Cancel the subscription"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status != S.CANCELLED

    def initial(self, request, sub: Subscription) -> dict[str, Any]:
        preferences = PortalPreferences.load()
        has_term_end = sub.status == S.IN_TRIAL or (
            sub.status == S.LIVE and sub.current_term_end is not None
        )
        return {
            "timing": ChangeTiming.TERM_END if has_term_end else ChangeTiming.NOW,
            "reason": CancelReason.MERCHANT,
            "reason_text": "",
            "credit_unused": preferences.credit_on_cancel_now,
            "void_unpaid": preferences.void_unpaid_on_cancel,
        }

    def _cancel(
        self, request, sub: Subscription, data: dict[str, Any], *, dry_run: bool
    ) -> Outcome:
        return subscription_cancel(
            subscription=sub,
            timing=data["timing"],
            reason=data["reason"],
            reason_text=data.get("reason_text", ""),
            credit_unused=bool(data.get("credit_unused")),
            void_unpaid=bool(data.get("void_unpaid")),
            actor=request.user,
            dry_run=dry_run,
        )

    def preview(self, request, sub, data):
        return summary_preview(self._cancel(request, sub, data, dry_run=True).summary)

    def perform(self, request, sub, data):
        outcome = self._cancel(request, sub, data, dry_run=False)
        cancelled = outcome.subscription
        if cancelled.status == S.CANCELLED:
            headline = "Subscription cancelled"
        else:
            headline = f"Cancellation scheduled for {_date(cancelled.cancel_at)}"
        return outcome_result(headline, outcome)


class SubscriptionUndoCancel(SubscriptionAction):
    slug = "undo-cancellation"
    label = "Undo scheduled cancellation"
    intro = "Remove the scheduled cancellation: the subscription renews as usual."
    submit_label = "Undo the cancellation"

    def is_available(self, sub: Subscription) -> bool:
        return sub.cancel_at is not None and sub.status in (S.NON_RENEWING, S.IN_TRIAL)

    def perform(self, request, sub, data):
        sub = subscription_cancel_undo(subscription=sub, actor=request.user)
        if sub.status == S.IN_TRIAL:
            return ActionResult(
                f"Scheduled cancellation removed; the trial continues until {_date(sub.trial_end)}."
            )
        return ActionResult(
            f"Scheduled cancellation removed; the subscription renews on {_date(sub.current_term_end)}."
        )


class SubscriptionReactivate(SubscriptionAction):
    slug = "reactivate"
    label = "Reactivate"
    title = "Reactivate the subscription"
    intro = (
        "Within the term after a dunning cancellation: back to live with the same dates. "
        "Otherwise a new term starts today, invoiced and charged to the subscription's card."
    )
    permissions = SUBSCRIPTION_CHARGE_PERMISSIONS
    form_class = SubscriptionReactivateForm
    submit_label = "Reactivate"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status in (S.CANCELLED, S.EXPIRED)

    def initial(self, request, sub):
        return {"require_payment": PortalPreferences.load().reactivation_requires_payment}

    def _reactivate(self, request, sub, data, *, dry_run: bool) -> Outcome:
        return subscription_reactivate(
            subscription=sub,
            require_payment=bool(data.get("require_payment")),
            actor=request.user,
            dry_run=dry_run,
        )

    def preview(self, request, sub, data):
        return summary_preview(self._reactivate(request, sub, data, dry_run=True).summary)

    def perform(self, request, sub, data):
        return outcome_result(
            "Subscription reactivated", self._reactivate(request, sub, data, dry_run=False)
        )


class SubscriptionPause(SubscriptionAction):
    slug = "pause"
    label = "Pause now"
    title = "Pause the subscription now"
    intro = "No invoices are issued while paused; a change scheduled for the term end is dropped."
    form_class = SubscriptionPauseForm
    submit_label = "Pause now"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status == S.LIVE

    def initial(self, request, sub):
        return {"credit_unused": PortalPreferences.load().credit_unused_pause_time}

    def _pause(self, request, sub, data, *, dry_run: bool) -> Outcome:
        return subscription_pause(
            subscription=sub,
            credit_unused=bool(data.get("credit_unused")),
            actor=request.user,
            dry_run=dry_run,
        )

    def preview(self, request, sub, data):
        return summary_preview(self._pause(request, sub, data, dry_run=True).summary)

    def perform(self, request, sub, data):
        return outcome_result("Subscription paused", self._pause(request, sub, data, dry_run=False))


class SubscriptionResume(SubscriptionAction):
    slug = "resume"
    label = "Resume now"
    title = "Resume the subscription now"
    intro = (
        "Before the billing date nothing is charged. After it, a new term starts today, "
        "invoiced and charged to the subscription's card."
    )
    permissions = SUBSCRIPTION_CHARGE_PERMISSIONS
    submit_label = "Resume now"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status == S.PAUSED

    def preview(self, request, sub, data):
        outcome = subscription_resume(subscription=sub, actor=request.user, dry_run=True)
        return summary_preview(outcome.summary)

    def perform(self, request, sub, data):
        outcome = subscription_resume(subscription=sub, actor=request.user)
        return outcome_result("Subscription resumed", outcome)


class SubscriptionExtendTrial(SubscriptionAction):
    slug = "extend-trial"
    label = "Extend trial"
    title = "Extend the expired trial"
    intro = (
        "Another trial of the plan's length, from today. The number of extensions per "
        "subscription is limited by the portal preferences."
    )
    submit_label = "Extend the trial"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status == S.EXPIRED and sub.cancel_reason == CancelReason.TRIAL_ENDED

    def facts(self, sub):
        limit = PortalPreferences.load().trial_extension_limit
        return [*super().facts(sub), ("Extensions used", f"{sub.trial_extensions_used} of {limit}")]

    def perform(self, request, sub, data):
        limit = PortalPreferences.load().trial_extension_limit
        sub = subscription_extend_trial(subscription=sub, limit=limit, actor=request.user)
        return ActionResult(f"Trial extended to {_date(sub.trial_end)}.")


def subscription_unpaid_invoices(sub: Subscription) -> list[Invoice]:
    return list(open_invoices([sub.customer]).filter(subscription=sub))


class SubscriptionChargeNow(SubscriptionAction):
    slug = "charge"
    label = "Charge now"
    title = "Charge the open invoices now"
    intro = "Charge the subscription's unpaid invoices to its saved card, in one payment."
    permissions = SUBSCRIPTION_CHARGE_PERMISSIONS
    submit_label = "Charge the card"
    charges_card = True

    def is_available(self, sub: Subscription) -> bool:
        return open_invoices([sub.customer]).filter(subscription=sub).exists()

    def _card_and_invoices(self, sub: Subscription) -> tuple[PaymentMethod, list[Invoice]]:
        if sub.payment_method is None:
            raise ValidationFailed(
                "This subscription has no saved card. Record an offline payment instead, "
                "or charge an invoice with the customer's default card."
            )
        invoices = subscription_unpaid_invoices(sub)
        if not invoices:
            raise InvalidTransition("This subscription has no unpaid invoices.")
        return sub.payment_method, invoices

    def preview(self, request, sub, data):
        method, invoices = self._card_and_invoices(sub)
        return quote_preview(payment_quote(payer=sub.customer, invoices=invoices), method)

    def perform(self, request, sub, data):
        method, invoices = self._card_and_invoices(sub)
        payment = payment_collect(
            payer=sub.customer,
            invoices=invoices,
            method=method,
            idempotency_key=data["idempotency_key"],
            actor=request.user,
        )
        return payment_result(payment)


class SubscriptionChange(SubscriptionAction):
    slug = "change-plan"
    label = "Change plan or quantity"
    title = "Change the plan or quantity"
    intro = (
        "Now: prorated over the rest of the term (an upgrade is invoiced and charged, a "
        "downgrade credited). At the term end: scheduled, nothing is charged now. Choose, then "
        "“Update figures” to see the charges."
    )
    permissions = SUBSCRIPTION_CHARGE_PERMISSIONS
    form_class = SubscriptionChangeForm
    submit_label = "Apply the change"

    def is_available(self, sub: Subscription) -> bool:
        return sub.status in (S.LIVE, S.NON_RENEWING, S.IN_TRIAL)

    def form_kwargs(self, sub):
        plans = Plan.objects.filter(Q(active=True) | Q(pk=sub.plan_id)).order_by(
            "position", "price", "code"
        )
        return {"plans": plans}

    def initial(self, request, sub):
        return {"plan": sub.plan, "quantity": sub.quantity, "timing": ChangeTiming.NOW}

    def _change(self, request, sub, data, *, dry_run: bool) -> Outcome:
        return subscription_change(
            subscription=sub,
            request=ChangeRequest(plan=data["plan"], quantity=data["quantity"]),
            timing=data["timing"],
            actor=request.user,
            dry_run=dry_run,
        )

    def preview(self, request, sub, data):
        if data["plan"] == sub.plan and data["quantity"] == sub.quantity:
            return None  # nothing chosen yet; confirming anyway gets the service's refusal
        return summary_preview(self._change(request, sub, data, dry_run=True).summary)

    def perform(self, request, sub, data):
        outcome = self._change(request, sub, data, dry_run=False)
        if data["timing"] == ChangeTiming.TERM_END and sub.status != S.IN_TRIAL:
            headline = f"Change scheduled for {_date(outcome.summary.next_billing_date)}"
        else:
            headline = "Subscription changed"
        return outcome_result(headline, outcome)


SUBSCRIPTION_ACTIONS: tuple[ObjectAction, ...] = (
    SubscriptionChargeNow(),
    SubscriptionChange(),
    SubscriptionPause(),
    SubscriptionResume(),
    SubscriptionCancel(),
    SubscriptionUndoCancel(),
    SubscriptionReactivate(),
    SubscriptionExtendTrial(),
)


# ----------------------------------------------------------------------------- invoices
class InvoiceAction(ObjectAction):
    permissions = ("billing.change_invoice",)

    def facts(self, invoice: Invoice) -> list[tuple[str, object]]:
        paid, credited, balance = invoice_balance(invoice)
        money = invoice.currency
        return [
            ("Customer", invoice.customer),
            ("Status", invoice.get_status_display()),
            ("Due date", _date(invoice.due_date)),
            ("Total", format_money(invoice.total, money)),
            ("Paid", format_money(paid, money)),
            ("Credited", format_money(credited, money)),
            ("Balance due", format_money(balance, money)),
        ]


def _payment_in_flight(invoice: Invoice) -> bool:
    return InvoicePaymentLock.objects.filter(invoice=invoice).exists()


def _invoice_is_unpaid(invoice: Invoice) -> bool:
    return invoice.status in UNPAID_INVOICE_STATUSES and invoice_balance(invoice)[2] > 0


class InvoiceVoid(InvoiceAction):
    slug = "void"
    label = "Void"
    title = "Void the invoice"
    intro = (
        "A void invoice is no longer owed. What was already paid or credited on it becomes the "
        "customer's credit again. Corrections to a paid invoice are credit notes instead."
    )
    form_class = InvoiceVoidForm
    submit_label = "Void the invoice"

    def is_available(self, invoice: Invoice) -> bool:
        return invoice.status in UNPAID_INVOICE_STATUSES

    def preview(self, request, invoice, data):
        paid, credited, balance = invoice_balance(invoice)
        money = invoice.currency
        return Preview(
            title="What voiding does",
            figures=(
                Figure("balance_due", "No longer due", format_money(balance, money)),
                Figure(
                    "returned_credit",
                    "Paid or credited, back to the customer's credit",
                    format_money(paid + credited, money),
                ),
            ),
        )

    def perform(self, request, invoice, data):
        invoice = invoice_void(invoice=invoice, reason=data["reason"], actor=request.user)
        return ActionResult(f"Invoice {invoice.number} voided.")


class InvoiceMarkUncollectible(InvoiceAction):
    slug = "mark-uncollectible"
    label = "Mark uncollectible"
    title = "Mark the invoice uncollectible"
    intro = "Write the balance off; dunning stops. A payment received later still settles it."
    submit_label = "Mark uncollectible"

    def is_available(self, invoice: Invoice) -> bool:
        return invoice.status == InvoiceStatus.OPEN

    def preview(self, request, invoice, data):
        balance = invoice_balance(invoice)[2]
        return Preview(
            title="What is written off",
            figures=(
                Figure(
                    "balance_due", "Balance written off", format_money(balance, invoice.currency)
                ),
            ),
        )

    def perform(self, request, invoice, data):
        invoice = invoice_mark_uncollectible(invoice=invoice, actor=request.user)
        return ActionResult(f"Invoice {invoice.number} marked uncollectible.")


class InvoiceRecordPayment(InvoiceAction):
    slug = "record-payment"
    label = "Record offline payment"
    title = "Record an offline payment"
    intro = (
        "Money received outside the gateway (transfer, check, cash) pays this invoice; "
        "anything above its balance is kept as the customer's credit."
    )
    permissions = ("billing.add_payment",)
    form_class = OfflinePaymentForm
    submit_label = "Record the payment"

    def is_available(self, invoice: Invoice) -> bool:
        return _invoice_is_unpaid(invoice)

    def initial(self, request, invoice):
        balance = invoice_balance(invoice)[2]
        return {
            "amount": balance if balance > 0 else None,
            "mode": PaymentMode.BANK_TRANSFER,
            "reference": "",
            "received_on": billing_today(),
        }

    def preview(self, request, invoice, data):
        amount = data.get("amount")
        if amount is None or amount <= 0:
            return None  # the service refuses it when confirmed, next to the amount
        balance = invoice_balance(invoice)[2]
        # As the service does: an invoice with a card payment in flight is left to that payment.
        payable = invoice.status in UNPAID_INVOICE_STATUSES and not _payment_in_flight(invoice)
        applied = min(amount, balance) if payable else ZERO
        money = invoice.currency
        return Preview(
            title="Payment",
            figures=(
                Figure("payment_amount", "Payment", format_money(amount, money)),
                Figure(
                    "applied", f"Applied to invoice {invoice.number}", format_money(applied, money)
                ),
                Figure(
                    "balance_after", "Balance due after", format_money(balance - applied, money)
                ),
                Figure(
                    "left_as_credit",
                    "Kept as customer credit",
                    format_money(amount - applied, money),
                ),
            ),
        )

    def perform(self, request, invoice, data):
        payment = payment_record_offline(
            customer=invoice.customer,
            amount=data["amount"],
            mode=data["mode"],
            reference=data["reference"],
            received_on=data["received_on"],
            invoices=[invoice],
            actor=request.user,
        )
        invoice.refresh_from_db()
        message = (
            f"Payment recorded: receipt {payment.receipt_number} for "
            f"{format_money(payment.amount, payment.currency)}."
        )
        if invoice.status == InvoiceStatus.PAID:
            message += f" Invoice {invoice.number} is paid."
        return ActionResult(message)


class InvoiceIssueCreditNote(InvoiceAction):
    slug = "credit-note"
    label = "Issue credit note"
    title = "Issue a credit note for the invoice"
    intro = (
        "A credit note corrects the invoice; all its credit notes together never exceed its "
        "total. Applied now, it pays down the balance; otherwise it stays as the customer's "
        "credit for future invoices."
    )
    permissions = ("billing.add_creditnote",)
    form_class = CreditNoteForm
    submit_label = "Issue the credit note"

    def is_available(self, invoice: Invoice) -> bool:
        return invoice.status in (*UNPAID_INVOICE_STATUSES, InvoiceStatus.PAID)

    def form_kwargs(self, invoice):
        return {
            "apply_label": "Apply it to this invoice now",
            "apply_help": "Pays the balance with the customer's credit (oldest first), up to "
            "the credit note's amount.",
        }

    def initial(self, request, invoice):
        balance = invoice_balance(invoice)[2]
        unpaid = invoice.status in UNPAID_INVOICE_STATUSES and balance > 0
        return {
            "amount": balance if unpaid else None,
            "reason": CreditNoteReason.BILLING_ERROR,
            "memo": "",
            "apply_credit": unpaid,
        }

    def preview(self, request, invoice, data):
        amount = data.get("amount")
        if amount is None or amount <= 0:
            return None
        balance = invoice_balance(invoice)[2]
        applied = min(amount, balance) if data.get("apply_credit") else ZERO
        credit_after = customer_credit_balance(invoice.customer) + amount - applied
        money = invoice.currency
        return Preview(
            title="Credit",
            figures=(
                Figure("credit_note_amount", "Credit note", format_money(amount, money)),
                Figure(
                    "applied", f"Applied to invoice {invoice.number}", format_money(applied, money)
                ),
                Figure(
                    "balance_after", "Balance due after", format_money(balance - applied, money)
                ),
                Figure(
                    "customer_credit_after",
                    "Customer credit after",
                    format_money(credit_after, money),
                ),
            ),
        )

    def perform(self, request, invoice, data):
        # One transaction: a credit note that cannot be applied as asked is not issued either.
        with transaction.atomic():
            note = credit_note_issue(
                customer=invoice.customer,
                amount=data["amount"],
                reason=data["reason"],
                invoice=invoice,
                subscription=invoice.subscription,
                memo=data["memo"],
                actor=request.user,
            )
            applied = (
                credits_apply_to_invoice(invoice=invoice, actor=request.user, limit=note.amount)
                if data["apply_credit"]
                else ZERO
            )
        message = (
            f"Credit note {note.number} issued for {format_money(note.amount, note.currency)}."
        )
        if applied:
            message += (
                f" {format_money(applied, note.currency)} applied to invoice {invoice.number}."
            )
        return ActionResult(message)


class InvoiceChargeNow(InvoiceAction):
    slug = "charge"
    label = "Charge now"
    title = "Charge the invoice to the customer's default card"
    permissions = ("billing.add_payment",)
    submit_label = "Charge the card"
    charges_card = True

    def is_available(self, invoice: Invoice) -> bool:
        return _invoice_is_unpaid(invoice)

    def _card(self, invoice: Invoice) -> PaymentMethod:
        method = invoice.customer.payment_methods.filter(is_default=True).first()
        if method is None:
            raise ValidationFailed("The customer has no default card to charge.")
        return method

    def preview(self, request, invoice, data):
        method = self._card(invoice)
        return quote_preview(payment_quote(payer=invoice.customer, invoices=[invoice]), method)

    def perform(self, request, invoice, data):
        payment = payment_collect(
            payer=invoice.customer,
            invoices=[invoice],
            method=self._card(invoice),
            idempotency_key=data["idempotency_key"],
            actor=request.user,
        )
        return payment_result(payment)


INVOICE_ACTIONS: tuple[ObjectAction, ...] = (
    InvoiceChargeNow(),
    InvoiceRecordPayment(),
    InvoiceIssueCreditNote(),
    InvoiceMarkUncollectible(),
    InvoiceVoid(),
)


# ----------------------------------------------------------------------------- customers
def _outstanding(customer: Customer) -> Decimal:
    return open_invoices([customer]).aggregate(total=Sum("balance_due"))["total"] or ZERO


class CustomerAction(ObjectAction):
    def facts(self, customer: Customer) -> list[tuple[str, object]]:
        money = _base_currency()
        return [
            ("Email", customer.email),
            ("Outstanding", format_money(_outstanding(customer), money)),
            ("Credit", format_money(customer_credit_balance(customer), money)),
        ]


class CustomerOneTimeCharge(CustomerAction):
    slug = "one-time-charge"
    label = "One-time charge"
    title = "Invoice a one-time charge"
    intro = (
        "An invoice is issued at once with the customer's tax and payment terms; the "
        "customer's credit pays it first."
    )
    permissions = ("billing.add_invoice",)
    form_class = OneTimeChargeForm
    submit_label = "Issue the invoice"

    def initial(self, request, customer):
        return {"description": "", "unit_price": None, "quantity": Decimal(1)}

    def preview(self, request, customer, data):
        if (
            not data.get("description")
            or data.get("unit_price") is None
            or not data.get("quantity")
        ):
            return None
        charges = one_time_charges(
            customer=customer,
            description=data["description"],
            unit_price=data["unit_price"],
            quantity=data["quantity"],
        )
        credit_applied = min(customer_credit_balance(customer), charges.total)
        return Preview(
            columns=INVOICE_COLUMNS,
            rows=_invoice_rows(charges),
            figures=tuple(_totals_figures(charges, credit_applied)),
        )

    def perform(self, request, customer, data):
        invoice = invoice_create_one_time(
            customer=customer,
            description=data["description"],
            unit_price=data["unit_price"],
            quantity=data["quantity"],
            actor=request.user,
        )
        paid, credited, balance = invoice_balance(invoice)
        money = invoice.currency
        message = f"Invoice {invoice.number} issued for {format_money(invoice.total, money)}"
        if invoice.status == InvoiceStatus.PAID:
            message += ", paid from the customer's credit."
        elif credited or paid:
            message += f"; {format_money(paid + credited, money)} of credit applied, "
            message += f"{format_money(balance, money)} due."
        else:
            message += "."
        return ActionResult(message)


class CustomerRecordPayment(CustomerAction):
    slug = "record-payment"
    label = "Record offline payment"
    title = "Record an offline payment"
    intro = (
        "Money received outside the gateway pays the customer's unpaid invoices, oldest due "
        "first; anything left is kept as the customer's credit."
    )
    permissions = ("billing.add_payment",)
    form_class = OfflinePaymentForm
    submit_label = "Record the payment"

    def initial(self, request, customer):
        outstanding = _outstanding(customer)
        return {
            "amount": outstanding if outstanding > 0 else None,
            "mode": PaymentMode.BANK_TRANSFER,
            "reference": "",
            "received_on": billing_today(),
        }

    def preview(self, request, customer, data):
        amount = data.get("amount")
        if amount is None or amount <= 0:
            return None
        money = _base_currency()
        rows, left = [], amount
        # Oldest due first, skipping invoices with a card payment in flight, as the service does.
        for invoice in open_invoices([customer]).filter(payment_lock__isnull=True):
            share = min(left, invoice.balance_due)
            if share <= 0:
                break
            rows.append(
                (
                    invoice.number,
                    _date(invoice.due_date),
                    format_money(invoice.balance_due, money),
                    format_money(share, money),
                )
            )
            left -= share
        return Preview(
            title="Payment",
            columns=("Invoice", "Due date", "Balance due", "Paid by this payment"),
            rows=tuple(rows),
            figures=(
                Figure("payment_amount", "Payment", format_money(amount, money)),
                Figure("applied", "Applied to invoices", format_money(amount - left, money)),
                Figure("left_as_credit", "Kept as customer credit", format_money(left, money)),
            ),
        )

    def perform(self, request, customer, data):
        payment = payment_record_offline(
            customer=customer,
            amount=data["amount"],
            mode=data["mode"],
            reference=data["reference"],
            received_on=data["received_on"],
            actor=request.user,
        )
        paid = [
            a.invoice.number for a in payment.allocations.select_related("invoice").order_by("pk")
        ]
        return ActionResult(
            f"Payment recorded: receipt {payment.receipt_number} for "
            f"{format_money(payment.amount, payment.currency)}"
            + (f" (invoices {', '.join(paid)})." if paid else ", kept as credit.")
        )


class CustomerIssueCreditNote(CustomerAction):
    slug = "credit-note"
    label = "Issue credit note"
    title = "Issue a credit note"
    intro = "Credit the customer (goodwill, a billing error…), not tied to one invoice."
    permissions = ("billing.add_creditnote",)
    form_class = CreditNoteForm
    submit_label = "Issue the credit note"

    def form_kwargs(self, customer):
        return {
            "apply_label": "Apply the customer's credit to unpaid invoices now",
            "apply_help": "Oldest due first. Otherwise the credit pays future invoices.",
        }

    def initial(self, request, customer):
        return {
            "amount": None,
            "reason": CreditNoteReason.GOODWILL,
            "memo": "",
            "apply_credit": _outstanding(customer) > 0,
        }

    def preview(self, request, customer, data):
        amount = data.get("amount")
        if amount is None or amount <= 0:
            return None
        money = _base_currency()
        credit = customer_credit_balance(customer) + amount
        # Invoices with a card payment in flight are left alone (the service skips them).
        payable = open_invoices([customer]).filter(payment_lock__isnull=True)
        outstanding = payable.aggregate(total=Sum("balance_due"))["total"] or ZERO
        applied = min(credit, outstanding) if data.get("apply_credit") else ZERO
        return Preview(
            title="Credit",
            figures=(
                Figure("credit_note_amount", "Credit note", format_money(amount, money)),
                Figure("applied", "Applied to unpaid invoices", format_money(applied, money)),
                Figure(
                    "customer_credit_after",
                    "Customer credit after",
                    format_money(credit - applied, money),
                ),
            ),
        )

    def perform(self, request, customer, data):
        with transaction.atomic():
            note = credit_note_issue(
                customer=customer,
                amount=data["amount"],
                reason=data["reason"],
                memo=data["memo"],
                actor=request.user,
            )
            applied = (
                credits_apply_to_open_invoices(customer=customer, actor=request.user)
                if data["apply_credit"]
                else ZERO
            )
        message = (
            f"Credit note {note.number} issued for {format_money(note.amount, note.currency)}."
        )
        if applied:
            message += f" {format_money(applied, note.currency)} applied to unpaid invoices."
        return ActionResult(message)


CUSTOMER_ACTIONS: tuple[ObjectAction, ...] = (
    CustomerOneTimeCharge(),
    CustomerRecordPayment(),
    CustomerIssueCreditNote(),
)


# ----------------------------------------------------------------------------- payments
def refundable_credit_notes(customer_id: int):
    return (
        credit_notes_with_remaining(
            CreditNote.objects.filter(customer_id=customer_id, status=CreditNoteStatus.ISSUED)
        )
        .filter(remaining__gt=0)
        .order_by("issue_date", "id")
    )


class PaymentRefund(ObjectAction):
    slug = "refund"
    label = "Refund"
    title = "Refund the payment"
    intro = (
        "Money goes back through the channel that took it: a card payment through the "
        "gateway; an offline payment is recorded as refunded. Without a credit note only the "
        "payment's unapplied part can be refunded; to refund a paid invoice, issue a credit "
        "note for it, then refund from that credit note."
    )
    permissions = ("billing.add_refund",)
    form_class = RefundForm
    submit_label = "Refund"

    def is_available(self, payment: Payment) -> bool:
        return payment.status == PaymentStatus.SUCCEEDED

    def form_kwargs(self, payment):
        return {"credit_notes": refundable_credit_notes(payment.customer_id)}

    def _amounts(self, payment: Payment) -> tuple[Payment, Decimal]:
        fresh = payments_with_unapplied(Payment.objects.filter(pk=payment.pk)).get()
        refunded = sum((r.amount for r in fresh.refunds.exclude(status=RefundStatus.FAILED)), ZERO)
        return fresh, refunded

    def facts(self, payment: Payment) -> list[tuple[str, object]]:
        fresh, refunded = self._amounts(payment)
        money = payment.currency
        return [
            ("Customer", payment.customer),
            ("Status", payment.get_status_display()),
            ("Paid by", payment.method_label or payment.get_mode_display()),
            ("Amount", format_money(payment.amount, money)),
            ("Refunded so far", format_money(refunded, money)),
            ("Unapplied", format_money(fresh.unapplied, money)),
        ]

    def initial(self, request, payment):
        fresh, _refunded = self._amounts(payment)
        return {
            "amount": fresh.unapplied if fresh.unapplied > 0 else None,
            "reason": "",
            "credit_note": None,
        }

    def preview(self, request, payment, data):
        amount = data.get("amount")
        if amount is None or amount <= 0:
            return None
        money = payment.currency
        note = data.get("credit_note")
        channel = (
            "the card, through the gateway"
            if payment.mode == PaymentMode.CARD
            else "recorded as refunded (offline payment)"
        )
        return Preview(
            title="Refund",
            figures=(
                Figure("refund_amount", "Refund", format_money(amount, money)),
                Figure(
                    "refund_from",
                    "From",
                    f"credit note {note.number}" if note else "the payment's unapplied part",
                ),
                Figure("channel", "Returned to", channel),
            ),
        )

    def perform(self, request, payment, data):
        note = data.get("credit_note")
        refund = payment_refund(
            payment=payment,
            amount=data["amount"],
            reason=data["reason"],
            credit_note=note,
            actor=request.user,
        )
        money = format_money(refund.amount, payment.currency)
        source = f" from credit note {note.number}" if note else ""
        if refund.status == RefundStatus.PENDING:
            return ActionResult(
                f"Refund of {money}{source} sent; the gateway has not confirmed it yet.",
                messages.WARNING,
            )
        return ActionResult(f"Refund of {money}{source} for payment {payment} succeeded.")


PAYMENT_ACTIONS: tuple[ObjectAction, ...] = (PaymentRefund(),)
