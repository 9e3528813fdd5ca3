"""Dunning: what happens after an automatic charge fails, per the merchant's policy (rule 11)."""

import datetime

from django.db import transaction

from billing.clock import billing_today
from billing.enums import DeclineKind, PaymentAttemptStatus, PaymentStatus, SubscriptionStatus
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
    """Record the failed first charge and schedule the policy's retries (none after a hard
    decline). The subscription becomes past due. Safe to call twice: attempts are unique."""
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
    return list(invoice.payment_attempts.order_by("attempt_number"))


def charge_failed(payment: Payment) -> bool:
    return payment.status == PaymentStatus.FAILED
