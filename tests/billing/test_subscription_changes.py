"""Changing a subscription: plan, quantity, addons, coupon and billing frequency, now (prorated,
DESIGN rule 4) or at term end (a scheduled change the renewal applies), and every refusal.
"""

import datetime
from decimal import Decimal

import pytest

from billing.enums import (
    AddonKind,
    ChangeTiming,
    CreditNoteReason,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.errors import InvalidTransition, ValidationFailed
from billing.models import (
    CreditAllocation,
    CreditNote,
    Event,
    Invoice,
    InvoiceLine,
    Payment,
    SandboxCharge,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
)
from billing.selectors import invoice_balance
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import (
    ChangeRequest,
    subscription_cancel,
    subscription_change,
    subscription_create,
    subscription_pause,
    subscription_renew,
    subscription_scheduled_change_cancel,
)
from tests.factories import AddonFactory, CouponFactory, CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db

S = SubscriptionStatus
D = datetime.date
GOOD_CARD = "4242424242424242"
TERM_START, CHANGE_DAY, TERM_END = D(2026, 4, 5), D(2026, 4, 15), D(2026, 5, 5)  # 20 of 30 days


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def travel(time_machine):
    def to(day: datetime.date, hour: int = 12) -> None:
        time_machine.move_to(
            datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.UTC),
            tick=False,
        )

    return to


def new_customer(card: str | None = GOOD_CARD):
    customer = CustomerFactory()
    if card:
        payment_method_add(customer=customer, number=card, exp_month=12, exp_year=2030, cvc="123")
    return customer


def reload(sub: Subscription) -> Subscription:
    return Subscription.objects.get(pk=sub.pk)


def subscribe(travel, plan, *, start=TERM_START, **kwargs) -> Subscription:
    travel(start)
    return subscription_create(customer=new_customer(), plan=plan, **kwargs).subscription


def lines_of(invoice: Invoice) -> list[tuple[str, Decimal]]:
    return [(line.kind, line.amount) for line in invoice.lines.all()]


COUNTED = (
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    ScheduledChange,
    Invoice,
    InvoiceLine,
    CreditNote,
    CreditAllocation,
    Payment,
    SandboxCharge,
    Event,
)


def snapshot(sub: Subscription) -> tuple:
    """Everything a refused change must leave untouched."""
    return (
        {model.__name__: model.objects.count() for model in COUNTED},
        Subscription.objects.filter(pk=sub.pk).values().get(),
        list(SubscriptionAddon.objects.filter(subscription=sub).values("addon_id", "quantity")),
        list(
            SubscriptionCoupon.objects.filter(subscription=sub).values(
                "coupon_id", "remaining_cycles"
            )
        ),
    )


# ----------------------------------------------------------------------------- now: plan
def test_change_plan_now_published_example_prorates_and_charges(organization, travel):
    small = PlanFactory(price=Decimal("300.00"), name="Team")
    big = PlanFactory(price=Decimal("500.00"), name="Business")
    sub = subscribe(travel, small)
    travel(CHANGE_DAY)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=big))

    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert invoice.kind == InvoiceKind.PRORATION
    assert lines_of(invoice) == [
        (InvoiceLineKind.PRORATION_CREDIT, Decimal("-200.00")),
        (InvoiceLineKind.PRORATION_CHARGE, Decimal("333.33")),
    ]
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (
        Decimal("133.33"),
        Decimal("0.00"),
        Decimal("133.33"),
    )
    assert (invoice.period_start, invoice.period_end) == (CHANGE_DAY, TERM_END)
    assert invoice.status == InvoiceStatus.PAID
    assert outcome.payment.status == PaymentStatus.SUCCEEDED
    assert outcome.payment.amount == Decimal("133.33")
    assert SandboxCharge.objects.get(idempotency_key=outcome.payment.idempotency_key).amount == (
        Decimal("133.33")
    )
    sub = reload(sub)
    assert sub.plan == big
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        TERM_START,
        TERM_START,
        TERM_END,
    )
    assert outcome.summary.next_billing_date == TERM_END
    assert outcome.summary.next_amount == Decimal("500.00")
    event = Event.objects.filter(subscription=sub, kind="subscription.changed").get()
    assert event.data["before"]["plan"] == small.code
    assert event.data["after"]["plan"] == big.code

    travel(TERM_END)
    assert subscription_renew(subscription=sub).invoice.total == Decimal("500.00")


