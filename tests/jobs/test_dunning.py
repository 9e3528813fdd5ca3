"""Dunning through daily billing runs (DESIGN rule 11): a failed renewal is retried on the
policy's days, each failure emails the customer, the last one triggers the final action; paying
by any route stops it; a hard decline is never retried.
"""

import datetime
from decimal import Decimal

import pytest
from django.core import mail

from billing.enums import (
    CancelReason,
    DeclineKind,
    DunningFinalAction,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.models import DunningPolicy, Invoice, Notification, PaymentAttempt
from billing.services.payments import new_idempotency_key, payment_collect, payment_record_offline
from billing.services.subscriptions import (
    invoice_attempt_key,
    reactivation_is_in_term,
    subscription_reactivate,
)
from tests.factories import PlanFactory
from tests.jobs.conftest import (
    FAILING_CARD,
    GOOD_CARD,
    LOST_CARD,
    add_card,
    ledger_count,
    new_subscription,
    outcomes,
    reload,
)

pytestmark = pytest.mark.django_db

D = datetime.date
S = SubscriptionStatus
A = PaymentAttemptStatus
RENEWAL = D(2027, 2, 10)
RETRY_DAYS = [D(2027, 2, 11), D(2027, 2, 13), D(2027, 2, 15), D(2027, 2, 17)]
TEN_DAYS = [RENEWAL + datetime.timedelta(days=n) for n in range(1, 11)]


def policy(final_action: str = DunningFinalAction.CANCEL, **fields) -> DunningPolicy:
    """The merchant's policy, saved as the admin saves it (which refreshes the cached row)."""
    dunning = DunningPolicy.load()
    dunning.retry_days = [1, 3, 5, 7]
    dunning.final_action = final_action
    for name, value in fields.items():
        setattr(dunning, name, value)
    dunning.save()
    return dunning


def failed_renewal(travel, run_day, card: str = FAILING_CARD):
    """A subscription paid on Jan 10 whose card then fails: the Feb 10 renewal is declined."""
    travel(D(2027, 1, 10))
    subscription = new_subscription()
    add_card(subscription.customer, card, use_for_subscriptions=True, make_default=True)
    out = run_day(RENEWAL)
    assert outcomes(out)["renewed_charge_failed"] == 1
    invoice = Invoice.objects.get(subscription=subscription, period_start=RENEWAL)
    return reload(subscription), invoice


def attempts(invoice) -> dict[int, str]:
    return dict(
        PaymentAttempt.objects.filter(invoice=invoice).values_list("attempt_number", "status")
    )


def failure_emails(customer) -> list:
    return [
        m
        for m in mail.outbox
        if customer.email in m.to and "payment" in m.subject and "failed" in m.subject
    ]


def test_dunning_retries_exactly_on_policy_days_each_emails_then_cancels_in_term(
    organization, travel, run_day
):
    policy(DunningFinalAction.CANCEL)
    subscription, invoice = failed_renewal(travel, run_day)
    assert subscription.status == S.PAST_DUE
    assert attempts(invoice) == {
        0: A.FAILED,
        1: A.SCHEDULED,
        2: A.SCHEDULED,
        3: A.SCHEDULED,
        4: A.SCHEDULED,
    }

    retried_on: dict[int, datetime.date] = {}
    for day in TEN_DAYS:
        before = attempts(invoice)
        run_day(day)
        for number, status in attempts(invoice).items():
            if before[number] == A.SCHEDULED and status != A.SCHEDULED:
                retried_on[number] = day

    assert retried_on == dict(enumerate(RETRY_DAYS, start=1))
    assert attempts(invoice) == dict.fromkeys(range(5), A.FAILED)
    for number in range(5):
        assert ledger_count(invoice_attempt_key(invoice, number)) == 1
    assert ledger_count() == 6  # January's charge, the renewal, four retries — nothing else
    # One email per failure (the renewal and each retry), each sent once, to the customer.
    notifications = Notification.objects.filter(
        customer=subscription.customer, kind="payment_failed"
    )
    assert notifications.count() == 5
    assert all(n.sent_at is not None for n in notifications)
    emails = failure_emails(subscription.customer)
    assert len(emails) == 5
    assert all("/portal/" in m.body or "portal" in m.body.lower() for m in emails)
    # The final action: cancelled for dunning on the last retry's day, inside the paid-up term.
    subscription = reload(subscription)
    assert subscription.status == S.CANCELLED
    assert subscription.cancel_reason == CancelReason.DUNNING
    assert subscription.cancelled_at.date() == RETRY_DAYS[-1]
    assert subscription.current_term_end == D(2027, 3, 10) > RETRY_DAYS[-1]
    assert reactivation_is_in_term(subscription, RETRY_DAYS[-1])
    assert Notification.objects.filter(
        customer=subscription.customer, kind="subscription_cancelled"
    ).exists()

    # In-term reactivation: live again on the same billing date, no new invoice.
    invoices_before = Invoice.objects.count()
    subscription_reactivate(subscription=subscription, require_payment=False)
    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    assert subscription.current_term_end == D(2027, 3, 10)
    assert Invoice.objects.count() == invoices_before


def test_dunning_final_action_mark_unpaid_leaves_invoice_open_and_stops_renewing(
    organization, travel, run_day
):
    policy(DunningFinalAction.MARK_UNPAID)
    subscription, invoice = failed_renewal(travel, run_day)

    for day in TEN_DAYS:
        run_day(day)

    assert reload(subscription).status == S.UNPAID
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    charges = ledger_count()
    run_day(D(2027, 3, 10))  # an unpaid subscription is not renewed
    assert Invoice.objects.filter(subscription=subscription).count() == 2
    assert ledger_count() == charges


def test_dunning_final_action_free_plan_voids_the_unpaid_invoice(organization, travel, run_day):
    free_plan = PlanFactory(free=True, code="free", name="Free")
    organization.free_plan = free_plan
    organization.save()
    policy(DunningFinalAction.MOVE_TO_FREE_PLAN)
    subscription, invoice = failed_renewal(travel, run_day)
    first_invoice = Invoice.objects.get(subscription=subscription, period_start=D(2027, 1, 10))

    for day in TEN_DAYS:
        run_day(day)

    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    assert subscription.plan == free_plan
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID
    assert reload(first_invoice).status == InvoiceStatus.PAID  # only the unpaid one is voided
    assert ledger_count() == 6
    charges = ledger_count()
    run_day(D(2027, 3, 10))
    renewal = Invoice.objects.get(subscription=subscription, period_start=D(2027, 3, 10))
    assert renewal.total == Decimal("0.00")
    assert ledger_count() == charges


@pytest.mark.parametrize("route", ["offline", "new_card_retry", "card_now"])
def test_dunning_paid_by_any_route_stops_remaining_retries_and_subscription_live(
    organization, travel, run_day, route
):
    policy(DunningFinalAction.CANCEL)
    subscription, invoice = failed_renewal(travel, run_day)
    customer = subscription.customer
    run_day(RETRY_DAYS[0])  # retry 1 fails
    travel(D(2027, 2, 12))

    if route == "offline":
        payment_record_offline(
            customer=customer, amount=invoice.total, mode=PaymentMode.BANK_TRANSFER
        )
    elif route == "card_now":
        payment = payment_collect(
            payer=customer,
            invoices=[invoice],
            method=add_card(customer, GOOD_CARD),
            idempotency_key=new_idempotency_key(),
        )
        assert payment.status == PaymentStatus.SUCCEEDED
    else:  # the customer updates the card; the next retry (Feb 13) collects with it
        add_card(customer, GOOD_CARD, use_for_subscriptions=True, make_default=True)

    for day in TEN_DAYS[1:]:
        run_day(day)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    state = attempts(invoice)
    assert state[0] == state[1] == A.FAILED
    if route == "new_card_retry":
        assert state[2] == A.SUCCEEDED
        assert (state[3], state[4]) == (A.SKIPPED, A.SKIPPED)
    else:
        assert (state[2], state[3], state[4]) == (A.SKIPPED, A.SKIPPED, A.SKIPPED)
    # January, the renewal, retry 1, and the one successful charge if paid by card.
    assert ledger_count() == (3 if route == "offline" else 4)
    assert Notification.objects.filter(customer=customer, kind="payment_failed").count() == 2


def test_dunning_hard_decline_on_renewal_never_retried(organization, travel, run_day):
    policy(DunningFinalAction.CANCEL)
    subscription, invoice = failed_renewal(travel, run_day, card=LOST_CARD)

    for day in TEN_DAYS:
        run_day(day)

    assert attempts(invoice) == {0: A.FAILED}
    assert PaymentAttempt.objects.get(invoice=invoice).decline_kind == DeclineKind.HARD
    assert ledger_count() == 2  # January's charge and the declined renewal, no retry
    # No retry can help, so the policy's final action ran at once.
    assert reload(subscription).status == S.CANCELLED
    assert reload(subscription).cancel_reason == "dunning"
    assert invoice.status == InvoiceStatus.OPEN


def test_dunning_hard_decline_on_a_retry_skips_the_rest_and_takes_the_final_action(
    organization, travel, run_day
):
    policy(DunningFinalAction.CANCEL)
    subscription, invoice = failed_renewal(travel, run_day)
    run_day(RETRY_DAYS[0])
    add_card(subscription.customer, LOST_CARD, use_for_subscriptions=True, make_default=True)

    for day in TEN_DAYS[1:]:
        run_day(day)

    assert attempts(invoice) == {0: A.FAILED, 1: A.FAILED, 2: A.FAILED, 3: A.SKIPPED, 4: A.SKIPPED}
    assert ledger_count() == 4  # January, the renewal, retries 1 and 2
    subscription = reload(subscription)
    assert subscription.status == S.CANCELLED
    assert subscription.cancel_reason == CancelReason.DUNNING
    assert subscription.cancelled_at.date() == RETRY_DAYS[1]


def test_dunning_policy_without_emails_retries_silently(organization, travel, run_day):
    policy(DunningFinalAction.CANCEL, send_emails=False)
    subscription, _invoice = failed_renewal(travel, run_day)

    for day in TEN_DAYS:
        run_day(day)

    assert ledger_count() == 6
    assert not Notification.objects.filter(kind="payment_failed").exists()
    assert failure_emails(subscription.customer) == []
