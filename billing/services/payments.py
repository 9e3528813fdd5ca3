"""Payments: collect by card (three steps, DESIGN rule 7), reconcile, record offline, refund.

Collecting never holds a database transaction across the gateway call:
1. ``payment_begin`` commits a pending Payment with its idempotency key, its allocations and a
   lock row per invoice (at most one pending payment per invoice);
2. the gateway is charged with that key, outside any transaction;
3. ``payment_record_result`` records the outcome and settles the invoices.
A worker killed between 2 and 3 leaves a pending payment that ``payment_reconcile`` settles by
asking the gateway about the same key — never by charging under a new one.
"""

import datetime
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.bulk import bulk_insert, bulk_update_rows
from billing.clock import billing_today
from billing.enums import (
    CreditNoteStatus,
    DocumentKind,
    InvoiceStatus,
    PaymentMode,
    PaymentStatus,
    RefundStatus,
)
from billing.errors import (
    InvalidTransition,
    NotAllowed,
    PaymentFailed,
    PaymentInProgress,
    ValidationFailed,
)
from billing.gateways import (
    CardUnknown,
    ChargeRequest,
    ChargeResult,
    GatewayError,
    GatewayTimeout,
    IdempotencyConflict,
    get_gateway,
)
from billing.lifecycle import assert_transition
from billing.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoicePaymentLock,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    Refund,
)
from billing.money import ZERO, round_money
from billing.selectors import (
    credit_notes_with_remaining,
    invoices_with_amounts,
    open_invoices,
    payments_with_unapplied,
)
from billing.services.events import event_build, event_record, events_record_many
from billing.services.invoices import invoice_settle, invoices_settle_many
from billing.services.numbering import document_number_allocate, document_numbers_allocate

SETTLED = (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REFUNDED)


def new_idempotency_key(prefix: str = "pay") -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def payable_customers(payer: Customer) -> list[Customer]:
    """The payer and the children whose invoices it may see and pay."""
    return [payer, *payer.children.filter(visible_to_parent=True).order_by("pk")]


@dataclass(frozen=True)
class PaymentQuote:
    """What paying these invoices would charge: the confirmation page shows exactly this."""

    currency: str
    invoices: tuple[tuple[Invoice, Decimal], ...]  # (invoice, balance charged)

    @property
    def total(self) -> Decimal:
        return sum((amount for _invoice, amount in self.invoices), ZERO)


def payment_quote(*, payer: Customer, invoices: Sequence[Invoice]) -> PaymentQuote:
    """Balances of the chosen invoices, oldest due first; refuses others' or settled invoices."""
    allowed = {c.pk for c in payable_customers(payer)}
    ids = {invoice.pk for invoice in invoices}
    rows = list(
        invoices_with_amounts(Invoice.objects.filter(pk__in=ids)).order_by(
            "due_date", "issue_date", "pk"
        )
    )
    if not rows or len(rows) != len(ids):
        raise ValidationFailed("Choose at least one invoice to pay.")
    for invoice in rows:
        if invoice.customer_id not in allowed:
            raise NotAllowed("That invoice cannot be paid from this account.")
        if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
            raise InvalidTransition(f"Invoice {invoice.number} is not open for payment.")
        if invoice.balance_due <= 0:
            raise InvalidTransition(f"Invoice {invoice.number} has nothing left to pay.")
    return PaymentQuote(
        currency=rows[0].currency,
        invoices=tuple((invoice, invoice.balance_due) for invoice in rows),
    )


def payment_quote_outstanding(*, payer: Customer) -> PaymentQuote | None:
    """Everything outstanding for the payer and its visible children, oldest first.

    Invoices with a payment in flight are left out: paying them now would be refused, and the
    pending payment settles them.
    """
    invoices = list(open_invoices(payable_customers(payer)).filter(payment_lock__isnull=True))
    return payment_quote(payer=payer, invoices=invoices) if invoices else None


