"""Subscription lifecycle through the services: create, start, trials, pause/resume, cancel,
reactivate, auto-charge, renew (month-end anchors, dunning, usage) — happy paths and refusals.

Everything runs against real PostgreSQL with the sandbox gateway; time is frozen with
time-machine and "today" is the organization's calendar date.
"""

import datetime
from decimal import Decimal

import pytest

from billing.enums import (
    AddonKind,
    CancelReason,
    ChangeTiming,
    CreditNoteReason,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.errors import InvalidTransition, NotAllowed, ValidationFailed
from billing.models import (
    CreditNote,
    DunningPolicy,
    Event,
    Invoice,
    Payment,
    PaymentAttempt,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    UsageRecord,
)
from billing.selectors import customer_credit_balance, invoice_balance
from billing.services.payment_methods import payment_method_add
from billing.services.payments import payment_record_offline
from billing.services.subscriptions import (
    ChangeRequest,
    subscription_cancel,
    subscription_cancel_undo,
    subscription_change,
    subscription_convert_trial,
    subscription_create,
    subscription_end_trial,
    subscription_extend_trial,
    subscription_pause,
    subscription_pause_schedule,
    subscription_pause_unschedule,
    subscription_reactivate,
    subscription_renew,
    subscription_resume,
    subscription_set_auto_charge,
    subscription_start,
    usage_record,
)
from tests.factories import AddonFactory, CouponFactory, CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db

S = SubscriptionStatus
D = datetime.date
GOOD_CARD = "4242424242424242"
FAILING_CARD = "4000000000000341"  # saves fine, every charge is declined (soft)
LOST_CARD = "4000000000009987"  # hard decline: never retried


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def travel(time_machine):
    """Freeze the clock at noon UTC of a day (the organization's time zone is UTC by default)."""

    def to(day: datetime.date, hour: int = 12) -> None:
        time_machine.move_to(
            datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.UTC),
            tick=False,
        )

    return to


def add_card(customer, number: str = GOOD_CARD, **kwargs):
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2030, cvc="123", **kwargs
    )


def new_customer(card: str | None = GOOD_CARD, **fields):
    customer = CustomerFactory(**fields)
    if card:
        add_card(customer, card)
    return customer


def reload(sub: Subscription) -> Subscription:
    return Subscription.objects.get(pk=sub.pk)


def event_kinds(sub: Subscription) -> list[str]:
    return list(
        Event.objects.filter(subscription=sub).order_by("id").values_list("kind", flat=True)
    )


def invoices_of(sub: Subscription) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=sub).order_by("id"))


START = D(2026, 4, 5)  # Apr 5 – May 5: a 30-day term


def live_subscription(travel, *, price="30.00", card=GOOD_CARD, start=START, **kwargs):
    """A live monthly subscription started (and paid) on ``start``."""
    travel(start)
    plan = PlanFactory(price=Decimal(price), **kwargs.pop("plan_fields", {}))
    customer = new_customer(card)
    return subscription_create(customer=customer, plan=plan, **kwargs).subscription


# ----------------------------------------------------------------------------- create
def test_create_with_trial_is_in_trial_without_invoice(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), trial_days=14, setup_fee=Decimal("10.00"))
    customer = new_customer()

    outcome = subscription_create(customer=customer, plan=plan)

    sub = reload(outcome.subscription)
    assert sub.status == S.IN_TRIAL
    assert sub.trial_start == D(2026, 3, 10)
    assert sub.trial_end == D(2026, 3, 24)
    assert sub.anchor_date == D(2026, 3, 24)
    assert sub.current_term_start is None and sub.current_term_end is None
    assert sub.auto_charge and sub.payment_method is not None
    assert outcome.invoice is None and outcome.payment is None
    assert not Invoice.objects.exists() and not Payment.objects.exists()
    assert outcome.summary.next_billing_date == D(2026, 3, 24)
    assert event_kinds(sub) == ["subscription.created"]


def test_create_trial_false_on_trial_plan_goes_live_now(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), trial_days=14)

    outcome = subscription_create(customer=new_customer(), plan=plan, trial=False)

    assert reload(outcome.subscription).status == S.LIVE
    assert outcome.invoice.total == Decimal("30.00")


def test_create_future_start_is_future_then_starts_live_with_setup_fee_once(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), setup_fee=Decimal("15.00"))
    customer = new_customer()

    outcome = subscription_create(customer=customer, plan=plan, start_date=D(2026, 3, 20))
    sub = reload(outcome.subscription)
    assert sub.status == S.FUTURE
    assert sub.start_date == D(2026, 3, 20)
    assert sub.current_term_start is None
    assert outcome.invoice is None and not Invoice.objects.exists()

    with pytest.raises(InvalidTransition):
        subscription_start(subscription=sub)  # not due yet
    assert reload(sub).status == S.FUTURE

    travel(D(2026, 3, 20))
    started = subscription_start(subscription=sub)
    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 3, 20),
        D(2026, 3, 20),
        D(2026, 4, 20),
    )
    first = started.invoice
    first.refresh_from_db()
    assert [(line.kind, line.amount) for line in first.lines.all()] == [
        (InvoiceLineKind.PLAN, Decimal("30.00")),
        (InvoiceLineKind.SETUP_FEE, Decimal("15.00")),
    ]
    assert first.total == Decimal("45.00")
    assert first.status == InvoiceStatus.PAID
    assert started.payment.status == PaymentStatus.SUCCEEDED
    assert started.payment.amount == Decimal("45.00")
    assert "subscription.started" in event_kinds(sub)

    with pytest.raises(InvalidTransition):
        subscription_start(subscription=sub)  # already started

    travel(D(2026, 4, 20))
    renewal = subscription_renew(subscription=sub).invoice
    assert [line.kind for line in renewal.lines.all()] == [InvoiceLineKind.PLAN]
    assert renewal.total == Decimal("30.00")


