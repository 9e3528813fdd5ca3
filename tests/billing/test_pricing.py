"""What a subscription costs (billing/pricing.py): plan × quantity + addons, coupons, the group's
price list and discount, tax, and half-up rounding per line; coupon cycles through renewals.
"""

import datetime
from decimal import Decimal

import pytest

from billing.enums import CouponDuration, InvoiceLineKind, PriceListKind
from billing.errors import ValidationFailed
from billing.models import Invoice, PriceListItem, Subscription, SubscriptionCoupon
from billing.periods import Period
from billing.pricing import (
    Configuration,
    PriceBook,
    configuration_of,
    coupon_initial_cycles,
    period_charges,
    recurring_amount,
    setup_fee_line,
    totals,
)
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import subscription_create, subscription_renew
from tests.factories import (
    AddonFactory,
    CouponFactory,
    CustomerFactory,
    CustomerGroupFactory,
    PlanFactory,
    PriceListFactory,
)

pytestmark = pytest.mark.django_db

D = datetime.date
PERIOD = Period(D(2026, 4, 5), D(2026, 5, 5))


@pytest.fixture
def travel(time_machine):
    def to(day: datetime.date) -> None:
        time_machine.move_to(
            datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC), tick=False
        )

    return to


def book_for(organization, **customer_fields) -> PriceBook:
    return PriceBook(CustomerFactory(**customer_fields), organization)


def charges(organization, config: Configuration, extra=(), **customer_fields):
    return period_charges(
        config, book_for(organization, **customer_fields), PERIOD, extra_lines=extra
    )


def amounts(result) -> list[tuple[str, Decimal]]:
    return [(line.kind, line.amount) for line in result.lines]


# ----------------------------------------------------------------------------- plan and addons
def test_period_charges_plan_times_quantity_plus_addons(organization):
    plan = PlanFactory(price=Decimal("12.50"), name="Seats")
    seats = AddonFactory(price=Decimal("4.00"), name="Backup")
    support = AddonFactory(price=Decimal("1.25"), name="Support")

    result = charges(organization, Configuration(plan, 3, ((seats, 2), (support, 1))))

    assert amounts(result) == [
        (InvoiceLineKind.PLAN, Decimal("37.50")),
        (InvoiceLineKind.ADDON, Decimal("8.00")),
        (InvoiceLineKind.ADDON, Decimal("1.25")),
    ]
    plan_line = result.lines[0]
    assert (plan_line.quantity, plan_line.unit_price) == (Decimal(3), Decimal("12.50"))
    assert (plan_line.period_start, plan_line.period_end) == (PERIOD.start, PERIOD.end)
    assert plan_line.description == "Seats (Apr 5, 2026 – May 4, 2026)"
    assert (result.subtotal, result.discount_total, result.tax_total, result.total) == (
        Decimal("46.75"),
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("46.75"),
    )


def test_setup_fee_line_only_when_plan_has_one(organization):
    book = book_for(organization)
    assert setup_fee_line(PlanFactory(), book) is None
    line = setup_fee_line(PlanFactory(setup_fee=Decimal("9.995")), book)
    assert (line.kind, line.amount) == (InvoiceLineKind.SETUP_FEE, Decimal("10.00"))


# ----------------------------------------------------------------------------- coupons
def test_percent_coupon_discounts_recurring_lines(organization):
    plan = PlanFactory(price=Decimal("46.75"))
    coupon = CouponFactory(percent_off=Decimal("20"))

    result = charges(organization, Configuration(plan, 1, (), ((coupon, None),)))

    assert amounts(result)[-1] == (InvoiceLineKind.DISCOUNT, Decimal("-9.35"))
    assert result.lines[-1].description == f"Coupon {coupon.code} (20% off)"
    assert (result.subtotal, result.discount_total, result.total) == (
        Decimal("46.75"),
        Decimal("9.35"),
        Decimal("37.40"),
    )


def test_flat_coupon_takes_its_amount_off(organization):
    plan = PlanFactory(price=Decimal("30.00"))
    coupon = CouponFactory(flat=True, amount_off=Decimal("7.50"))

    result = charges(organization, Configuration(plan, 1, (), ((coupon, None),)))

    assert (result.discount_total, result.total) == (Decimal("7.50"), Decimal("22.50"))


def test_flat_coupon_above_price_never_goes_below_zero(organization):
    plan = PlanFactory(price=Decimal("30.00"), setup_fee=Decimal("10.00"))
    coupon = CouponFactory(flat=True, amount_off=Decimal("50.00"))
    book = book_for(organization)

    result = period_charges(
        Configuration(plan, 1, (), ((coupon, None),)),
        book,
        PERIOD,
        extra_lines=[setup_fee_line(plan, book)],
    )

    # The coupon covers the recurring 30.00 only; the setup fee is charged in full.
    assert amounts(result)[-1] == (InvoiceLineKind.DISCOUNT, Decimal("-30.00"))
    assert (result.subtotal, result.discount_total, result.total) == (
        Decimal("40.00"),
        Decimal("30.00"),
        Decimal("10.00"),
    )
    config = Configuration(plan, 1, (), ((coupon, None),))
    assert recurring_amount(config, book) == Decimal("0.00")