def payment_begin(
    *,
    payer: Customer,
    invoices: Sequence[Invoice],
    method: PaymentMethod,
    idempotency_key: str,
    actor=None,
) -> tuple[Payment, bool]:
    """Step 1: commit a pending payment. Returns (payment, created); a known key returns the
    earlier payment untouched, so a double submit charges once."""
    if method.customer_id not in {c.pk for c in payable_customers(payer)}:
        raise NotAllowed("That card cannot be used for this account.")
    existing = _known_payment(idempotency_key, payer)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            locked = list(
                Invoice.objects.select_for_update(no_key=True)
                .filter(pk__in=[i.pk for i in invoices])
                .order_by("pk")
            )
            # A double submit with the same key may have committed while we waited for the
            # invoice locks: that payment stands (its invoices are now locked by it).
            existing = _known_payment(idempotency_key, payer)
            if existing is not None:
                return existing, False
            if InvoicePaymentLock.objects.filter(invoice__in=locked).exists():
                raise PaymentInProgress()
            quote = payment_quote(payer=payer, invoices=locked)
            payment = _card_payment(payer, quote.total, quote.currency, method, idempotency_key)
            payment.created_by = actor if actor is not None and actor.is_authenticated else None
            payment.save(force_insert=True)
            PaymentAllocation.objects.bulk_create(
                PaymentAllocation(payment=payment, invoice=invoice, amount=amount)
                for invoice, amount in quote.invoices
            )
            InvoicePaymentLock.objects.bulk_create(
                InvoicePaymentLock(invoice=invoice, payment=payment)
                for invoice, _ in quote.invoices
            )
            events_record_many(
                [_started_event(payment, [i.number for i, _ in quote.invoices], actor)]
            )
    except IntegrityError:
        # The same key raced us (double submit): the other request's payment stands.
        existing = _known_payment(idempotency_key, payer)
        if existing is None:
            raise PaymentInProgress() from None
        return existing, False
    return payment, True


def _card_payment(
    payer: Customer, amount: Decimal, currency: str, method: PaymentMethod, idempotency_key: str
) -> Payment:
    return Payment(
        customer=payer,
        amount=amount,
        currency=currency,
        mode=PaymentMode.CARD,
        method=method,
        method_label=f"{method.brand} •••• {method.last4}",
        gateway=method.gateway,
        idempotency_key=idempotency_key,
    )


def _started_event(payment: Payment, invoice_numbers: list[str], actor):
    return event_build(
        kind="payment.started",
        description=f"Payment of {payment.currency} {payment.amount} started with {payment.method_label}",
        actor=actor,
        customer_id=payment.customer_id,
        payment=payment,
        after={"invoices": invoice_numbers},
    )


def _known_payment(idempotency_key: str, payer: Customer) -> Payment | None:
    """The payment already made under this key; a key is never shared between accounts."""
    existing = Payment.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None and existing.customer_id != payer.pk:
        raise NotAllowed("This payment reference belongs to another account.")
    return existing


def payment_record_result(*, payment: Payment, result: ChargeResult | None, actor=None) -> Payment:
    """Step 3: record what the gateway said. ``None`` means it timed out: outcome unknown.

    Recording twice is harmless: a settled payment is returned as it is.
    """
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True).get(pk=payment.pk)
        if payment.status in SETTLED:
            return payment
        new_status = PaymentStatus.UNKNOWN if result is None else result.status
        if new_status == payment.status:
            return payment
        assert_transition("payment", payment.status, new_status)
        invoices = []
        if new_status == PaymentStatus.SUCCEEDED:
            # Invoices before the receipt sequence, in the order payment_record_offline takes
            # them, so a card success and an offline payment never wait on each other in a cycle.
            invoices = list(
                Invoice.objects.select_for_update(no_key=True)
                .filter(payment_allocations__payment=payment)
                .order_by("pk")
            )
        before = payment.status
        receipt = None
        if new_status == PaymentStatus.SUCCEEDED:
            receipt = document_number_allocate(kind=DocumentKind.RECEIPT)
        payment.save(
            update_fields=_apply_result(
                payment, result, receipt, now=timezone.now(), today=billing_today()
            )
        )
        if new_status != PaymentStatus.UNKNOWN:
            # An unknown outcome keeps the invoices locked: nobody may pay them twice meanwhile.
            InvoicePaymentLock.objects.filter(payment=payment).delete()
        events_record_many([_result_event(payment, before, actor)])
        for invoice in invoices:
            invoice_settle(invoice=invoice, actor=actor)
    return payment