def test_create_future_start_on_trial_plan_starts_in_trial(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), trial_days=7)
    sub = subscription_create(
        customer=new_customer(), plan=plan, start_date=D(2026, 3, 12)
    ).subscription
    assert reload(sub).status == S.FUTURE

    travel(D(2026, 3, 12))
    subscription_start(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.IN_TRIAL
    assert (sub.trial_start, sub.trial_end, sub.anchor_date) == (
        D(2026, 3, 12),
        D(2026, 3, 19),
        D(2026, 3, 19),
    )
    assert not Invoice.objects.exists()


def test_create_future_start_trial_false_on_trial_plan_starts_live(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), trial_days=7)
    outcome = subscription_create(
        customer=new_customer(), plan=plan, start_date=D(2026, 3, 12), trial=False
    )
    assert outcome.summary.next_billing_date == D(2026, 3, 12)

    travel(D(2026, 3, 12))
    started = subscription_start(subscription=outcome.subscription)

    sub = reload(outcome.subscription)
    assert (sub.status, sub.trial_end) == (S.LIVE, None)
    assert started.invoice.total == Decimal("30.00")


def test_create_future_start_with_trial_previews_first_billing_after_trial(organization, travel):
    travel(D(2026, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"), trial_days=7)

    outcome = subscription_create(customer=new_customer(), plan=plan, start_date=D(2026, 3, 12))

    assert outcome.summary.next_billing_date == D(2026, 3, 19)
    assert reload(outcome.subscription).status == S.FUTURE


def test_create_live_now_issues_invoice_and_charges_card(organization, travel):
    travel(D(2026, 4, 5))
    plan = PlanFactory(price=Decimal("30.00"), setup_fee=Decimal("10.00"))
    addon = AddonFactory(price=Decimal("5.00"))
    customer = new_customer()

    outcome = subscription_create(customer=customer, plan=plan, addons={addon.code: 2})

    sub = reload(outcome.subscription)
    assert sub.status == S.LIVE
    assert (sub.start_date, sub.anchor_date) == (D(2026, 4, 5), D(2026, 4, 5))
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 4, 5), D(2026, 5, 5))
    assert SubscriptionAddon.objects.get(subscription=sub).quantity == 2
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.kind == InvoiceKind.RECURRING
    assert (invoice.period_start, invoice.period_end) == (D(2026, 4, 5), D(2026, 5, 5))
    assert [(line.kind, line.quantity, line.amount) for line in invoice.lines.all()] == [
        (InvoiceLineKind.PLAN, Decimal(1), Decimal("30.00")),
        (InvoiceLineKind.ADDON, Decimal(2), Decimal("10.00")),
        (InvoiceLineKind.SETUP_FEE, Decimal(1), Decimal("10.00")),
    ]
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (
        Decimal("50.00"),
        Decimal("0.00"),
        Decimal("50.00"),
    )
    assert invoice.issue_date == D(2026, 4, 5)
    assert invoice.status == InvoiceStatus.PAID
    payment = Payment.objects.get(customer=customer)
    assert outcome.payment == payment
    assert (payment.status, payment.amount) == (PaymentStatus.SUCCEEDED, Decimal("50.00"))
    assert invoice_balance(invoice) == (Decimal("50.00"), Decimal("0.00"), Decimal("0.00"))
    assert event_kinds(sub) == ["subscription.created", "invoice.issued", "invoice.paid"]
    assert {"payment.started", "payment.succeeded"} <= set(
        Event.objects.filter(customer=customer).values_list("kind", flat=True)
    )


def test_create_live_with_once_coupon_previews_next_amount_without_it(organization, travel):
    travel(D(2026, 4, 5))
    coupon = CouponFactory(once=True, percent_off=Decimal("50"))
    plan = PlanFactory(price=Decimal("30.00"))

    outcome = subscription_create(customer=new_customer(), plan=plan, coupon_code=coupon.code)

    assert outcome.invoice.total == Decimal("15.00")
    assert outcome.summary.next_amount == Decimal("30.00")
    travel(D(2026, 5, 5))
    assert subscription_renew(subscription=outcome.subscription).invoice.total == Decimal("30.00")


def test_create_without_card_leaves_invoice_open_and_auto_charge_off(organization, travel):
    travel(D(2026, 4, 5))
    plan = PlanFactory(price=Decimal("30.00"))

    outcome = subscription_create(customer=new_customer(card=None), plan=plan)

    sub = reload(outcome.subscription)
    assert sub.status == S.LIVE and sub.auto_charge is False
    assert outcome.invoice.status == InvoiceStatus.OPEN
    assert outcome.invoice.due_date == D(2026, 4, 19)  # organization's 14 days
    assert not Payment.objects.exists()


def test_create_uses_the_organization_time_zone_for_today(organization, time_machine):
    organization.time_zone = "America/New_York"
    organization.save()
    # 03:00 UTC on Mar 1 is still Feb 28 in New York.
    time_machine.move_to(datetime.datetime(2026, 3, 1, 3, tzinfo=datetime.UTC), tick=False)
    plan = PlanFactory(price=Decimal("30.00"))

    sub = subscription_create(customer=new_customer(), plan=plan).subscription

    sub = reload(sub)
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 2, 28), D(2026, 3, 28))


def test_create_start_in_the_past_raises_validation_failed(organization, travel):
    travel(D(2026, 4, 5))
    with pytest.raises(ValidationFailed) as error:
        subscription_create(customer=new_customer(), plan=PlanFactory(), start_date=D(2026, 4, 4))
    assert error.value.field == "start_date"
    assert not Subscription.objects.exists()


def test_create_trial_on_plan_without_trial_raises_validation_failed(organization, travel):
    travel(D(2026, 4, 5))
    with pytest.raises(ValidationFailed) as error:
        subscription_create(customer=new_customer(), plan=PlanFactory(), trial=True)
    assert error.value.field == "plan"
    assert not Subscription.objects.exists()


def test_create_with_another_customers_card_raises_not_allowed(organization, travel):
    travel(D(2026, 4, 5))
    stranger_card = add_card(CustomerFactory())
    with pytest.raises(NotAllowed):
        subscription_create(
            customer=new_customer(), plan=PlanFactory(), payment_method=stranger_card
        )
    assert not Subscription.objects.exists() and not Invoice.objects.exists()