def test_change_plan_now_with_tax_taxes_the_net(organization, travel):
    organization.tax_rate = Decimal("10")
    organization.save()
    sub = subscribe(travel, PlanFactory(price=Decimal("300.00")))
    travel(CHANGE_DAY)

    outcome = subscription_change(
        subscription=sub, request=ChangeRequest(plan=PlanFactory(price=Decimal("500.00")))
    )

    assert (outcome.invoice.subtotal, outcome.invoice.tax_total, outcome.invoice.total) == (
        Decimal("133.33"),
        Decimal("13.33"),
        Decimal("146.66"),
    )


def test_change_downgrade_now_issues_credit_note_applied_at_renewal(organization, travel):
    organization.tax_rate = Decimal("10")
    organization.save()
    sub = subscribe(travel, PlanFactory(price=Decimal("500.00")))
    small = PlanFactory(price=Decimal("300.00"))
    travel(CHANGE_DAY)
    invoices_before = Invoice.objects.count()

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=small))

    assert outcome.invoice is None and Invoice.objects.count() == invoices_before
    note = CreditNote.objects.get(subscription=sub)
    assert outcome.credit_note == note
    assert note.reason == CreditNoteReason.PRORATION
    # credit 500 × 20/30 = 333.33, charge 300 × 20/30 = 200.00 → 133.33 + 13.33 tax
    assert note.amount == Decimal("146.66")
    assert outcome.summary.credit == Decimal("146.66")
    assert reload(sub).current_term_end == TERM_END

    travel(TERM_END)
    renewal = subscription_renew(subscription=sub)

    invoice = renewal.invoice
    invoice.refresh_from_db()
    assert invoice.total == Decimal("330.00")
    assert invoice.status == InvoiceStatus.PAID
    assert invoice_balance(invoice) == (Decimal("183.34"), Decimal("146.66"), Decimal("0.00"))
    assert renewal.payment.amount == Decimal("183.34")


def test_change_plan_now_on_non_renewing_subscription_is_allowed(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    travel(CHANGE_DAY)

    outcome = subscription_change(
        subscription=sub, request=ChangeRequest(plan=PlanFactory(price=Decimal("60.00")))
    )

    assert outcome.invoice.total == Decimal("20.00")
    assert reload(sub).status == S.NON_RENEWING


# ----------------------------------------------------------------------------- now: quantity, addons
def test_change_quantity_now_prorates_the_difference(organization, travel):
    plan = PlanFactory(price=Decimal("30.00"), max_quantity=10)
    sub = subscribe(travel, plan)
    travel(CHANGE_DAY)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(quantity=3))

    assert lines_of(outcome.invoice) == [
        (InvoiceLineKind.PRORATION_CREDIT, Decimal("-20.00")),
        (InvoiceLineKind.PRORATION_CHARGE, Decimal("60.00")),
    ]
    assert outcome.invoice.total == Decimal("40.00")
    assert reload(sub).quantity == 3
    travel(TERM_END)
    assert subscription_renew(subscription=sub).invoice.total == Decimal("90.00")


def test_change_addons_now_add_then_remove(organization, travel):
    addon = AddonFactory(price=Decimal("6.00"))
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)

    added = subscription_change(subscription=sub, request=ChangeRequest(addons={addon.code: 2}))

    assert SubscriptionAddon.objects.get(subscription=sub, addon=addon).quantity == 2
    assert added.invoice.total == Decimal("8.00")  # 42 × 20/30 − 30 × 20/30 = 28.00 − 20.00

    travel(D(2026, 4, 20))  # 15 of 30 days left
    removed = subscription_change(subscription=sub, request=ChangeRequest(addons={addon.code: 0}))

    assert not SubscriptionAddon.objects.filter(subscription=sub).exists()
    assert removed.invoice is None
    assert removed.credit_note.amount == Decimal("6.00")  # 21.00 − 15.00
    assert removed.credit_note.reason == CreditNoteReason.PRORATION


# ----------------------------------------------------------------------------- now: coupon
def test_change_coupon_now_adds_coupon_and_credits_the_rest_of_term(organization, travel):
    coupon = CouponFactory(percent_off=Decimal("10"))
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(coupon_code=coupon.code))

    row = SubscriptionCoupon.objects.get(subscription=sub)
    assert (row.coupon, row.remaining_cycles) == (coupon, None)
    assert outcome.invoice is None
    assert outcome.credit_note.amount == Decimal("2.00")  # 20.00 − 18.00
    travel(TERM_END)
    renewal = subscription_renew(subscription=sub).invoice
    assert (renewal.discount_total, renewal.total) == (Decimal("3.00"), Decimal("27.00"))
    assert invoice_balance(renewal)[1] == Decimal("2.00")  # the credit note paid part of it