RESULT_FIELDS = [
    "status",
    "processed_at",
    "updated_at",
    "gateway_reference",
    "failure_code",
    "failure_message",
    "decline_kind",
    "receipt_number",
    "received_on",
]


def _apply_result(
    payment: Payment,
    result: ChargeResult | None,
    receipt: str | None,
    *,
    now: datetime.datetime,
    today: datetime.date,
) -> list[str]:
    """Set what the gateway said (``None``: unknown) on the payment; return the fields set."""
    payment.status = PaymentStatus.UNKNOWN if result is None else result.status
    payment.processed_at = payment.updated_at = now
    if result is not None:
        payment.gateway_reference = result.reference
        payment.failure_code = result.failure_code
        payment.failure_message = result.failure_message[:300]
        payment.decline_kind = result.decline_kind
    if receipt is not None:
        payment.receipt_number = receipt
        payment.received_on = today
    return RESULT_FIELDS


def _result_event(payment: Payment, before: str, actor):
    return event_build(
        kind=f"payment.{payment.status}",
        description=_result_description(payment),
        actor=actor,
        customer_id=payment.customer_id,
        payment=payment,
        before={"status": before},
        after={"status": payment.status, "failure_code": payment.failure_code},
    )


def _result_description(payment: Payment) -> str:
    amount = f"{payment.currency} {payment.amount}"
    if payment.status == PaymentStatus.SUCCEEDED:
        return f"Payment of {amount} succeeded (receipt {payment.receipt_number})"
    if payment.status == PaymentStatus.FAILED:
        return f"Payment of {amount} failed: {payment.failure_message or payment.failure_code}"
    return f"Payment of {amount}: outcome unknown, awaiting reconciliation"


def _charge(payment: Payment) -> ChargeResult | None:
    """Step 2, outside any transaction. ``None``: the gateway timed out."""
    if payment.method is None:
        return _charge_outcome(payment, None)
    try:
        result = get_gateway(payment.gateway).charge(
            token=payment.method.token,
            amount=payment.amount,
            currency=payment.currency,
            idempotency_key=payment.idempotency_key,
        )
    except GatewayError as error:
        return _charge_outcome(payment, error)
    return _charge_outcome(payment, result)


def _charge_outcome(payment: Payment, answer: ChargeResult | GatewayError | None):
    """What a charge's answer means for the payment; ``None`` answer: its card is gone."""
    if isinstance(answer, ChargeResult):
        return answer
    if isinstance(answer, (GatewayTimeout, IdempotencyConflict)):
        # Unknown outcome (or the key already holds a charge we don't recognise): reconcile by
        # key later; marking it failed could hide money already taken.
        return None
    if isinstance(answer, CardUnknown) or answer is None:
        removed = answer is None
        return ChargeResult(
            status=PaymentStatus.FAILED,
            reference="",
            idempotency_key=payment.idempotency_key,
            amount=payment.amount,
            currency=payment.currency,
            failure_code="method_removed" if removed else "card_unknown",
            failure_message="The card was removed before it could be charged."
            if removed
            else answer.message,
        )
    raise answer


def payment_collect(
    *,
    payer: Customer,
    invoices: Sequence[Invoice],
    method: PaymentMethod,
    idempotency_key: str,
    actor=None,
) -> Payment:
    """Charge a card for one or many invoices (the payer's and its visible children's).

    Call it outside any transaction (DESIGN rule 7): step 1 must be committed before the
    gateway is called. Returns the payment whatever the outcome; callers show
    ``failure_message`` on failure.
    """
    payment, created = payment_begin(
        payer=payer,
        invoices=invoices,
        method=method,
        idempotency_key=idempotency_key,
        actor=actor,
    )
    if not created:
        return payment_reconcile(payment=payment, actor=actor)
    return payment_record_result(payment=payment, result=_charge(payment), actor=actor)