def test_create_inactive_plan_raises_validation_failed(organization, travel):
    travel(D(2026, 4, 5))
    with pytest.raises(ValidationFailed) as error:
        subscription_create(customer=new_customer(), plan=PlanFactory(inactive=True))
    assert error.value.field == "plan"
    assert not Subscription.objects.exists()


def test_create_plan_with_billing_cycles_bills_exactly_that_many_terms(organization, travel):
    sub = live_subscription(travel, plan_fields={"billing_cycles": 3})
    for day in (D(2026, 5, 5), D(2026, 6, 5), D(2026, 7, 5)):
        travel(day)
        subscription_renew(subscription=sub)

    assert len(invoices_of(sub)) == 3
    assert reload(sub).status == S.CANCELLED


# ----------------------------------------------------------------------------- trials
@pytest.fixture
def trial_plan(organization):
    return PlanFactory(price=Decimal("30.00"), trial_days=14, setup_fee=Decimal("10.00"))


def trial_subscription(travel, plan, *, card=GOOD_CARD, **kwargs) -> Subscription:
    travel(D(2026, 3, 10))
    return subscription_create(customer=new_customer(card), plan=plan, **kwargs).subscription


def test_convert_trial_now_ends_trial_today_invoices_and_charges(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    travel(D(2026, 3, 15))

    outcome = subscription_convert_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert sub.trial_end == D(2026, 3, 15)
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 3, 15),
        D(2026, 3, 15),
        D(2026, 4, 15),
    )
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.total == Decimal("40.00")  # plan + setup fee
    assert invoice.status == InvoiceStatus.PAID
    assert outcome.payment.status == PaymentStatus.SUCCEEDED
    assert outcome.payment.amount == Decimal("40.00")
    assert "subscription.trial_converted" in event_kinds(sub)


def test_convert_trial_not_in_trial_raises_invalid_transition(organization, travel):
    sub = live_subscription(travel)
    with pytest.raises(InvalidTransition):
        subscription_convert_trial(subscription=sub)
    assert len(invoices_of(sub)) == 1


def test_end_trial_before_trial_end_raises_invalid_transition(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    travel(D(2026, 3, 23))
    with pytest.raises(InvalidTransition):
        subscription_end_trial(subscription=sub)
    assert reload(sub).status == S.IN_TRIAL
    assert not Invoice.objects.exists()


def test_end_trial_auto_charge_good_card_goes_live_paid(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    travel(D(2026, 3, 24))

    outcome = subscription_end_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 3, 24),
        D(2026, 3, 24),
        D(2026, 4, 24),
    )
    invoice = Invoice.objects.get(subscription=sub)
    assert (invoice.period_start, invoice.period_end) == (D(2026, 3, 24), D(2026, 4, 24))
    assert invoice.total == Decimal("40.00")
    assert invoice.status == InvoiceStatus.PAID
    assert outcome.payment.status == PaymentStatus.SUCCEEDED
    assert "subscription.trial_ended" in event_kinds(sub)
    with pytest.raises(InvalidTransition):
        subscription_end_trial(subscription=sub)  # a rerun finds nothing to do
    assert Invoice.objects.filter(subscription=sub).count() == 1


def test_end_trial_declining_card_voids_invoice_and_expires(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan, card=FAILING_CARD)
    travel(D(2026, 3, 24))

    outcome = subscription_end_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.EXPIRED
    assert sub.cancel_reason == CancelReason.TRIAL_ENDED
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.status == InvoiceStatus.VOID
    assert outcome.payment.status == PaymentStatus.FAILED
    # A trial that was never paid is not dunned: it expires (and can be extended).
    assert not PaymentAttempt.objects.filter(status=PaymentAttemptStatus.SCHEDULED).exists()
    assert "subscription.expired" in event_kinds(sub)


def test_end_trial_without_auto_charge_invoices_with_terms_and_goes_live(
    organization, trial_plan, travel
):
    organization.payment_terms_days = 30
    organization.save()
    sub = trial_subscription(travel, trial_plan, auto_charge=False)
    assert reload(sub).auto_charge is False
    travel(D(2026, 3, 24))

    outcome = subscription_end_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert sub.current_term_end == D(2026, 4, 24)
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.issue_date == D(2026, 3, 24)
    assert invoice.due_date == D(2026, 4, 23)
    assert invoice.total == Decimal("40.00")
    assert outcome.payment is None and not Payment.objects.exists()


def test_end_trial_free_plan_fallback_moves_to_free_plan(organization, trial_plan, travel):
    free = PlanFactory(free=True, code="free", name="Free")
    organization.free_plan_fallback = True
    organization.free_plan = free
    organization.save()
    addon = AddonFactory(price=Decimal("5.00"))
    sub = trial_subscription(travel, trial_plan, card=FAILING_CARD, addons={addon.code: 1})
    travel(D(2026, 3, 24))

    outcome = subscription_end_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert sub.plan == free
    assert not SubscriptionAddon.objects.filter(subscription=sub).exists()
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 3, 24), D(2026, 4, 24))
    assert outcome.invoice.status == InvoiceStatus.VOID
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.VOID
    assert "subscription.moved_to_free_plan" in event_kinds(sub)