def test_change_coupon_code_is_case_insensitive(organization, travel):
    coupon = CouponFactory(code="spring10")
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)
    subscription_change(subscription=sub, request=ChangeRequest(coupon_code="  SPRING10 "))
    assert SubscriptionCoupon.objects.get(subscription=sub).coupon == coupon


@pytest.mark.parametrize(
    "case", ["unknown", "expired", "inactive", "exhausted", "other_plan", "already_applied"]
)
def test_change_coupon_not_redeemable_raises_and_writes_nothing(organization, travel, case):
    plan = PlanFactory(price=Decimal("30.00"))
    sub = subscribe(travel, plan)
    code = "nope"
    if case == "expired":
        code = CouponFactory(expires_on=D(2026, 4, 14)).code
    elif case == "inactive":
        code = CouponFactory(active=False).code
    elif case == "exhausted":
        coupon = CouponFactory(max_redemptions=1)
        subscribe(travel, plan, coupon_code=coupon.code)
        code = coupon.code
    elif case == "other_plan":
        coupon = CouponFactory()
        coupon.applicable_plans.set([PlanFactory()])
        code = coupon.code
    elif case == "already_applied":
        code = CouponFactory().code
        subscription_change(subscription=sub, request=ChangeRequest(coupon_code=code))
    travel(CHANGE_DAY)
    before = snapshot(sub)

    with pytest.raises(ValidationFailed) as error:
        subscription_change(subscription=sub, request=ChangeRequest(coupon_code=code))

    assert error.value.field == "coupon"
    assert snapshot(sub) == before


def test_change_coupon_expiring_today_is_still_valid(organization, travel):
    coupon = CouponFactory(expires_on=CHANGE_DAY)
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)
    subscription_change(subscription=sub, request=ChangeRequest(coupon_code=coupon.code))
    assert SubscriptionCoupon.objects.filter(subscription=sub, coupon=coupon).exists()


# ----------------------------------------------------------------------------- now: frequency
def test_change_frequency_monthly_to_yearly_now_starts_new_term_today(organization, travel):
    monthly = PlanFactory(price=Decimal("30.00"))
    yearly = PlanFactory(price=Decimal("300.00"), yearly=True)
    sub = subscribe(travel, monthly)
    travel(CHANGE_DAY)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=yearly))

    sub = reload(sub)
    assert sub.plan == yearly
    assert (sub.anchor_date, sub.current_term_start, sub.current_term_end) == (
        CHANGE_DAY,
        CHANGE_DAY,
        D(2027, 4, 15),
    )
    invoice = outcome.invoice
    invoice.refresh_from_db()
    assert invoice.kind == InvoiceKind.PRORATION
    assert lines_of(invoice) == [
        (InvoiceLineKind.PRORATION_CREDIT, Decimal("-20.00")),
        (InvoiceLineKind.PLAN, Decimal("300.00")),
    ]
    assert invoice.total == Decimal("280.00")
    assert (invoice.period_start, invoice.period_end) == (CHANGE_DAY, D(2027, 4, 15))
    assert invoice.status == InvoiceStatus.PAID
    assert outcome.payment.amount == Decimal("280.00")
    assert outcome.summary.next_billing_date == D(2027, 4, 15)

    travel(TERM_END)
    assert subscription_renew(subscription=sub) is None  # the old monthly date is gone
    travel(D(2027, 4, 15))
    renewal = subscription_renew(subscription=sub).invoice
    assert (renewal.period_start, renewal.period_end, renewal.total) == (
        D(2027, 4, 15),
        D(2028, 4, 15),
        Decimal("300.00"),
    )


def test_change_frequency_now_uses_up_a_coupon_cycle(organization, travel):
    coupon = CouponFactory(repeating=True, percent_off=Decimal("10"))  # 3 cycles
    sub = subscribe(
        travel, PlanFactory(price=Decimal("30.00")), coupon_code=coupon.code
    )  # first month discounted: 2 cycles left
    yearly = PlanFactory(price=Decimal("300.00"), yearly=True)
    travel(CHANGE_DAY)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=yearly))

    # credit 27.00 × 20/30 = 18.00; the new year 300.00 − 10 % coupon
    assert lines_of(outcome.invoice) == [
        (InvoiceLineKind.PRORATION_CREDIT, Decimal("-18.00")),
        (InvoiceLineKind.PLAN, Decimal("300.00")),
        (InvoiceLineKind.DISCOUNT, Decimal("-30.00")),
    ]
    assert outcome.invoice.total == Decimal("252.00")
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 1