def test_stacked_coupons_never_discount_more_than_the_base(organization):
    plan = PlanFactory(price=Decimal("20.00"))
    percent = CouponFactory(percent_off=Decimal("75"))
    flat = CouponFactory(flat=True, amount_off=Decimal("10.00"))

    result = charges(organization, Configuration(plan, 1, (), ((percent, None), (flat, None))))

    assert amounts(result)[1:] == [
        (InvoiceLineKind.DISCOUNT, Decimal("-15.00")),
        (InvoiceLineKind.DISCOUNT, Decimal("-5.00")),
    ]
    assert result.total == Decimal("0.00")


def test_coupon_initial_cycles_per_duration(organization):
    assert coupon_initial_cycles(CouponFactory(once=True)) == 1
    assert coupon_initial_cycles(CouponFactory(duration=CouponDuration.FOREVER)) is None
    assert coupon_initial_cycles(CouponFactory(repeating=True, duration_cycles=4)) == 4


def _subscribe_with_coupon(travel, coupon) -> Subscription:
    travel(D(2026, 4, 5))
    customer = CustomerFactory()
    payment_method_add(
        customer=customer, number="4242424242424242", exp_month=12, exp_year=2030, cvc="123"
    )
    plan = PlanFactory(price=Decimal("40.00"))
    return subscription_create(customer=customer, plan=plan, coupon_code=coupon.code).subscription


def _renew_months(travel, sub, months: int) -> list[Decimal]:
    for n in range(1, months + 1):
        travel(D(2026, 4 + n, 5))
        assert subscription_renew(subscription=sub) is not None
    return list(
        Invoice.objects.filter(subscription=sub)
        .order_by("period_start")
        .values_list("discount_total", flat=True)
    )


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"once": True}, ["10.00", "0.00", "0.00", "0.00", "0.00"]),
        ({"duration": CouponDuration.FOREVER}, ["10.00"] * 5),
        ({"repeating": True, "duration_cycles": 3}, ["10.00"] * 3 + ["0.00"] * 2),
    ],
)
def test_coupon_duration_discounts_only_its_billed_cycles(organization, travel, traits, expected):
    coupon = CouponFactory(percent_off=Decimal("25"), **traits)
    sub = _subscribe_with_coupon(travel, coupon)

    discounts = _renew_months(travel, sub, 4)

    assert discounts == [Decimal(x) for x in expected]
    row = SubscriptionCoupon.objects.get(subscription=sub)
    assert row.remaining_cycles == (None if coupon.duration == CouponDuration.FOREVER else 0)


def test_exhausted_coupon_drops_out_of_configuration(organization, travel):
    coupon = CouponFactory(once=True)
    sub = _subscribe_with_coupon(travel, coupon)
    assert configuration_of(sub).coupons == ()


def test_create_with_invalid_coupon_raises_and_creates_nothing(organization, travel):
    travel(D(2026, 4, 5))
    expired = CouponFactory(expires_on=D(2026, 4, 4))
    with pytest.raises(ValidationFailed) as error:
        subscription_create(
            customer=CustomerFactory(), plan=PlanFactory(), coupon_code=expired.code
        )
    assert error.value.field == "coupon"
    assert not Subscription.objects.exists()


# ----------------------------------------------------------------------------- customer groups
def _group(kind=None, percent="10", discount="0"):
    price_list = PriceListFactory(kind=kind, percent=Decimal(percent)) if kind else None
    return CustomerGroupFactory(price_list=price_list, discount_percent=Decimal(discount))


@pytest.mark.parametrize(
    ("kind", "percent", "unit_price", "amount"),
    [
        (PriceListKind.MARKDOWN, "10", Decimal("27.0000"), Decimal("54.00")),
        (PriceListKind.MARKUP, "15", Decimal("34.5000"), Decimal("69.00")),
        (PriceListKind.MARKDOWN, "33.333", Decimal("20.0001"), Decimal("40.00")),
    ],
)
def test_group_price_list_percentage_changes_unit_price(
    organization, kind, percent, unit_price, amount
):
    plan = PlanFactory(price=Decimal("30.00"))

    result = charges(organization, Configuration(plan, 2), group=_group(kind, percent))

    assert (result.lines[0].unit_price, result.lines[0].amount) == (unit_price, amount)


def test_group_price_list_unit_price_rounds_half_up(organization):
    plan = PlanFactory(price=Decimal("1.0005"))
    book = book_for(organization, group=_group(PriceListKind.MARKDOWN, "10"))
    assert book.unit_price(plan) == Decimal("0.9005")  # 0.90045 → half-up