def test_end_trial_scheduled_cancellation_wins_no_invoice(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    travel(D(2026, 3, 24))

    subscription_end_trial(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.CANCELLED
    assert sub.cancel_reason == CancelReason.CUSTOMER
    assert not Invoice.objects.exists() and not Payment.objects.exists()


def test_extend_trial_expired_trial_is_back_in_trial_until_limit(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan, card=FAILING_CARD)
    travel(D(2026, 3, 24))
    subscription_end_trial(subscription=sub)
    travel(D(2026, 3, 26))

    subscription_extend_trial(subscription=sub, limit=1)

    sub = reload(sub)
    assert sub.status == S.IN_TRIAL
    assert sub.trial_extensions_used == 1
    assert sub.trial_end == D(2026, 4, 9)
    assert sub.anchor_date == D(2026, 4, 9)
    assert sub.cancel_reason == ""
    assert "subscription.trial_extended" in event_kinds(sub)

    travel(D(2026, 4, 9))
    subscription_end_trial(subscription=sub)
    assert reload(sub).status == S.EXPIRED
    with pytest.raises(NotAllowed):
        subscription_extend_trial(subscription=sub, limit=1)
    sub = reload(sub)
    assert (sub.status, sub.trial_extensions_used) == (S.EXPIRED, 1)


def test_end_trial_failed_charge_does_not_use_up_a_once_coupon(trial_plan, travel):
    coupon = CouponFactory(once=True, percent_off=Decimal("50"))
    sub = trial_subscription(travel, trial_plan, card=FAILING_CARD, coupon_code=coupon.code)
    travel(D(2026, 3, 24))
    subscription_end_trial(subscription=sub)
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 1
    subscription_extend_trial(subscription=sub, limit=1)
    subscription_set_auto_charge(subscription=sub, enabled=True, method=add_card(sub.customer))
    travel(D(2026, 4, 7))

    outcome = subscription_end_trial(subscription=sub)

    assert reload(sub).status == S.LIVE
    assert outcome.invoice.discount_total == Decimal("15.00")  # half of the 30.00 plan
    assert outcome.invoice.total == Decimal("25.00")  # + 10.00 setup fee, not discounted
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 0


def test_extend_trial_not_expired_raises_invalid_transition(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    with pytest.raises(InvalidTransition):
        subscription_extend_trial(subscription=sub, limit=3)
    assert reload(sub).trial_extensions_used == 0


def test_extend_trial_cancelled_by_customer_raises_invalid_transition(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    with pytest.raises(InvalidTransition):
        subscription_extend_trial(subscription=sub, limit=3)


def test_cancel_trial_now_cancels_without_invoice(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)
    travel(D(2026, 3, 12))

    outcome = subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)

    sub = reload(sub)
    assert sub.status == S.CANCELLED
    assert sub.cancelled_at is not None
    assert outcome.credit_note is None
    assert not Invoice.objects.exists() and not CreditNote.objects.exists()
    assert "subscription.cancelled" in event_kinds(sub)


def test_cancel_trial_at_trial_end_then_undo_converts_normally(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan)

    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END, reason_text="too pricey")
    sub = reload(sub)
    assert (sub.status, sub.cancel_at) == (S.IN_TRIAL, D(2026, 3, 24))
    assert sub.cancel_reason_text == "too pricey"

    subscription_cancel_undo(subscription=sub)
    sub = reload(sub)
    assert (sub.status, sub.cancel_at, sub.cancel_reason) == (S.IN_TRIAL, None, "")
    with pytest.raises(InvalidTransition):
        subscription_cancel_undo(subscription=sub)

    travel(D(2026, 3, 24))
    subscription_end_trial(subscription=sub)
    assert reload(sub).status == S.LIVE
    assert event_kinds(sub)[:3] == [
        "subscription.created",
        "subscription.cancel_scheduled",
        "subscription.cancel_unscheduled",
    ]


# ----------------------------------------------------------------------------- pause / resume
def test_pause_schedule_set_change_and_delete(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))

    subscription_pause_schedule(subscription=sub, pause_on=D(2026, 4, 20), resume_on=D(2026, 4, 25))
    sub = reload(sub)
    assert (sub.status, sub.pause_at, sub.resume_at) == (S.LIVE, D(2026, 4, 20), D(2026, 4, 25))

    subscription_pause_schedule(subscription=sub, pause_on=D(2026, 4, 22))
    sub = reload(sub)
    assert (sub.pause_at, sub.resume_at) == (D(2026, 4, 22), None)

    subscription_pause_unschedule(subscription=sub)
    sub = reload(sub)
    assert (sub.status, sub.pause_at, sub.resume_at) == (S.LIVE, None, None)
    with pytest.raises(InvalidTransition):
        subscription_pause_unschedule(subscription=sub)
    assert event_kinds(sub)[-3:] == [
        "subscription.pause_scheduled",
        "subscription.pause_scheduled",
        "subscription.pause_unscheduled",
    ]


@pytest.mark.parametrize(
    ("pause_on", "resume_on", "field"),
    [
        (D(2026, 4, 9), None, "pause_on"),
        (D(2026, 4, 20), D(2026, 4, 20), "resume_on"),
        (D(2026, 4, 20), D(2026, 4, 15), "resume_on"),
    ],
)
def test_pause_schedule_bad_dates_raise_validation_failed(
    organization, travel, pause_on, resume_on, field
):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    with pytest.raises(ValidationFailed) as error:
        subscription_pause_schedule(subscription=sub, pause_on=pause_on, resume_on=resume_on)
    assert error.value.field == field
    assert reload(sub).pause_at is None


def test_pause_schedule_today_pauses_now(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))

    subscription_pause_schedule(subscription=sub, pause_on=D(2026, 4, 10), resume_on=D(2026, 5, 1))

    sub = reload(sub)
    assert (sub.status, sub.paused_at, sub.resume_at) == (S.PAUSED, D(2026, 4, 10), D(2026, 5, 1))
    # While paused, only the resume date can move.
    subscription_pause_schedule(subscription=sub, pause_on=D(2026, 4, 10), resume_on=D(2026, 5, 3))
    assert reload(sub).resume_at == D(2026, 5, 3)


def test_pause_now_discards_scheduled_change(organization, travel):
    sub = live_subscription(travel)
    bigger = PlanFactory(price=Decimal("50.00"))
    travel(D(2026, 4, 10))
    subscription_change(
        subscription=sub, request=ChangeRequest(plan=bigger), timing=ChangeTiming.TERM_END
    )
    assert ScheduledChange.objects.filter(subscription=sub).exists()

    outcome = subscription_pause(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.PAUSED and sub.paused_at == D(2026, 4, 10)
    assert outcome.credit_note is None
    assert not ScheduledChange.objects.filter(subscription=sub).exists()
    assert "subscription.paused" in event_kinds(sub)


@pytest.mark.parametrize("status_action", ["pause", "cancel"])
def test_pause_not_live_raises_invalid_transition(organization, travel, status_action):
    sub = live_subscription(travel)
    if status_action == "pause":
        subscription_pause(subscription=sub)
    else:
        subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    before = reload(sub).status
    with pytest.raises(InvalidTransition):
        subscription_pause(subscription=sub)
    assert reload(sub).status == before


def test_pause_credit_unused_issues_credit_note_for_rest_of_term(organization, travel):
    organization.tax_rate = Decimal("10")
    organization.save()
    sub = live_subscription(travel)  # 30.00 + 3.00 tax, Apr 5 – May 5 (30 days)
    travel(D(2026, 4, 15))

    outcome = subscription_pause(subscription=sub, credit_unused=True)

    note = CreditNote.objects.get(subscription=sub)
    assert outcome.credit_note == note
    assert note.reason == CreditNoteReason.PAUSE
    assert note.amount == Decimal("22.00")  # 30 × 20/30 = 20.00, + 10 % tax
    assert outcome.summary.credit == Decimal("22.00")
    assert customer_credit_balance(sub.customer) == Decimal("22.00")


def test_renew_while_paused_bills_nothing(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 5, 5))

    assert subscription_renew(subscription=sub) is None
    assert len(invoices_of(sub)) == 1