def test_change_frequency_now_on_non_renewing_moves_cancel_date(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    yearly = PlanFactory(price=Decimal("300.00"), yearly=True)
    travel(CHANGE_DAY)

    subscription_change(subscription=sub, request=ChangeRequest(plan=yearly))

    sub = reload(sub)
    assert (sub.status, sub.current_term_end, sub.cancel_at) == (
        S.NON_RENEWING,
        D(2027, 4, 15),
        D(2027, 4, 15),
    )


def test_change_frequency_on_first_day_of_term_bills_new_term(organization, travel):
    monthly = PlanFactory(price=Decimal("30.00"))
    yearly = PlanFactory(price=Decimal("300.00"), yearly=True)
    sub = subscribe(travel, monthly)

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=yearly))

    assert outcome.invoice.total == Decimal("270.00")  # 300.00 − the whole month's 30.00
    assert reload(sub).current_term_end == D(2027, 4, 5)


def test_change_frequency_yearly_to_monthly_now_nets_a_credit(organization, travel):
    yearly = PlanFactory(price=Decimal("365.00"), yearly=True)
    monthly = PlanFactory(price=Decimal("30.00"))
    sub = subscribe(travel, yearly, start=D(2026, 1, 1))
    travel(D(2026, 7, 2))  # 183 of 365 days left

    outcome = subscription_change(subscription=sub, request=ChangeRequest(plan=monthly))

    sub = reload(sub)
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 7, 2), D(2026, 8, 2))
    assert outcome.invoice is None
    assert outcome.credit_note.amount == Decimal("153.00")  # 183.00 − 30.00
    travel(D(2026, 8, 2))
    assert subscription_renew(subscription=sub).invoice.total == Decimal("30.00")


