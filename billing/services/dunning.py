"""Dunning: what happens after an automatic charge fails, per the merchant's policy (rule 11)."""

import datetime
import logging
from collections import Counter
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from billing.bulk import bulk_update_rows
from billing.clock import billing_today
from billing.enums import (
    CancelReason,
    DeclineKind,
    DunningFinalAction,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.errors import PaymentInProgress
from billing.lifecycle import can_transition
from billing.models import (
    DunningPolicy,
    Invoice,
    InvoicePaymentLock,
    Organization,
    Payment,
    PaymentAttempt,
    Subscription,
)
from billing.periods import start_of_day
from billing.services.events import event_build, event_record, events_record_many

logger = logging.getLogger(__name__)


def dunning_start(*, invoice: Invoice, payment: Payment, actor=None) -> list[PaymentAttempt]:
    """Record the failed first charge and schedule the policy's retries. The subscription
    becomes past due; after a hard decline there are no retries and the policy's final action
    runs at once. Safe to call twice: attempts are unique."""
    policy = DunningPolicy.load()
    organization = Organization.load()
    today = billing_today(organization)
    with transaction.atomic():
        _attempt, created = PaymentAttempt.objects.get_or_create(
            invoice=invoice,
            attempt_number=0,
            defaults={
                "subscription": invoice.subscription,
                "scheduled_for": payment.created_at,
                "status": PaymentAttemptStatus.FAILED,
                "payment": payment,
                "decline_kind": payment.decline_kind,
                "attempted_at": payment.processed_at,
            },
        )
        if not created:
            return list(invoice.payment_attempts.order_by("attempt_number"))
        if payment.decline_kind != DeclineKind.HARD:
            PaymentAttempt.objects.bulk_create(
                PaymentAttempt(
                    invoice=invoice,
                    subscription=invoice.subscription,
                    attempt_number=number,
                    scheduled_for=start_of_day(
                        today + datetime.timedelta(days=days), organization.zone
                    ),
                )
                for number, days in enumerate(policy.retry_days, start=1)
            )
        if invoice.subscription_id:
            subscription = Subscription.objects.select_for_update().get(pk=invoice.subscription_id)
            if can_transition("subscription", subscription.status, SubscriptionStatus.PAST_DUE):
                before = subscription.status
                subscription.status = SubscriptionStatus.PAST_DUE
                subscription.save(update_fields=["status", "updated_at"])
                event_record(
                    kind="subscription.past_due",
                    description=f"Payment for invoice {invoice.number} failed; retries scheduled"
                    if payment.decline_kind != DeclineKind.HARD
                    else f"Payment for invoice {invoice.number} failed (card refused; no retries)",
                    actor=actor,
                    subscription=subscription,
                    invoice=invoice,
                    payment=payment,
                    before={"status": before},
                    after={"status": subscription.status},
                )
        if payment.decline_kind == DeclineKind.HARD:
            # No retry can succeed on a lost or stolen card: the policy decides now, instead of
            # leaving the subscription past due and charging the same card next term.
            dunning_final_action(invoice=invoice, actor=actor)
    return list(invoice.payment_attempts.order_by("attempt_number"))


def charge_failed(payment: Payment) -> bool:
    return payment.status == PaymentStatus.FAILED


def dunning_retry(*, attempt: PaymentAttempt, actor=None) -> PaymentAttempt:
    """Run one scheduled retry (a job; safe to rerun: the charge's key is fixed per attempt).

    Paid → the invoice settles and the subscription is live again. Declined → the customer is
    emailed; after a hard decline, or when no retry is left, the policy's final action runs.
    """
    from billing.selectors import invoice_balance
    from billing.services.payments import payment_collect
    from billing.services.subscriptions import invoice_attempt_key

    with transaction.atomic():
        attempt = (
            PaymentAttempt.objects.select_for_update().select_related("invoice").get(pk=attempt.pk)
        )
        if attempt.status != PaymentAttemptStatus.SCHEDULED:
            return attempt
        invoice = attempt.invoice
        method = _retry_method(invoice)
        if invoice.status != InvoiceStatus.OPEN or invoice_balance(invoice)[2] <= 0:
            return _attempt_close(attempt, PaymentAttemptStatus.SKIPPED)
        if method is None:
            # Nothing to charge: no retry can help, so the policy decides now.
            _attempt_close(attempt, PaymentAttemptStatus.SKIPPED)
            _skip_remaining(invoice)
            dunning_final_action(invoice=invoice, actor=actor)
            return attempt
    try:
        payment = payment_collect(
            payer=invoice.customer,
            invoices=[invoice],
            method=method,
            idempotency_key=invoice_attempt_key(invoice, attempt.attempt_number),
            actor=actor,
        )
    except PaymentInProgress:
        return attempt  # someone is paying it right now; the next tick looks again
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if payment.status == PaymentStatus.SUCCEEDED and attempt.status in (
            PaymentAttemptStatus.SCHEDULED,
            PaymentAttemptStatus.SKIPPED,
        ):
            # Our own charge settled the invoice, and settling skips the attempts still
            # scheduled — this one included. It is the attempt that succeeded.
            attempt.payment = payment
            return _attempt_close(attempt, PaymentAttemptStatus.SUCCEEDED)
        if attempt.status != PaymentAttemptStatus.SCHEDULED:
            return attempt
        attempt.payment = payment
        if payment.status != PaymentStatus.FAILED:
            # Unknown outcome: stays scheduled; the rerun reconciles by the same key.
            attempt.save(update_fields=["payment"])
            return attempt
        attempt.decline_kind = payment.decline_kind
        _attempt_close(attempt, PaymentAttemptStatus.FAILED)
        events_record_many([_retry_failed_event(attempt, invoice, payment, actor)])
        if payment.decline_kind == DeclineKind.HARD:
            _skip_remaining(invoice)
        if not invoice.payment_attempts.filter(status=PaymentAttemptStatus.SCHEDULED).exists():
            dunning_final_action(invoice=invoice, actor=actor)
    return attempt


def _retry_failed_event(attempt: PaymentAttempt, invoice: Invoice, payment: Payment, actor):
    return event_build(
        kind="dunning.retry_failed",
        description=f"Retry {attempt.attempt_number} for invoice {invoice.number} failed: "
        f"{payment.failure_message or payment.failure_code}",
        actor=actor,
        customer_id=invoice.customer_id,
        invoice=invoice,
        subscription_id=invoice.subscription_id,
        payment=payment,
        after={"attempt": attempt.attempt_number, "decline_kind": payment.decline_kind},
    )


def dunning_retry_many(ids: Sequence[int], *, actor=None) -> tuple[Counter, list[int]]:
    """``dunning_retry`` for a batch of due attempts, set-based like the renewal batch: one
    transaction begins every charge, the gateway charges them concurrently, one transaction
    records the outcomes and closes the attempts. Returns the counts (``dunning_<status>``)
    and the attempts left to ``dunning_retry`` one by one: those with no card on the
    subscription, a payment already in flight, or a charge already begun under the attempt's
    key (a rerun after a crash, which reconciles by that key) — and all of them if the batch's
    first step fails."""
    from billing.selectors import invoices_with_amounts
    from billing.services.payments import (
        CardCharge,
        payments_begin_many,
        payments_charge_many,
        payments_record_results_many,
    )
    from billing.services.subscriptions import invoice_attempt_key

    counts: Counter = Counter()
    one_by_one: list[int] = []
    try:
        with transaction.atomic():
            attempts = list(
                PaymentAttempt.objects.select_for_update(of=("self",), skip_locked=True)
                .select_related("invoice__customer", "invoice__subscription__payment_method")
                .filter(pk__in=ids, status=PaymentAttemptStatus.SCHEDULED)
                .order_by("pk")
            )
            if len(attempts) < len(ids):
                counts["dunning_not_due"] += len(ids) - len(attempts)
            invoice_ids = [a.invoice_id for a in attempts]
            balances = dict(
                invoices_with_amounts(Invoice.objects.filter(pk__in=invoice_ids)).values_list(
                    "pk", "balance_due"
                )
            )
            locked = set(
                InvoicePaymentLock.objects.filter(invoice__in=invoice_ids).values_list(
                    "invoice_id", flat=True
                )
            )
            keys = {a.pk: invoice_attempt_key(a.invoice, a.attempt_number) for a in attempts}
            begun = set(
                Payment.objects.filter(idempotency_key__in=keys.values()).values_list(
                    "idempotency_key", flat=True
                )
            )
            now = timezone.now()
            skipped, charging = [], []
            for attempt in sorted(attempts, key=lambda a: (a.invoice_id, a.attempt_number)):
                invoice = attempt.invoice
                subscription = invoice.subscription
                if invoice.status != InvoiceStatus.OPEN or balances[invoice.pk] <= 0:
                    attempt.status, attempt.attempted_at = PaymentAttemptStatus.SKIPPED, now
                    skipped.append(attempt)
                elif (
                    subscription is None
                    or subscription.payment_method is None
                    or invoice.pk in locked
                    or keys[attempt.pk] in begun
                ):
                    one_by_one.append(attempt.pk)
                else:
                    charging.append(attempt)
                    # A later attempt of the same invoice due too (a run catching up) comes
                    # after this one's outcome, one by one, as dunning_retry would take it.
                    locked.add(invoice.pk)
            if skipped:
                bulk_update_rows(skipped, ["status", "attempted_at"])
                counts["dunning_skipped"] += len(skipped)
            payments = payments_begin_many(
                [
                    CardCharge(
                        invoice=a.invoice,
                        amount=balances[a.invoice_id],
                        method=a.invoice.subscription.payment_method,
                        idempotency_key=keys[a.pk],
                    )
                    for a in charging
                ],
                actor=actor,
            )
    except Exception:
        logger.exception("dunning batch of %s failed; retrying one by one", len(ids))
        return Counter(), list(ids)
    if not payments:
        return counts, one_by_one
    try:
        results = payments_charge_many(payments)
        recorded = payments_record_results_many(payments, results, actor=actor)
    except Exception:
        # The payments stay pending; the attempts stay scheduled. The reconciliation job
        # settles the payments by key, and the next retry run finds them by the same key.
        logger.exception("dunning batch: %s charges left pending for reconciliation", len(payments))
        counts["dunning_scheduled"] += len(payments)
        return counts, one_by_one
    counts.update(_close_attempts(charging, recorded, actor))
    return counts, one_by_one


def _close_attempts(attempts: list[PaymentAttempt], payments: list[Payment], actor) -> Counter:
    """Record each attempt's outcome (as ``dunning_retry`` does after its charge); the policy's
    final action runs for the invoices left without a scheduled retry."""
    counts: Counter = Counter()
    with transaction.atomic():
        # The batch's own objects, brought up to date with the rows (settling a paid invoice
        # skipped its scheduled attempts meanwhile): four columns read, not 500 rows rebuilt.
        fresh = {a.pk: a for a in attempts}
        for pk, status, attempted_at, payment_id, decline_kind in (
            PaymentAttempt.objects.select_for_update()
            .filter(pk__in=list(fresh))
            .values_list("pk", "status", "attempted_at", "payment_id", "decline_kind")
        ):
            current = fresh[pk]
            current.status, current.attempted_at = status, attempted_at
            current.payment_id, current.decline_kind = payment_id, decline_kind
        now = timezone.now()
        closed, events, finals = [], [], []
        for attempt, payment in zip(attempts, payments, strict=True):
            current = fresh[attempt.pk]
            succeeded = payment.status == PaymentStatus.SUCCEEDED
            if not (
                current.status == PaymentAttemptStatus.SCHEDULED
                or (succeeded and current.status == PaymentAttemptStatus.SKIPPED)
            ):
                counts[f"dunning_{current.status}"] += 1
                continue
            current.payment = payment
            if succeeded:
                # Our own charge settled the invoice, which skipped the attempts still
                # scheduled — this one included. It is the attempt that succeeded.
                current.status, current.attempted_at = PaymentAttemptStatus.SUCCEEDED, now
            elif payment.status == PaymentStatus.FAILED:
                current.status, current.attempted_at = PaymentAttemptStatus.FAILED, now
                current.decline_kind = payment.decline_kind
                events.append(_retry_failed_event(current, attempt.invoice, payment, actor))
                finals.append((attempt.invoice, payment))
            # Unknown outcome: stays scheduled with its payment; the rerun reconciles by key.
            closed.append(current)
            counts[f"dunning_{current.status}"] += 1
        bulk_update_rows(closed, ["status", "attempted_at", "payment", "decline_kind"])
        events_record_many(events)
        # A hard decline: no retry can succeed (see dunning_retry).
        PaymentAttempt.objects.filter(
            invoice__in=[i for i, p in finals if p.decline_kind == DeclineKind.HARD],
            status=PaymentAttemptStatus.SCHEDULED,
        ).update(status=PaymentAttemptStatus.SKIPPED)
        still_scheduled = set(
            PaymentAttempt.objects.filter(
                invoice__in=[i for i, _ in finals], status=PaymentAttemptStatus.SCHEDULED
            ).values_list("invoice_id", flat=True)
        )
        for invoice, _payment in finals:
            if invoice.pk not in still_scheduled:
                dunning_final_action(invoice=invoice, actor=actor)
    return counts


def _retry_method(invoice: Invoice):
    subscription = invoice.subscription
    if subscription is not None and subscription.payment_method_id:
        return subscription.payment_method
    return invoice.customer.payment_methods.filter(is_default=True).first()


def _attempt_close(attempt: PaymentAttempt, status: str) -> PaymentAttempt:
    attempt.status = status
    attempt.attempted_at = timezone.now()
    attempt.save(update_fields=["status", "attempted_at", "payment", "decline_kind"])
    return attempt


def _skip_remaining(invoice: Invoice) -> None:
    invoice.payment_attempts.filter(status=PaymentAttemptStatus.SCHEDULED).update(
        status=PaymentAttemptStatus.SKIPPED
    )


def dunning_final_action(*, invoice: Invoice, actor=None) -> Subscription | None:
    """The last retry failed: cancel (in-term reactivation stays possible), mark unpaid, or move
    to the free plan voiding the unpaid invoice — as the merchant's policy says."""
    from billing.services.invoices import invoice_void

    if invoice.subscription_id is None:
        return None
    policy = DunningPolicy.load()
    organization = Organization.load()
    with transaction.atomic():
        subscription = (
            Subscription.objects.select_for_update()
            .select_related("plan")
            .get(pk=invoice.subscription_id)
        )
        if subscription.status not in (
            SubscriptionStatus.PAST_DUE,
            SubscriptionStatus.LIVE,
            SubscriptionStatus.NON_RENEWING,
        ):
            return subscription
        action = policy.final_action
        free_plan = organization.free_plan
        if action == DunningFinalAction.MOVE_TO_FREE_PLAN and (
            free_plan is None or not free_plan.active
        ):
            action = DunningFinalAction.CANCEL  # no free plan to move to
        before = {"status": subscription.status, "plan": subscription.plan.code}
        if action == DunningFinalAction.CANCEL:
            subscription.status = _checked(subscription.status, SubscriptionStatus.CANCELLED)
            subscription.cancelled_at = timezone.now()
            subscription.cancel_reason = CancelReason.DUNNING
            subscription.cancel_at = None
            subscription.save(
                update_fields=["status", "cancelled_at", "cancel_reason", "cancel_at", "updated_at"]
            )
            kind, text = "subscription.cancelled", "Cancelled after the last payment retry failed"
        elif action == DunningFinalAction.MARK_UNPAID:
            subscription.status = _checked(subscription.status, SubscriptionStatus.UNPAID)
            subscription.save(update_fields=["status", "updated_at"])
            kind, text = "subscription.unpaid", "Marked unpaid after the last payment retry failed"
        else:
            invoice_void(
                invoice=invoice, actor=actor, reason="moved to the free plan after failed payments"
            )
            subscription.status = _checked(subscription.status, SubscriptionStatus.LIVE)
            subscription.plan = free_plan
            subscription.save(update_fields=["status", "plan", "updated_at"])
            subscription.addons.all().delete()
            kind, text = (
                "subscription.moved_to_free_plan",
                f"Moved to {free_plan.name} after failed payments",
            )
        event_record(
            kind=kind,
            description=text,
            actor=actor,
            subscription=subscription,
            invoice=invoice,
            before=before,
            after={"status": subscription.status, "plan": subscription.plan.code},
        )
    return subscription


def _checked(old: str, new: str) -> str:
    from billing.lifecycle import assert_transition

    if old != new:
        assert_transition("subscription", old, new)
    return new
