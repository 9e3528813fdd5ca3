"""Renewals in batches: the set-based path the renewal job takes for hundreds of subscriptions.

A batch is renewed in the three steps of a card payment (DESIGN rule 7):

1. one transaction: lock the due subscriptions (``SKIP LOCKED``: another runner has the rest),
   price each next period with the very code ``subscription_renew`` uses, and write the whole
   batch in a few statements — invoices numbered in one take from the gapless counter, their
   lines, the new terms, coupon and cycle countdowns, events and emails, and the pending
   payments of the auto-charged invoices;
2. the gateway charges the cards, outside any transaction, with calls in flight concurrently;
3. one transaction records every outcome, numbers the receipts and settles the paid invoices.
   Failed charges then start dunning one by one, as ``subscription_renew`` does.

A renewal that does more than bill the next period — the term's end cancels it, a scheduled
change applies, metered usage is billed, customer credit pays part of the invoice — is left to
``subscription_renew`` one by one; so is the whole batch if step 1 fails, so one bad row never
rolls back its neighbours. Either way the outcome is the one ``subscription_renew`` would give,
and the unique constraints (one invoice per period, one payment per key) have the last word.
"""

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.bulk import bulk_insert, bulk_update_rows
from billing.clock import billing_today
from billing.enums import DocumentKind, InvoiceKind, PaymentStatus
from billing.models import (
    Organization,
    Payment,
    PaymentAllocation,
    ScheduledChange,
    Subscription,
    SubscriptionCoupon,
    UsageRecord,
)
from billing.periods import period_starting
from billing.pricing import PriceBook, configurations_of, period_charges
from billing.selectors import available_credits
from billing.services.dunning import dunning_start
from billing.services.events import events_record_many
from billing.services.invoices import (
    invoice_build,
    invoice_issued_event,
    invoice_mark_finalized,
    invoices_settle_many,
)
from billing.services.numbering import document_numbers_allocate
from billing.services.payments import (
    CardCharge,
    payments_begin_many,
    payments_charge_many,
    payments_record_results_many,
)
from billing.services.subscriptions import (
    ACTIVE_TERM_STATUSES,
    invoice_attempt_key,
    renewal_ends_term,
    renewed_event,
)

logger = logging.getLogger(__name__)


@dataclass
class RenewalBatch:
    """What a batch did (counts by the labels the renewal job reports) and what it left for
    ``subscription_renew`` one by one."""

    counts: Counter = field(default_factory=Counter)
    one_by_one: list[int] = field(default_factory=list)


def subscriptions_renew_many(ids: Sequence[int], *, actor=None) -> RenewalBatch:
    """Renew the due subscriptions among ``ids`` (a job; idempotent, safe to run concurrently)."""
    organization = Organization.load()
    today = billing_today(organization)
    batch = RenewalBatch()
    try:
        with transaction.atomic():
            payments = _bill(ids, organization, today, batch, actor)
    except Exception:
        logger.exception("renewal batch of %s failed; renewing one by one", len(ids))
        return RenewalBatch(one_by_one=list(ids))
    if payments:
        _collect(payments, batch, actor)
    return batch