# ----------------------------------------------------------------------------- now: month-end anchors
def test_change_now_month_end_anchor_in_short_term_keeps_billing_date(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")), start=D(2026, 1, 31))
    travel(D(2026, 2, 28))
    subscription_renew(subscription=sub)  # term Feb 28 – Mar 31 (31 days)
    travel(D(2026, 3, 10))  # 21 days left

    outcome = subscription_change(
        subscription=sub, request=ChangeRequest(plan=PlanFactory(price=Decimal("60.00")))
    )

    assert lines_of(outcome.invoice) == [
        (InvoiceLineKind.PRORATION_CREDIT, Decimal("-20.32")),
        (InvoiceLineKind.PRORATION_CHARGE, Decimal("40.65")),
    ]
    assert outcome.summary.next_billing_date == D(2026, 3, 31)
    sub = reload(sub)
    assert (sub.anchor_date, sub.current_term_end) == (D(2026, 1, 31), D(2026, 3, 31))
    travel(D(2026, 3, 31))
    renewal = subscription_renew(subscription=sub).invoice
    assert (renewal.period_start, renewal.period_end, renewal.total) == (
        D(2026, 3, 31),
        D(2026, 4, 30),
        Decimal("60.00"),
    )


# ----------------------------------------------------------------------------- in trial
def test_change_in_trial_applies_at_once_without_charge(organization, travel):
    trial = PlanFactory(price=Decimal("30.00"), trial_days=14)
    travel(D(2026, 3, 10))
    sub = subscription_create(customer=new_customer(), plan=trial).subscription
    bigger = PlanFactory(price=Decimal("50.00"))

    outcome = subscription_change(
        subscription=sub, request=ChangeRequest(plan=bigger), timing=ChangeTiming.TERM_END
    )

    assert reload(sub).plan == bigger
    assert outcome.invoice is None and outcome.credit_note is None
    assert not Invoice.objects.exists() and not ScheduledChange.objects.exists()
    assert outcome.summary.next_amount == Decimal("50.00")


# ----------------------------------------------------------------------------- at term end
def test_change_at_term_end_stores_replaceable_scheduled_change(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    bigger = PlanFactory(price=Decimal("50.00"))
    other = PlanFactory(price=Decimal("40.00"), max_quantity=5)
    travel(CHANGE_DAY)
    invoices_before = Invoice.objects.count()

    first = subscription_change(
        subscription=sub, request=ChangeRequest(plan=bigger), timing=ChangeTiming.TERM_END
    )
    change = ScheduledChange.objects.get(subscription=sub)
    assert (change.plan, change.quantity, change.addons) == (bigger, 1, {})
    assert first.invoice is None and first.credit_note is None
    assert first.summary.next_billing_date == TERM_END
    assert first.summary.next_amount == Decimal("50.00")

    subscription_change(
        subscription=sub,
        request=ChangeRequest(plan=other, quantity=2),
        timing=ChangeTiming.TERM_END,
    )
    change = ScheduledChange.objects.get(subscription=sub)
    assert (change.plan, change.quantity) == (other, 2)
    assert reload(sub).plan != other  # nothing changes before the term ends
    assert Invoice.objects.count() == invoices_before
    kinds = list(Event.objects.filter(subscription=sub).values_list("kind", flat=True))
    assert kinds.count("subscription.change_scheduled") == 2


def test_scheduled_change_cancel_removes_it(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)
    subscription_change(
        subscription=sub,
        request=ChangeRequest(plan=PlanFactory(price=Decimal("50.00"))),
        timing=ChangeTiming.TERM_END,
    )

    subscription_scheduled_change_cancel(subscription=sub)

    assert not ScheduledChange.objects.filter(subscription=sub).exists()
    with pytest.raises(InvalidTransition):
        subscription_scheduled_change_cancel(subscription=sub)
    travel(TERM_END)
    assert subscription_renew(subscription=sub).invoice.total == Decimal("30.00")


def test_renew_applies_scheduled_change_at_new_price(organization, travel):
    addon = AddonFactory(price=Decimal("4.00"))
    coupon = CouponFactory(once=True, percent_off=Decimal("50"))
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    bigger = PlanFactory(price=Decimal("50.00"))
    travel(CHANGE_DAY)
    subscription_change(
        subscription=sub,
        request=ChangeRequest(plan=bigger, addons={addon.code: 2}, coupon_code=coupon.code),
        timing=ChangeTiming.TERM_END,
    )
    travel(TERM_END)

    outcome = subscription_renew(subscription=sub)

    sub = reload(sub)
    assert sub.plan == bigger
    assert SubscriptionAddon.objects.get(subscription=sub).quantity == 2
    assert not ScheduledChange.objects.filter(subscription=sub).exists()
    invoice = outcome.invoice
    assert lines_of(invoice) == [
        (InvoiceLineKind.PLAN, Decimal("50.00")),
        (InvoiceLineKind.ADDON, Decimal("8.00")),
        (InvoiceLineKind.DISCOUNT, Decimal("-29.00")),
    ]
    assert invoice.total == Decimal("29.00")
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 0
    kinds = list(Event.objects.filter(subscription=sub).values_list("kind", flat=True))
    assert "subscription.changed" in kinds and "subscription.renewed" in kinds


def test_renew_applies_scheduled_frequency_change_from_term_end(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    yearly = PlanFactory(price=Decimal("300.00"), yearly=True)
    travel(CHANGE_DAY)
    subscription_change(
        subscription=sub, request=ChangeRequest(plan=yearly), timing=ChangeTiming.TERM_END
    )
    travel(TERM_END)

    invoice = subscription_renew(subscription=sub).invoice

    assert (invoice.period_start, invoice.period_end, invoice.total) == (
        TERM_END,
        D(2027, 5, 5),
        Decimal("300.00"),
    )
    sub = reload(sub)
    assert (sub.plan, sub.anchor_date, sub.current_term_end) == (yearly, TERM_END, D(2027, 5, 5))


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "case",
    [
        "quantity_zero",
        "quantity_above_max",
        "inactive_plan",
        "one_time_addon",
        "metered_addon",
        "unknown_addon",
        "addon_for_other_plan",
        "addon_above_max",
        "negative_addon",
    ],
)
@pytest.mark.parametrize("timing", [ChangeTiming.NOW, ChangeTiming.TERM_END])
def test_change_bad_input_raises_and_writes_nothing(organization, travel, case, timing):
    plan = PlanFactory(price=Decimal("30.00"), max_quantity=5)
    sub = subscribe(travel, plan)
    request = {
        "quantity_zero": lambda: ChangeRequest(quantity=0),
        "quantity_above_max": lambda: ChangeRequest(quantity=6),
        "inactive_plan": lambda: ChangeRequest(plan=PlanFactory(inactive=True)),
        "one_time_addon": lambda: ChangeRequest(addons={AddonFactory(one_time=True).code: 1}),
        "metered_addon": lambda: ChangeRequest(addons={AddonFactory(metered=True).code: 1}),
        "unknown_addon": lambda: ChangeRequest(addons={"no-such-addon": 1}),
        "addon_for_other_plan": lambda: ChangeRequest(addons={_addon_for(PlanFactory()).code: 1}),
        "addon_above_max": lambda: ChangeRequest(addons={AddonFactory(max_quantity=2).code: 3}),
        "negative_addon": lambda: ChangeRequest(addons={AddonFactory().code: -1}),
    }[case]()
    travel(CHANGE_DAY)
    before = snapshot(sub)

    with pytest.raises(ValidationFailed) as error:
        subscription_change(subscription=sub, request=request, timing=timing)

    assert error.value.field in {"quantity", "plan", "addons"}
    assert snapshot(sub) == before


def _addon_for(plan):
    addon = AddonFactory(kind=AddonKind.RECURRING)
    addon.applicable_plans.set([plan])
    return addon


def test_change_to_plan_rejecting_current_addon_raises(organization, travel):
    basic = PlanFactory(price=Decimal("30.00"))
    addon = _addon_for(basic)
    sub = subscribe(travel, basic, addons={addon.code: 1})
    travel(CHANGE_DAY)
    before = snapshot(sub)
    with pytest.raises(ValidationFailed) as error:
        subscription_change(subscription=sub, request=ChangeRequest(plan=PlanFactory()))
    assert error.value.field == "addons"
    assert snapshot(sub) == before


def test_change_that_changes_nothing_raises(organization, travel):
    plan = PlanFactory(price=Decimal("30.00"))
    sub = subscribe(travel, plan)
    before = snapshot(sub)
    with pytest.raises(ValidationFailed):
        subscription_change(subscription=sub, request=ChangeRequest(plan=plan, quantity=1))
    assert snapshot(sub) == before


def test_change_unknown_timing_raises(organization, travel):
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    before = snapshot(sub)
    with pytest.raises(ValidationFailed):
        subscription_change(subscription=sub, request=ChangeRequest(quantity=2), timing="later")
    assert snapshot(sub) == before


@pytest.mark.parametrize("setup", ["paused", "cancelled", "past_due"])
def test_change_wrong_status_raises_invalid_transition(organization, travel, setup):
    if setup == "past_due":
        travel(TERM_START)
        sub = subscription_create(
            customer=new_customer("4000000000000341"), plan=PlanFactory(price=Decimal("30.00"))
        ).subscription
        assert reload(sub).status == S.PAST_DUE
    else:
        sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
        if setup == "paused":
            subscription_pause(subscription=sub)
        else:
            subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    before = snapshot(sub)
    with pytest.raises(InvalidTransition):
        subscription_change(subscription=sub, request=ChangeRequest(quantity=2))
    assert snapshot(sub) == before


def test_once_coupon_added_now_discounts_the_rest_of_the_term_only(organization, travel):
    coupon = CouponFactory(percent_off=Decimal("10"), once=True)
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")))
    travel(CHANGE_DAY)

    preview = subscription_change(
        subscription=sub, request=ChangeRequest(coupon_code=coupon.code), dry_run=True
    )
    outcome = subscription_change(subscription=sub, request=ChangeRequest(coupon_code=coupon.code))

    # The rest of the term (20 of 30 days) is discounted: 20.00 − 18.00 credited now ...
    assert outcome.credit_note.amount == Decimal("2.00")
    assert SubscriptionCoupon.objects.get(subscription=sub).remaining_cycles == 0
    # ... and that was the coupon's one use: the renewal is at full price, as previewed.
    assert preview.summary.next_amount == Decimal("30.00")
    travel(TERM_END)
    renewal = subscription_renew(subscription=sub).invoice
    assert (renewal.discount_total, renewal.total) == (Decimal("0.00"), Decimal("30.00"))


def test_a_used_up_coupon_cannot_be_redeemed_again(organization, travel):
    coupon = CouponFactory(percent_off=Decimal("10"), once=True)
    sub = subscribe(travel, PlanFactory(price=Decimal("30.00")), coupon_code=coupon.code)
    travel(CHANGE_DAY)

    with pytest.raises(ValidationFailed, match="already used that coupon") as refused:
        subscription_change(subscription=sub, request=ChangeRequest(coupon_code=coupon.code))

    assert refused.value.field == "coupon"
    assert not CreditNote.objects.filter(customer=sub.customer).exists()