# ----------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class CardCharge:
    """One invoice of a batch job (renewals, dunning) to charge to a card under a fixed key."""

    invoice: Invoice  # its customer loaded
    amount: Decimal  # its balance
    method: PaymentMethod
    idempotency_key: str


def payments_begin_many(charges: Sequence[CardCharge], *, actor=None) -> list[Payment]:
    """Step 1 for a batch, inside the caller's transaction: pending payments, their allocations
    and invoice locks, in one INSERT each. The caller holds the invoices' row locks and knows
    none has a payment in flight or a payment under its key (the unique constraints say so
    otherwise, rolling the batch back)."""
    payments = bulk_insert(
        [
            _card_payment(
                c.invoice.customer, c.amount, c.invoice.currency, c.method, c.idempotency_key
            )
            for c in charges
        ]
    )
    bulk_insert(
        [
            PaymentAllocation(payment=payment, invoice=c.invoice, amount=c.amount)
            for payment, c in zip(payments, charges, strict=True)
        ]
    )
    bulk_insert(
        [
            InvoicePaymentLock(invoice=c.invoice, payment=payment)
            for payment, c in zip(payments, charges, strict=True)
        ]
    )
    events_record_many(
        [
            _started_event(payment, [c.invoice.number], actor)
            for payment, c in zip(payments, charges, strict=True)
        ]
    )
    return payments


def payments_charge_many(payments: Sequence[Payment]) -> list[ChargeResult | None]:
    """Step 2 for a batch, outside any transaction: each gateway charges its cards with up to
    ``GATEWAY_CONCURRENCY`` calls in flight. ``None``: outcome unknown, as for ``_charge``."""
    answers: dict[int, ChargeResult | None] = {}
    by_gateway: dict[str, list[int]] = defaultdict(list)
    for index, payment in enumerate(payments):
        if payment.method is None:
            answers[index] = _charge_outcome(payment, None)
        else:
            by_gateway[payment.gateway].append(index)
    for name, indexes in by_gateway.items():
        replies = get_gateway(name).charge_many(
            [
                ChargeRequest(
                    token=payments[i].method.token,
                    amount=payments[i].amount,
                    currency=payments[i].currency,
                    idempotency_key=payments[i].idempotency_key,
                )
                for i in indexes
            ],
            concurrency=settings.GATEWAY_CONCURRENCY,
        )
        for index, reply in zip(indexes, replies, strict=True):
            answers[index] = _charge_outcome(payments[index], reply)
    return [answers[index] for index in range(len(payments))]


def payments_record_results_many(
    payments: Sequence[Payment], results: Sequence[ChargeResult | None], *, actor=None
) -> list[Payment]:
    """Step 3 for a batch, in one transaction: every outcome, receipt numbers in one take, the
    invoices paid settled together. A payment settled meanwhile (reconciled) is left as it is."""
    with transaction.atomic():
        statuses = dict(
            Payment.objects.select_for_update(no_key=True)
            .filter(pk__in=[p.pk for p in payments])
            .values_list("pk", "status")
        )
        # The batch's own objects (step 1 wrote them; only a status change moves a payment
        # on), unless one moved on meanwhile (reconciled): that one is read afresh.
        fresh = {p.pk: p for p in payments if statuses[p.pk] == p.status}
        moved = [pk for pk in statuses if pk not in fresh]
        if moved:
            fresh.update(Payment.objects.in_bulk(moved))
        changing = []
        for payment, result in zip(payments, results, strict=True):
            current = fresh[payment.pk]
            new_status = PaymentStatus.UNKNOWN if result is None else result.status
            if current.status not in SETTLED and new_status != current.status:
                assert_transition("payment", current.status, new_status)
                changing.append((current, result))
        succeeded = [p for p, r in changing if r is not None and r.succeeded]
        # Invoices before the receipt sequence, in pk order, as payment_record_result takes them.
        invoices = list(
            Invoice.objects.select_for_update(no_key=True)
            .filter(payment_allocations__payment__in=succeeded)
            .order_by("pk")
        )
        receipts = iter(
            document_numbers_allocate(kind=DocumentKind.RECEIPT, count=len(succeeded))
            if succeeded
            else ()
        )
        events = []
        now, today = timezone.now(), billing_today()
        for payment, result in changing:
            before = payment.status
            receipt = next(receipts) if result is not None and result.succeeded else None
            _apply_result(payment, result, receipt, now=now, today=today)
            events.append(_result_event(payment, before, actor))
        bulk_update_rows([p for p, _ in changing], RESULT_FIELDS)
        InvoicePaymentLock.objects.filter(
            payment__in=[p for p, _ in changing if p.status != PaymentStatus.UNKNOWN]
        ).delete()
        events_record_many(events)
        invoices_settle_many(invoices, actor=actor)
    return [fresh[p.pk] for p in payments]


