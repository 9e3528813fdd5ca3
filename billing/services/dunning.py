"""Dunning: what happens after an automatic charge fails, per the merchant's policy (rule 11)."""

import datetime

from django.db import transaction
from django.utils import timezone

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
    Organization,
    Payment,
    PaymentAttempt,
    Subscription,
)
from billing.periods import start_of_day
from billing.services.events import event_record


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
        event_record(
            kind="dunning.retry_failed",
            description=f"Retry {attempt.attempt_number} for invoice {invoice.number} failed: "
            f"{payment.failure_message or payment.failure_code}",
            actor=actor,
            invoice=invoice,
            subscription=invoice.subscription,
            payment=payment,
            after={"attempt": attempt.attempt_number, "decline_kind": payment.decline_kind},
        )
        if payment.decline_kind == DeclineKind.HARD:
            _skip_remaining(invoice)
        if not invoice.payment_attempts.filter(status=PaymentAttemptStatus.SCHEDULED).exists():
            dunning_final_action(invoice=invoice, actor=actor)
    return attempt


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
