"""Trial ends through the job (DESIGN rule 8), each branch, each safe to run twice."""

import datetime
from decimal import Decimal

import pytest

from billing.enums import CancelReason, InvoiceStatus, SubscriptionStatus
from billing.models import Event, Invoice, PaymentAttempt, PaymentMethod
from billing.services.invoices import invoice_create_one_time
from billing.services.payments import payment_record_offline
from billing.services.subscriptions import invoice_attempt_key
from tests.factories import PlanFactory
from tests.jobs.conftest import FAILING_CARD, GOOD_CARD, ledger_count, new_subscription, reload

pytestmark = pytest.mark.django_db

D = datetime.date
START, TRIAL_END = D(2027, 3, 1), D(2027, 3, 15)
S = SubscriptionStatus


@pytest.fixture
def trial_plan():
    return PlanFactory(price=Decimal("30.00"), trial_days=14)


def in_trial(travel, plan, **kwargs):
    travel(START)
    subscription = new_subscription(plan=plan, **kwargs)
    assert subscription.status == S.IN_TRIAL
    assert subscription.trial_end == TRIAL_END
    return subscription


def test_trial_end_charge_succeeds_live_and_paid(organization, travel, run_day, trial_plan):
    subscription = in_trial(travel, trial_plan, card=GOOD_CARD)

    out_before = run_day(TRIAL_END - datetime.timedelta(days=1))
    out = run_day(TRIAL_END)
    run_day(TRIAL_END)

    assert "trial_" not in out_before
    assert "trial_live_charged" in out
    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    assert (subscription.current_term_start, subscription.current_term_end) == (
        D(2027, 3, 15),
        D(2027, 4, 15),
    )
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.total == Decimal("30.00")
    assert ledger_count(invoice_attempt_key(invoice)) == 1
    assert ledger_count() == 1


def test_trial_end_charge_fails_expired_and_invoice_voided(
    organization, travel, run_day, trial_plan
):
    subscription = in_trial(travel, trial_plan, card=FAILING_CARD)

    out = run_day(TRIAL_END)
    run_day(TRIAL_END + datetime.timedelta(days=1))

    assert "trial_expired_charge_failed" in out
    subscription = reload(subscription)
    assert subscription.status == S.EXPIRED
    assert subscription.cancel_reason == CancelReason.TRIAL_ENDED
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    assert invoice.status == InvoiceStatus.VOID
    assert not PaymentAttempt.objects.filter(status="scheduled").exists()  # no dunning
    assert ledger_count() == 1  # the one declined attempt, never repeated


def test_trial_end_without_auto_charge_invoice_with_payment_terms_and_live(
    organization, travel, run_day, trial_plan
):
    subscription = in_trial(travel, trial_plan, card=None)
    assert not subscription.auto_charge

    out = run_day(TRIAL_END)
    run_day(TRIAL_END)

    assert "trial_live" in out
    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.issue_date == TRIAL_END
    assert invoice.due_date == TRIAL_END + datetime.timedelta(days=organization.payment_terms_days)
    assert ledger_count() == 0


def test_trial_end_charge_fails_free_plan_fallback_keeps_history_card_and_other_invoices(
    organization, travel, run_day, trial_plan
):
    free_plan = PlanFactory(free=True, code="free", name="Free")
    organization.free_plan_fallback = True
    organization.free_plan = free_plan
    organization.save()
    subscription = in_trial(travel, trial_plan, card=FAILING_CARD)
    customer = subscription.customer
    # Earlier history of the customer, which the fallback must leave alone.
    paid = invoice_create_one_time(
        customer=customer, description="Onboarding", unit_price=Decimal("50.00")
    )
    payment_record_offline(
        customer=customer, amount=Decimal("50.00"), mode="bank_transfer", invoices=[paid]
    )
    still_open = invoice_create_one_time(
        customer=customer, description="Training", unit_price=Decimal("80.00")
    )
    events_before = set(Event.objects.filter(customer=customer).values_list("pk", flat=True))

    out = run_day(TRIAL_END)
    run_day(TRIAL_END)

    assert "trial_live_charge_failed" in out
    subscription = reload(subscription)
    assert subscription.status == S.LIVE
    assert subscription.plan == free_plan
    assert (subscription.current_term_start, subscription.current_term_end) == (
        D(2027, 3, 15),
        D(2027, 4, 15),
    )
    trial_invoice = Invoice.objects.get(subscription=subscription)
    assert trial_invoice.status == InvoiceStatus.VOID  # the unpaid trial invoice only
    assert reload(paid).status == InvoiceStatus.PAID
    assert reload(still_open).status == InvoiceStatus.OPEN
    assert Invoice.objects.filter(customer=customer, status=InvoiceStatus.VOID).count() == 1
    assert PaymentMethod.objects.filter(customer=customer).count() == 1  # the card is kept
    events_after = set(Event.objects.filter(customer=customer).values_list("pk", flat=True))
    assert events_before < events_after  # history kept, the move recorded
    assert Event.objects.filter(
        subscription=subscription, kind="subscription.moved_to_free_plan"
    ).exists()

    # The free plan renews without charging the card.
    charges = ledger_count()
    run_day(D(2027, 4, 15))
    renewal = Invoice.objects.get(subscription=subscription, period_start=D(2027, 4, 15))
    assert renewal.total == Decimal("0.00")
    assert renewal.status == InvoiceStatus.PAID
    assert ledger_count() == charges