def test_resume_before_billing_date_keeps_date_without_invoice(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 4, 20))

    outcome = subscription_resume(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 4, 5),
        D(2026, 4, 5),
        D(2026, 5, 5),
    )
    assert (sub.paused_at, sub.pause_at, sub.resume_at) == (None, None, None)
    assert outcome.invoice is None and len(invoices_of(sub)) == 1
    assert outcome.summary.next_billing_date == D(2026, 5, 5)
    assert "subscription.resumed" in event_kinds(sub)


def test_resume_after_billing_date_starts_new_term_with_invoice(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 5, 12))

    outcome = subscription_resume(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 5, 12),
        D(2026, 5, 12),
        D(2026, 6, 12),
    )
    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert (invoice.period_start, invoice.period_end) == (D(2026, 5, 12), D(2026, 6, 12))
    assert invoice.total == Decimal("30.00")
    assert invoice.status == InvoiceStatus.PAID
    assert outcome.payment.amount == Decimal("30.00")
    assert len(invoices_of(sub)) == 2


def test_resume_after_billing_date_declined_starts_dunning(organization, travel):
    sub = live_subscription(travel)
    add_card(sub.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 5, 12))

    outcome = subscription_resume(subscription=sub)

    assert outcome.invoice.status == InvoiceStatus.OPEN
    assert reload(sub).status == S.PAST_DUE
    assert PaymentAttempt.objects.filter(invoice=outcome.invoice).count() == 5


def test_resume_not_paused_raises_invalid_transition(organization, travel):
    sub = live_subscription(travel)
    with pytest.raises(InvalidTransition):
        subscription_resume(subscription=sub)


# ----------------------------------------------------------------------------- cancel
def test_cancel_now_leaves_unpaid_invoices_open_by_default(organization, travel):
    sub = live_subscription(travel, card=None)
    travel(D(2026, 4, 15))

    outcome = subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, reason_text="bye")

    sub = reload(sub)
    assert sub.status == S.CANCELLED
    assert sub.cancel_reason == CancelReason.CUSTOMER
    assert sub.cancel_reason_text == "bye"
    assert sub.cancelled_at is not None
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.OPEN
    assert outcome.credit_note is None and not CreditNote.objects.exists()
    assert event_kinds(sub)[-1] == "subscription.cancelled"


def test_cancel_now_void_unpaid_voids_open_invoices(organization, travel):
    sub = live_subscription(travel, card=None)
    travel(D(2026, 4, 15))

    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, void_unpaid=True)

    assert reload(sub).status == S.CANCELLED
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.VOID


def test_cancel_now_credit_unused_issues_prorated_credit_note(organization, travel):
    organization.tax_rate = Decimal("10")
    organization.save()
    sub = live_subscription(travel, price="300.00")
    assert Invoice.objects.get(subscription=sub).total == Decimal("330.00")
    travel(D(2026, 4, 15))

    outcome = subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, credit_unused=True)

    note = CreditNote.objects.get(subscription=sub)
    assert outcome.credit_note == note
    assert note.reason == CreditNoteReason.CANCELLATION
    assert note.amount == Decimal("220.00")  # 300 × 20/30 = 200.00 + 10 % tax
    assert outcome.summary.credit == note.amount
    assert customer_credit_balance(sub.customer) == Decimal("220.00")


def test_cancel_now_credit_unused_and_void_unpaid_credits_nothing_unpaid(organization, travel):
    sub = live_subscription(travel, card=None)  # the term's invoice is still open
    travel(D(2026, 4, 15))

    preview = subscription_cancel(
        subscription=sub,
        timing=ChangeTiming.NOW,
        credit_unused=True,
        void_unpaid=True,
        dry_run=True,
    )
    outcome = subscription_cancel(
        subscription=sub, timing=ChangeTiming.NOW, credit_unused=True, void_unpaid=True
    )

    assert preview.summary.credit == outcome.summary.credit == Decimal("0.00")
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.VOID
    assert outcome.credit_note is None and not CreditNote.objects.exists()
    assert customer_credit_balance(sub.customer) == Decimal("0.00")


def test_cancel_now_credit_unused_on_unpaid_term_pays_part_of_it(organization, travel):
    sub = live_subscription(travel, card=None)
    travel(D(2026, 4, 15))

    outcome = subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, credit_unused=True)

    invoice = Invoice.objects.get(subscription=sub)
    assert outcome.credit_note.amount == Decimal("20.00")
    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("20.00"), Decimal("10.00"))


def test_cancel_at_term_end_is_non_renewing_then_renew_cancels(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 15))

    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)

    sub = reload(sub)
    assert (sub.status, sub.cancel_at) == (S.NON_RENEWING, D(2026, 5, 5))
    assert sub.cancelled_at is None
    travel(D(2026, 5, 5))
    outcome = subscription_renew(subscription=sub)
    sub = reload(sub)
    assert sub.status == S.CANCELLED
    assert outcome.invoice is None
    assert len(invoices_of(sub)) == 1
    assert subscription_renew(subscription=sub) is None