def _bill(ids, organization, today, batch: RenewalBatch, actor) -> list[Payment]:
    """Step 1 (in the caller's transaction): invoices, terms, events, pending payments."""
    subs = list(
        Subscription.objects.select_for_update(of=("self",), no_key=True, skip_locked=True)
        .select_related("plan", "customer__group__price_list", "payment_method")
        .filter(
            pk__in=ids,
            status__in=ACTIVE_TERM_STATUSES,
            current_term_start__isnull=False,
            current_term_end__lte=today,
        )
        .exclude(pause_at__lte=today)
        .order_by("pk")
    )
    # Not due (renewed meanwhile), or locked by another runner or a customer's change in
    # progress: if it is still due, the next tick finds it again.
    if len(subs) < len(ids):
        batch.counts["nothing_due"] += len(ids) - len(subs)
    others = _needing_one_by_one(subs, today)
    batch.one_by_one.extend(sorted(others))
    subs = [s for s in subs if s.pk not in others]
    if not subs:
        return []

    configurations = configurations_of(subs)
    books = PriceBook.for_customers(
        {s.customer_id: s.customer for s in subs}.values(), organization
    )
    invoices, lines, periods = [], [], []
    for sub in subs:
        period = period_starting(
            sub.anchor_date, sub.plan.interval, sub.plan.interval_count, sub.current_term_end
        )
        charges = period_charges(configurations[sub.pk], books[sub.customer_id], period)
        invoice, invoice_lines = invoice_build(
            customer=sub.customer,
            charges=charges,
            kind=InvoiceKind.RECURRING,
            subscription=sub,
            period=period,
        )
        invoices.append(invoice)
        lines.append(invoice_lines)
        periods.append(period)

    numbers = document_numbers_allocate(kind=DocumentKind.INVOICE, count=len(invoices))
    for invoice, number in zip(invoices, numbers, strict=True):
        invoice_mark_finalized(invoice, number=number, issue_date=today, organization=organization)
    bulk_insert(invoices)
    for invoice, invoice_lines in zip(invoices, lines, strict=True):
        for line in invoice_lines:
            line.invoice = invoice
    bulk_insert([line for invoice_lines in lines for line in invoice_lines])

    now = timezone.now()
    for sub, period in zip(subs, periods, strict=True):
        sub.current_term_start, sub.current_term_end = period.start, period.end
        sub.updated_at = now  # bulk_update sets no auto_now field itself
        if sub.remaining_billing_cycles:
            sub.remaining_billing_cycles -= 1
    bulk_update_rows(
        subs, ["current_term_start", "current_term_end", "remaining_billing_cycles", "updated_at"]
    )
    # One cycle billed: count down limited coupons (as _cycle_billed does one by one).
    SubscriptionCoupon.objects.filter(subscription__in=subs, remaining_cycles__gt=0).update(
        remaining_cycles=F("remaining_cycles") - 1
    )
    events = []
    for sub, invoice, period in zip(subs, invoices, periods, strict=True):
        events += [invoice_issued_event(invoice, actor), renewed_event(sub, invoice, period, actor)]
    events_record_many(events)
    # A free period's invoice is paid by nothing at all.
    invoices_settle_many([i for i in invoices if i.total <= 0], actor=actor)

    charges = []
    for sub, invoice in zip(subs, invoices, strict=True):
        if invoice.total > 0 and sub.auto_charge and sub.payment_method_id:
            charges.append(
                CardCharge(
                    invoice=invoice,
                    amount=invoice.total,
                    method=sub.payment_method,
                    idempotency_key=invoice_attempt_key(invoice),
                )
            )
        else:
            batch.counts["renewed"] += 1
    return payments_begin_many(charges, actor=actor) if charges else []


def _needing_one_by_one(subs: list[Subscription], today) -> set[int]:
    """Renewals that do more than bill the next period (see the module's docstring)."""
    ids = [s.pk for s in subs]
    others = {s.pk for s in subs if renewal_ends_term(s, today)}
    others |= set(
        ScheduledChange.objects.filter(subscription__in=ids).values_list(
            "subscription_id", flat=True
        )
    )
    others |= set(
        UsageRecord.objects.filter(subscription__in=ids, invoice__isnull=True)
        .values_list("subscription_id", flat=True)
        .distinct()
    )
    notes, payments = available_credits(list({s.customer_id for s in subs}))
    with_credit = {n.customer_id for n in notes} | {p.customer_id for p in payments}
    others |= {s.pk for s in subs if s.customer_id in with_credit}
    return others


def _collect(payments: list[Payment], batch: RenewalBatch, actor) -> None:
    """Steps 2 and 3: charge the cards, record the outcomes, start dunning for the declines.

    If either step fails as a whole, the payments stay pending and the reconciliation job
    settles them by their keys: nothing is charged twice and nothing is lost.
    """
    try:
        results = payments_charge_many(payments)
        recorded = payments_record_results_many(payments, results, actor=actor)
    except Exception:
        logger.exception("renewal batch: %s charges left pending for reconciliation", len(payments))
        batch.counts["renewed_charge_pending"] += len(payments)
        return
    for payment in recorded:
        label = (
            "charged" if payment.status == PaymentStatus.SUCCEEDED else f"charge_{payment.status}"
        )
        batch.counts[f"renewed_{label}"] += 1
    failed = {p.pk: p for p in recorded if p.status == PaymentStatus.FAILED}
    allocations = PaymentAllocation.objects.filter(payment__in=failed).select_related(
        "invoice__subscription"
    )
    for allocation in allocations:
        try:
            dunning_start(
                invoice=allocation.invoice, payment=failed[allocation.payment_id], actor=actor
            )
        except Exception:
            batch.counts["errors"] += 1
            logger.exception("dunning could not start for payment %s", allocation.payment_id)