def test_group_per_item_price_list_overrides_listed_items_only(organization):
    plan = PlanFactory(price=Decimal("30.00"))
    listed = AddonFactory(price=Decimal("5.00"))
    unlisted = AddonFactory(price=Decimal("3.00"))
    group = _group(PriceListKind.PER_ITEM)
    PriceListItem.objects.create(price_list=group.price_list, plan=plan, price=Decimal("25.00"))
    PriceListItem.objects.create(price_list=group.price_list, addon=listed, price=Decimal("4.50"))

    result = charges(
        organization, Configuration(plan, 1, ((listed, 2), (unlisted, 1))), group=group
    )

    assert [(line.unit_price, line.amount) for line in result.lines] == [
        (Decimal("25.00"), Decimal("25.00")),
        (Decimal("4.50"), Decimal("9.00")),
        (Decimal("3.0000"), Decimal("3.00")),
    ]


def test_group_discount_applies_after_coupons(organization):
    plan = PlanFactory(price=Decimal("100.00"))
    coupon = CouponFactory(percent_off=Decimal("10"))
    group = _group(discount="5")

    result = charges(organization, Configuration(plan, 1, (), ((coupon, None),)), group=group)

    assert [(line.description, line.amount) for line in result.lines[1:]] == [
        (f"Coupon {coupon.code} (10% off)", Decimal("-10.00")),
        ("Group discount (5%)", Decimal("-5.00")),
    ]
    assert result.total == Decimal("85.00")


def test_group_discount_with_price_list_uses_the_group_prices(organization):
    plan = PlanFactory(price=Decimal("50.00"))
    group = _group(PriceListKind.MARKDOWN, "20", discount="10")

    result = charges(organization, Configuration(plan, 1), group=group)

    assert (result.subtotal, result.discount_total, result.total) == (
        Decimal("40.00"),
        Decimal("4.00"),
        Decimal("36.00"),
    )


def test_group_discount_never_exceeds_what_coupons_left(organization):
    plan = PlanFactory(price=Decimal("10.00"))
    coupon = CouponFactory(flat=True, amount_off=Decimal("9.50"))

    result = charges(
        organization, Configuration(plan, 1, (), ((coupon, None),)), group=_group(discount="10")
    )

    assert result.discount_total == Decimal("10.00")
    assert result.total == Decimal("0.00")


# ----------------------------------------------------------------------------- tax
def test_tax_organization_default_rate_on_discounted_subtotal(organization):
    organization.tax_rate = Decimal("10")
    organization.save()
    plan = PlanFactory(price=Decimal("100.00"))
    coupon = CouponFactory(percent_off=Decimal("10"))

    result = charges(organization, Configuration(plan, 1, (), ((coupon, None),)))

    assert (result.tax_rate, result.tax_total, result.total) == (
        Decimal("10"),
        Decimal("9.00"),
        Decimal("99.00"),
    )


def test_tax_rounds_half_up(organization):
    organization.tax_rate = Decimal("8.25")
    organization.save()

    result = charges(organization, Configuration(PlanFactory(price=Decimal("30.00")), 1))

    assert result.tax_total == Decimal("2.48")  # 2.475 → 2.48


@pytest.mark.parametrize(
    ("customer_fields", "rate", "tax"),
    [
        ({"tax_rate": Decimal("19")}, Decimal("19"), Decimal("5.70")),
        ({"tax_rate": Decimal("0")}, Decimal("0"), Decimal("0.00")),
        ({"tax_exempt": True}, Decimal("0"), Decimal("0.00")),
        ({"tax_exempt": True, "tax_rate": Decimal("19")}, Decimal("0"), Decimal("0.00")),
    ],
)
def test_tax_customer_rate_or_exemption_beats_organization_rate(
    organization, customer_fields, rate, tax
):
    organization.tax_rate = Decimal("10")
    organization.save()

    result = charges(
        organization, Configuration(PlanFactory(price=Decimal("30.00")), 1), **customer_fields
    )

    assert (result.tax_rate, result.tax_total, result.total) == (
        rate,
        tax,
        Decimal("30.00") + tax,
    )


# ----------------------------------------------------------------------------- rounding
def test_each_line_rounds_half_up_and_totals_sum_rounded_lines(organization):
    plan = PlanFactory(price=Decimal("0.125"))
    addon = AddonFactory(price=Decimal("0.125"))
    bulk = AddonFactory(price=Decimal("3.3350"))

    result = charges(organization, Configuration(plan, 1, ((addon, 1), (bulk, 3))))

    assert [line.amount for line in result.lines] == [
        Decimal("0.13"),  # half-even would say 0.12
        Decimal("0.13"),
        Decimal("10.01"),  # 10.005
    ]
    assert result.subtotal == Decimal("10.27")  # not round(0.125 + 0.125 + 10.005) = 10.26


def test_totals_refuses_a_negative_subtotal(organization):
    from billing.pricing import LineDraft

    line = LineDraft(
        kind=InvoiceLineKind.PRORATION_CREDIT,
        description="credit",
        quantity=Decimal(1),
        unit_price=Decimal("-1"),
        amount=Decimal("-1.00"),
    )
    with pytest.raises(ValueError, match="negative"):
        totals([line], book_for(organization))