def test_cancel_at_term_end_undo_is_live_again_and_renews(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 15))
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)

    subscription_cancel_undo(subscription=sub)

    sub = reload(sub)
    assert (sub.status, sub.cancel_at, sub.cancel_reason) == (S.LIVE, None, "")
    travel(D(2026, 5, 5))
    assert subscription_renew(subscription=sub).invoice is not None
    assert reload(sub).status == S.LIVE


@pytest.mark.parametrize(
    ("setup", "timing"),
    [
        ("cancelled", ChangeTiming.NOW),
        ("cancelled", ChangeTiming.TERM_END),
        ("non_renewing", ChangeTiming.TERM_END),
        ("paused", ChangeTiming.TERM_END),
    ],
)
def test_cancel_wrong_status_raises_invalid_transition(organization, travel, setup, timing):
    sub = live_subscription(travel)
    if setup == "cancelled":
        subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    elif setup == "non_renewing":
        subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    else:
        subscription_pause(subscription=sub)
    before = Subscription.objects.filter(pk=sub.pk).values().get()
    with pytest.raises(InvalidTransition):
        subscription_cancel(subscription=sub, timing=timing, dry_run=True)  # the preview too
    with pytest.raises(InvalidTransition):
        subscription_cancel(subscription=sub, timing=timing)
    assert Subscription.objects.filter(pk=sub.pk).values().get() == before


def test_cancel_unknown_timing_raises_validation_failed(organization, travel):
    sub = live_subscription(travel)
    with pytest.raises(ValidationFailed):
        subscription_cancel(subscription=sub, timing="someday")
    assert reload(sub).status == S.LIVE


# ----------------------------------------------------------------------------- reactivate
def dunning_cancelled(travel) -> Subscription:
    """A subscription whose first charge failed, cancelled by dunning within its term."""
    sub = live_subscription(travel, card=FAILING_CARD)
    assert reload(sub).status == S.PAST_DUE
    travel(D(2026, 4, 12))
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, reason=CancelReason.DUNNING)
    sub = reload(sub)
    assert (sub.status, sub.cancel_reason) == (S.CANCELLED, CancelReason.DUNNING)
    return sub


def test_reactivate_in_term_after_dunning_is_live_with_same_dates(organization, travel):
    sub = dunning_cancelled(travel)
    travel(D(2026, 4, 14))

    outcome = subscription_reactivate(subscription=sub, require_payment=False)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 4, 5),
        D(2026, 4, 5),
        D(2026, 5, 5),
    )
    assert (sub.cancel_reason, sub.cancelled_at) == ("", None)
    assert outcome.invoice is None and len(invoices_of(sub)) == 1
    assert outcome.summary.next_billing_date == D(2026, 5, 5)
    assert "subscription.reactivated" in event_kinds(sub)


def test_reactivate_in_term_requiring_payment_refused_until_paid(organization, travel):
    sub = dunning_cancelled(travel)
    travel(D(2026, 4, 14))

    with pytest.raises(NotAllowed):
        subscription_reactivate(subscription=sub, require_payment=True)
    assert reload(sub).status == S.CANCELLED

    invoice = Invoice.objects.get(subscription=sub)
    payment_record_offline(
        customer=sub.customer, amount=Decimal("30.00"), mode=PaymentMode.BANK_TRANSFER
    )
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID

    outcome = subscription_reactivate(subscription=sub, require_payment=True)
    sub = reload(sub)
    assert sub.status == S.LIVE
    assert sub.current_term_end == D(2026, 5, 5)
    assert outcome.invoice is None and len(invoices_of(sub)) == 1


def test_reactivate_out_of_term_starts_new_term_with_invoice(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    travel(D(2026, 5, 20))

    outcome = subscription_reactivate(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        D(2026, 5, 20),
        D(2026, 5, 20),
        D(2026, 6, 20),
    )
    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert (invoice.period_start, invoice.total, invoice.status) == (
        D(2026, 5, 20),
        Decimal("30.00"),
        InvoiceStatus.PAID,
    )
    assert outcome.payment.status == PaymentStatus.SUCCEEDED


def test_reactivate_out_of_term_uses_up_a_coupon_cycle(organization, travel):
    coupon = CouponFactory(repeating=True, duration_cycles=2, percent_off=Decimal("50"))
    sub = live_subscription(travel, coupon_code=coupon.code)  # 1 discounted cycle left
    travel(D(2026, 4, 10))
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    travel(D(2026, 5, 20))

    outcome = subscription_reactivate(subscription=sub)

    assert outcome.invoice.total == Decimal("15.00")
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 0
    travel(D(2026, 6, 20))
    assert subscription_renew(subscription=sub).invoice.total == Decimal("30.00")


def test_reactivate_dunning_cancelled_after_term_end_starts_new_term(organization, travel):
    sub = dunning_cancelled(travel)
    travel(D(2026, 5, 7))
    subscription_set_auto_charge(subscription=sub, enabled=True, method=add_card(sub.customer))

    outcome = subscription_reactivate(subscription=sub, require_payment=False)

    sub = reload(sub)
    assert (sub.status, sub.current_term_start) == (S.LIVE, D(2026, 5, 7))
    assert outcome.invoice is not None and len(invoices_of(sub)) == 2


def test_reactivate_expired_trial_starts_paid_term(trial_plan, travel):
    sub = trial_subscription(travel, trial_plan, card=FAILING_CARD)
    travel(D(2026, 3, 24))
    subscription_end_trial(subscription=sub)
    travel(D(2026, 3, 28))
    subscription_set_auto_charge(subscription=sub, enabled=True, method=add_card(sub.customer))

    outcome = subscription_reactivate(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.LIVE
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 3, 28), D(2026, 4, 28))
    assert outcome.invoice.total == Decimal("30.00")  # no setup fee on reactivation
    assert outcome.payment.status == PaymentStatus.SUCCEEDED


@pytest.mark.parametrize("setup", ["live", "paused"])
def test_reactivate_not_cancelled_raises_invalid_transition(organization, travel, setup):
    sub = live_subscription(travel)
    if setup == "paused":
        subscription_pause(subscription=sub)
    with pytest.raises(InvalidTransition):
        subscription_reactivate(subscription=sub)
    assert len(invoices_of(sub)) == 1