def payment_reconcile(*, payment: Payment, actor=None) -> Payment:
    """Settle a pending or unknown payment by asking the gateway about its key.

    If the gateway never saw the key, the charge is sent again with the same key: the gateway
    deduplicates it, so a charge still in flight elsewhere is never doubled.
    """
    payment = Payment.objects.select_related("method").get(pk=payment.pk)
    if payment.status in SETTLED or payment.mode != PaymentMode.CARD:
        return payment
    result = get_gateway(payment.gateway).lookup(idempotency_key=payment.idempotency_key)
    if result is None:
        result = _charge(payment)
    return payment_record_result(payment=payment, result=result, actor=actor)


def payment_raise_if_failed(payment: Payment) -> Payment:
    """For views: turn a failed payment into the customer-facing error."""
    if payment.status == PaymentStatus.FAILED:
        raise PaymentFailed(payment.failure_message or None)
    return payment


def payment_record_offline(
    *,
    customer: Customer,
    amount: Decimal,
    mode: str,
    reference: str = "",
    received_on: datetime.date | None = None,
    invoices: Sequence[Invoice] | None = None,
    note: str = "",
    actor=None,
) -> Payment:
    """Record money received outside the gateway (transfer, check, cash) and apply it.

    It pays the given invoices (default: the customer's open ones, oldest first); any rest is
    the customer's credit.
    """
    currency = Organization.load().base_currency
    amount = round_money(amount, currency)
    if amount <= 0:
        raise ValidationFailed("The amount must be more than zero.", field="amount")
    if mode == PaymentMode.CARD or mode not in PaymentMode.values:
        raise ValidationFailed("Choose how the money was received.", field="mode")
    if invoices is not None and any(i.customer_id != customer.pk for i in invoices):
        raise NotAllowed("An offline payment pays only its own customer's invoices.")
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=customer.pk)
        if invoices is None:
            locked_ids = list(open_invoices([customer]).values_list("pk", flat=True))
        else:
            locked_ids = [invoice.pk for invoice in invoices]
        list(
            Invoice.objects.select_for_update(no_key=True).filter(pk__in=locked_ids).order_by("pk")
        )
        # Balances are read after the locks, so nothing paid meanwhile is paid again; an invoice
        # with a card payment in flight is skipped (that payment settles it).
        targets = list(
            invoices_with_amounts(
                Invoice.objects.filter(pk__in=locked_ids, payment_lock__isnull=True)
            ).order_by("due_date", "issue_date", "pk")
        )
        payment = Payment.objects.create(
            customer=customer,
            amount=amount,
            currency=currency,
            mode=mode,
            method_label=PaymentMode(mode).label,
            status=PaymentStatus.SUCCEEDED,
            idempotency_key=new_idempotency_key("offline"),
            receipt_number=document_number_allocate(kind=DocumentKind.RECEIPT),
            received_on=received_on or billing_today(),
            processed_at=timezone.now(),
            reference=reference,
            note=note,
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
        event_record(
            kind="payment.recorded",
            description=f"{payment.method_label} payment of {currency} {amount} recorded"
            + (f" (ref. {reference})" if reference else ""),
            actor=actor,
            customer=customer,
            payment=payment,
            after={"amount": str(amount), "mode": mode},
        )
        left = amount
        for invoice in targets:
            if left <= 0:
                break
            if invoice.customer_id != customer.pk:
                raise NotAllowed("An offline payment pays only its own customer's invoices.")
            if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
                continue
            share = min(left, invoice.balance_due)
            if share <= 0:
                continue
            PaymentAllocation.objects.create(payment=payment, invoice=invoice, amount=share)
            left -= share
            invoice_settle(invoice=invoice, actor=actor)
    return payment


def payment_refund(
    *,
    payment: Payment,
    amount: Decimal,
    reason: str = "",
    credit_note: CreditNote | None = None,
    actor=None,
) -> Refund:
    """Return money through the channel that took it.

    Without a credit note it refunds the payment's unapplied part; with one, that credit note's
    remaining balance (to refund a paid invoice: issue a credit note for it, then refund that).
    """
    amount = round_money(amount, payment.currency)
    if amount <= 0:
        raise ValidationFailed("The amount must be more than zero.", field="amount")
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=payment.customer_id)
        payment = payments_with_unapplied(
            Payment.objects.select_for_update(no_key=True).filter(pk=payment.pk)
        ).get()
        if payment.status != PaymentStatus.SUCCEEDED:
            raise InvalidTransition("Only a succeeded payment can be refunded.")
        already = sum((r.amount for r in payment.refunds.exclude(status=RefundStatus.FAILED)), ZERO)
        if already + amount > payment.amount:
            raise ValidationFailed(
                f"At most {payment.currency} {payment.amount - already} can still be refunded.",
                field="amount",
            )
        if credit_note is None:
            if amount > payment.unapplied:
                raise ValidationFailed(
                    f"Only {payment.currency} {payment.unapplied} of this payment is unapplied. "
                    "To refund a paid invoice, issue a credit note for it and refund that.",
                    field="amount",
                )
        else:
            note = credit_notes_with_remaining(CreditNote.objects.filter(pk=credit_note.pk)).get()
            if note.customer_id != payment.customer_id:
                raise NotAllowed("That credit note belongs to another customer.")
            if note.status != CreditNoteStatus.ISSUED:
                raise InvalidTransition("This credit note is void and cannot be refunded.")
            if amount > note.remaining:
                raise ValidationFailed(
                    f"The credit note has only {note.currency} {note.remaining} left.",
                    field="amount",
                )
        offline = payment.mode != PaymentMode.CARD
        refund = Refund.objects.create(
            payment=payment,
            credit_note=credit_note,
            amount=amount,
            reason=reason,
            status=RefundStatus.SUCCEEDED if offline else RefundStatus.PENDING,
            idempotency_key=new_idempotency_key("refund"),
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
    if not offline:
        try:
            result = get_gateway(payment.gateway).refund(
                reference=payment.gateway_reference,
                amount=amount,
                idempotency_key=refund.idempotency_key,
            )
            status, reference = result.status, result.reference
        except GatewayTimeout:
            # Outcome unknown: the refund stays pending and is retried under the same key.
            return refund
        except GatewayError:
            status, reference = RefundStatus.FAILED, ""
    else:
        status, reference = RefundStatus.SUCCEEDED, ""
    with transaction.atomic():
        refund = Refund.objects.select_for_update(no_key=True).get(pk=refund.pk)
        refund.status = status
        refund.gateway_reference = reference
        refund.save(update_fields=["status", "gateway_reference", "updated_at"])
        payment = Payment.objects.select_for_update(no_key=True).get(pk=payment.pk)
        refunded = sum(
            (r.amount for r in payment.refunds.filter(status=RefundStatus.SUCCEEDED)), ZERO
        )
        if refunded >= payment.amount and payment.status == PaymentStatus.SUCCEEDED:
            assert_transition("payment", payment.status, PaymentStatus.REFUNDED)
            payment.status = PaymentStatus.REFUNDED
            payment.save(update_fields=["status", "updated_at"])
        event_record(
            kind=f"refund.{status}",
            description=f"Refund of {payment.currency} {amount} {status}"
            + (f": {reason}" if reason else ""),
            actor=actor,
            customer=payment.customer,
            payment=payment,
            credit_note=credit_note,
            after={"amount": str(amount), "status": status},
        )
    if status == RefundStatus.FAILED:
        raise PaymentFailed("The payment provider refused the refund.")
    return refund