def test_reactivate_inactive_plan_raises_validation_failed(organization, travel):
    sub = live_subscription(travel)
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    sub.plan.active = False
    sub.plan.save()
    travel(D(2026, 6, 1))
    with pytest.raises(ValidationFailed):
        subscription_reactivate(subscription=sub)
    assert reload(sub).status == S.CANCELLED


# ----------------------------------------------------------------------------- auto-charge
def test_auto_charge_on_without_card_raises_validation_failed(organization, travel):
    sub = live_subscription(travel, card=None)
    with pytest.raises(ValidationFailed) as error:
        subscription_set_auto_charge(subscription=sub, enabled=True)
    assert error.value.field == "payment_method"
    assert reload(sub).auto_charge is False


def test_auto_charge_on_with_card_charges_next_renewal(organization, travel):
    sub = live_subscription(travel, card=None)
    card = add_card(sub.customer)

    subscription_set_auto_charge(subscription=sub, enabled=True)

    sub = reload(sub)
    assert (sub.auto_charge, sub.payment_method) == (True, card)
    assert event_kinds(sub)[-1] == "subscription.auto_charge"
    travel(D(2026, 5, 5))
    outcome = subscription_renew(subscription=sub)
    assert outcome.payment.status == PaymentStatus.SUCCEEDED


def test_auto_charge_off_leaves_renewal_invoice_open(organization, travel):
    sub = live_subscription(travel)

    subscription_set_auto_charge(subscription=sub, enabled=False)

    assert reload(sub).auto_charge is False
    travel(D(2026, 5, 5))
    outcome = subscription_renew(subscription=sub)
    assert outcome.payment is None
    assert outcome.invoice.status == InvoiceStatus.OPEN
    assert Payment.objects.count() == 1  # only the first invoice's


def test_auto_charge_on_with_another_customers_card_raises_not_allowed(organization, travel):
    sub = live_subscription(travel, card=None)
    stranger_card = add_card(CustomerFactory())
    with pytest.raises(NotAllowed):
        subscription_set_auto_charge(subscription=sub, enabled=True, method=stranger_card)
    assert reload(sub).payment_method is None


# ----------------------------------------------------------------------------- renew
def test_renew_at_term_end_invoices_next_term_and_charges(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    sub = reload(sub)
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 5, 5), D(2026, 6, 5))
    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert (invoice.kind, invoice.period_start, invoice.period_end) == (
        InvoiceKind.RECURRING,
        D(2026, 5, 5),
        D(2026, 6, 5),
    )
    assert (invoice.total, invoice.status) == (Decimal("30.00"), InvoiceStatus.PAID)
    assert outcome.payment.amount == Decimal("30.00")
    assert event_kinds(sub).count("subscription.renewed") == 1


def test_renew_before_term_end_returns_none(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 5, 4))
    assert subscription_renew(subscription=sub) is None
    assert len(invoices_of(sub)) == 1


def test_renew_run_twice_creates_one_invoice(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 5, 5))

    first = subscription_renew(subscription=sub)
    second = subscription_renew(subscription=sub)

    assert first is not None and second is None
    assert len(invoices_of(sub)) == 2
    assert Payment.objects.filter(customer=sub.customer).count() == 2


def test_renew_month_end_anchor_clamps_each_month(organization, travel):
    sub = live_subscription(travel, start=D(2026, 1, 31))
    assert reload(sub).current_term_end == D(2026, 2, 28)

    terms = []
    for day in (D(2026, 2, 28), D(2026, 3, 31), D(2026, 4, 30), D(2026, 5, 31)):
        travel(day)
        invoice = subscription_renew(subscription=sub).invoice
        terms.append((invoice.period_start, invoice.period_end))

    assert terms == [
        (D(2026, 2, 28), D(2026, 3, 31)),
        (D(2026, 3, 31), D(2026, 4, 30)),
        (D(2026, 4, 30), D(2026, 5, 31)),
        (D(2026, 5, 31), D(2026, 6, 30)),
    ]
    assert reload(sub).anchor_date == D(2026, 1, 31)


def test_renew_late_run_bills_the_due_period_only(organization, travel):
    sub = live_subscription(travel)
    travel(D(2026, 5, 9))  # the job ran four days late

    invoice = subscription_renew(subscription=sub).invoice

    assert (invoice.period_start, invoice.period_end) == (D(2026, 5, 5), D(2026, 6, 5))
    assert subscription_renew(subscription=sub) is None


def test_renew_bills_metered_usage_in_arrears_once(organization, travel):
    metered = AddonFactory(
        kind=AddonKind.METERED, price=Decimal("0.50"), unit_name="hour", name="Support"
    )
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    first = usage_record(
        subscription=sub, addon=metered, quantity=Decimal("10"), idempotency_key="use-1"
    )
    again = usage_record(
        subscription=sub, addon=metered, quantity=Decimal("10"), idempotency_key="use-1"
    )
    usage_record(subscription=sub, addon=metered, quantity=Decimal("5"), idempotency_key="use-2")
    assert first.pk == again.pk
    assert UsageRecord.objects.filter(subscription=sub).count() == 2

    travel(D(2026, 5, 5))
    outcome = subscription_renew(subscription=sub)

    invoice = outcome.invoice
    lines = [(line.kind, line.quantity, line.amount) for line in invoice.lines.all()]
    assert lines == [
        (InvoiceLineKind.PLAN, Decimal(1), Decimal("30.00")),
        (InvoiceLineKind.USAGE, Decimal(15), Decimal("7.50")),
    ]
    assert invoice.total == Decimal("37.50")
    assert set(UsageRecord.objects.values_list("invoice_id", flat=True)) == {invoice.pk}

    # Usage during the new term waits for the next renewal.
    travel(D(2026, 5, 10))
    usage_record(subscription=sub, addon=metered, quantity=Decimal("2"), idempotency_key="use-3")
    travel(D(2026, 6, 5))
    later = subscription_renew(subscription=sub).invoice
    assert [line.amount for line in later.lines.filter(kind=InvoiceLineKind.USAGE)] == [
        Decimal("1.00")
    ]


def test_usage_record_bad_input_or_inactive_subscription_raises(organization, travel):
    sub = live_subscription(travel)
    metered = AddonFactory(kind=AddonKind.METERED, price=Decimal("1.00"))
    recurring = AddonFactory()
    with pytest.raises(ValidationFailed):
        usage_record(subscription=sub, addon=recurring, quantity=Decimal(1), idempotency_key="a")
    with pytest.raises(ValidationFailed):
        usage_record(subscription=sub, addon=metered, quantity=Decimal(0), idempotency_key="b")
    usage_record(subscription=sub, addon=metered, quantity=Decimal(1), idempotency_key="c")
    with pytest.raises(ValidationFailed):
        usage_record(subscription=sub, addon=metered, quantity=Decimal(2), idempotency_key="c")
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    with pytest.raises(InvalidTransition):
        usage_record(
            subscription=reload(sub), addon=metered, quantity=Decimal(1), idempotency_key="d"
        )
    assert UsageRecord.objects.count() == 1


def non_renewing_with_usage(travel) -> Subscription:
    """Cancelled at term end (May 5) with 3 × 2.00 of metered usage in its last term."""
    metered = AddonFactory(kind=AddonKind.METERED, price=Decimal("2.00"))
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    usage_record(subscription=sub, addon=metered, quantity=Decimal("3"), idempotency_key="u")
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    return sub


def test_renew_non_renewing_bills_last_usage_and_cancels(organization, travel):
    sub = non_renewing_with_usage(travel)
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    assert reload(sub).status == S.CANCELLED
    assert outcome.invoice.kind == InvoiceKind.USAGE
    assert outcome.invoice.total == Decimal("6.00")
    # Charged to the card like any renewal invoice, not left open.
    assert (outcome.payment.status, outcome.payment.amount) == (
        PaymentStatus.SUCCEEDED,
        Decimal("6.00"),
    )
    outcome.invoice.refresh_from_db()
    assert outcome.invoice.status == InvoiceStatus.PAID
    assert subscription_renew(subscription=sub) is None  # once


def test_last_usage_declined_is_retried_and_the_subscription_stays_cancelled(organization, travel):
    sub = non_renewing_with_usage(travel)
    add_card(sub.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    assert outcome.payment.status == PaymentStatus.FAILED
    outcome.invoice.refresh_from_db()
    assert outcome.invoice.status == InvoiceStatus.OPEN
    assert reload(sub).status == S.CANCELLED
    retries = PaymentAttempt.objects.filter(invoice=outcome.invoice, attempt_number__gt=0)
    assert retries.count() == len(DunningPolicy.load().retry_days)


def test_renew_declined_charge_past_due_with_retries_per_policy(organization, travel):
    sub = live_subscription(travel)
    add_card(sub.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    sub = reload(sub)
    assert sub.status == S.PAST_DUE
    assert outcome.payment.status == PaymentStatus.FAILED
    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    attempts = list(PaymentAttempt.objects.filter(invoice=invoice).order_by("attempt_number"))
    assert [(a.attempt_number, a.status) for a in attempts] == [
        (0, PaymentAttemptStatus.FAILED),
        (1, PaymentAttemptStatus.SCHEDULED),
        (2, PaymentAttemptStatus.SCHEDULED),
        (3, PaymentAttemptStatus.SCHEDULED),
        (4, PaymentAttemptStatus.SCHEDULED),
    ]
    assert [a.scheduled_for.date() for a in attempts[1:]] == [
        D(2026, 5, 6),
        D(2026, 5, 8),
        D(2026, 5, 10),
        D(2026, 5, 12),
    ]
    assert "subscription.past_due" in event_kinds(sub)


def test_renew_hard_decline_no_retries_final_action_at_once(organization, travel):
    sub = live_subscription(travel)
    add_card(sub.customer, LOST_CARD, use_for_subscriptions=True)
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    sub = reload(sub)
    # The default policy cancels; the term just billed is still ahead (in-term reactivation).
    assert sub.status == S.CANCELLED
    assert sub.cancel_reason == CancelReason.DUNNING
    assert sub.current_term_end > D(2026, 5, 5)
    attempts = PaymentAttempt.objects.filter(invoice=outcome.invoice)
    assert [(a.attempt_number, a.status) for a in attempts] == [(0, PaymentAttemptStatus.FAILED)]


def test_renew_declined_then_paid_offline_is_live_and_retries_skipped(organization, travel):
    sub = live_subscription(travel)
    add_card(sub.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2026, 5, 5))
    invoice = subscription_renew(subscription=sub).invoice
    travel(D(2026, 5, 7))

    payment_record_offline(
        customer=sub.customer, amount=Decimal("30.00"), mode=PaymentMode.BANK_TRANSFER
    )

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert reload(sub).status == S.LIVE
    statuses = dict(
        PaymentAttempt.objects.filter(invoice=invoice).values_list("attempt_number", "status")
    )
    assert statuses == {
        0: PaymentAttemptStatus.FAILED,
        1: PaymentAttemptStatus.SKIPPED,
        2: PaymentAttemptStatus.SKIPPED,
        3: PaymentAttemptStatus.SKIPPED,
        4: PaymentAttemptStatus.SKIPPED,
    }
    assert "subscription.recovered" in event_kinds(sub)


def test_renew_past_due_subscription_still_bills_next_term(organization, travel):
    sub = live_subscription(travel, card=FAILING_CARD)
    assert reload(sub).status == S.PAST_DUE
    travel(D(2026, 5, 5))

    outcome = subscription_renew(subscription=sub)

    assert outcome.invoice.period_start == D(2026, 5, 5)
    assert reload(sub).status == S.PAST_DUE


def test_reactivate_on_the_day_its_term_was_billed_refused_without_a_second_invoice(
    organization, travel
):
    sub = live_subscription(travel)
    subscription_cancel(subscription=sub, timing="now")
    invoices_before = len(invoices_of(sub))

    for dry_run in (True, False):
        with pytest.raises(InvalidTransition, match="already invoiced"):
            subscription_reactivate(subscription=sub, require_payment=False, dry_run=dry_run)

    assert reload(sub).status == S.CANCELLED
    assert len(invoices_of(sub)) == invoices_before
