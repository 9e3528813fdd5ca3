"""DESIGN rule 5, preview equals charge: every money-moving subscription action run with
``dry_run=True`` writes nothing and returns the very amounts the real run then invoices, credits
and charges, to the cent. One test per action, plus a property test over random changes.
"""

import calendar
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.enums import ChangeTiming, InvoiceStatus, PaymentStatus
from billing.models import (
    CreditAllocation,
    CreditNote,
    Event,
    Invoice,
    InvoiceLine,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentAttempt,
    SandboxCharge,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
)
from billing.selectors import invoice_balance
from billing.services.credits import credit_note_issue
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import (
    ChangeRequest,
    Outcome,
    subscription_cancel,
    subscription_change,
    subscription_create,
    subscription_pause,
    subscription_reactivate,
    subscription_renew,
    subscription_resume,
)
from billing.services.subscriptions import (
    subscription_convert_trial as convert_trial,
)
from tests.factories import AddonFactory, CouponFactory, CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db

D = datetime.date
GOOD_CARD = "4242424242424242"
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
    PaymentAllocation,
    PaymentAttempt,
    SandboxCharge,
    Event,
)


# ----------------------------------------------------------------------------- helpers
def moment(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC)


def new_customer():
    customer = CustomerFactory()
    payment_method_add(customer=customer, number=GOOD_CARD, exp_month=12, exp_year=2030, cvc="123")
    return customer


def database_state(sub: Subscription | None) -> tuple:
    counts = {model.__name__: model.objects.count() for model in COUNTED}
    row = Subscription.objects.filter(pk=sub.pk).values().get() if sub and sub.pk else None
    return counts, row


def line_tuples(lines) -> list[tuple]:
    return [
        (line.kind, line.description, line.quantity, line.unit_price, line.amount) for line in lines
    ]


def assert_preview_equals_charge(preview: Outcome, real: Outcome) -> None:
    """The dry run's summary is what the real run invoiced, credited and charged."""
    assert preview.dry_run and not real.dry_run
    summary = preview.summary
    assert real.summary == summary
    if summary.invoice is None:
        assert real.invoice is None
    else:
        invoice = Invoice.objects.get(pk=real.invoice.pk)
        planned = summary.invoice
        assert (invoice.subtotal, invoice.discount_total, invoice.tax_total, invoice.total) == (
            planned.subtotal,
            planned.discount_total,
            planned.tax_total,
            planned.total,
        )
        assert invoice.tax_rate == planned.tax_rate
        assert line_tuples(invoice.lines.all()) == line_tuples(planned.lines)
        assert invoice.total >= 0
        _paid, credited, balance = invoice_balance(invoice)
        assert credited == summary.credit_applied
        if real.payment is not None:
            assert real.payment.status == PaymentStatus.SUCCEEDED
            assert real.payment.amount == summary.due_now
        if summary.due_now == 0 or real.payment is not None:
            assert balance == 0 and invoice.status == InvoiceStatus.PAID
    if summary.credit > 0:
        assert real.credit_note is not None
        assert CreditNote.objects.get(pk=real.credit_note.pk).amount == summary.credit
    else:
        assert real.credit_note is None


def preview_then_run(action: Callable[[bool], Outcome], sub: Subscription | None) -> Outcome:
    before = database_state(sub)
    preview = action(True)
    assert database_state(sub) == before, "a dry run wrote to the database"
    real = action(False)
    assert_preview_equals_charge(preview, real)
    return real


@pytest.fixture
def taxed(organization):
    organization.tax_rate = Decimal("8.25")
    organization.save()
    return organization


@pytest.fixture
def travel(time_machine):
    def to(day: datetime.date) -> None:
        time_machine.move_to(moment(day), tick=False)

    return to


@pytest.fixture
def live(taxed, travel):
    """A live monthly 123.45 × 2 subscription with a recurring addon and a 15 % coupon."""
    travel(D(2026, 1, 31))
    addon = AddonFactory(price=Decimal("7.77"))
    coupon = CouponFactory(percent_off=Decimal("15"))
    sub = subscription_create(
        customer=new_customer(),
        plan=PlanFactory(price=Decimal("123.45"), max_quantity=10),
        quantity=2,
        addons={addon.code: 3},
        coupon_code=coupon.code,
    ).subscription
    travel(D(2026, 2, 28))
    subscription_renew(subscription=sub)  # term Feb 28 – Mar 31, anchored on the 31st
    return Subscription.objects.get(pk=sub.pk)


# ----------------------------------------------------------------------------- one per action
def test_preview_equals_charge_create_live(taxed, travel):
    travel(D(2026, 3, 31))
    customer = new_customer()
    plan = PlanFactory(price=Decimal("99.99"), setup_fee=Decimal("25.005"))
    addon = AddonFactory(price=Decimal("3.333"))
    coupon = CouponFactory(flat=True, amount_off=Decimal("10.00"))

    real = preview_then_run(
        lambda dry: subscription_create(
            customer=customer,
            plan=plan,
            quantity=3,
            addons={addon.code: 5},
            coupon_code=coupon.code,
            dry_run=dry,
        ),
        None,
    )

    assert real.invoice.total == Decimal("359.01")
    assert Subscription.objects.filter(customer=customer).count() == 1


def test_preview_equals_charge_create_with_existing_credit(taxed, travel):
    travel(D(2026, 3, 31))
    customer = new_customer()

    credit_note_issue(customer=customer, amount=Decimal("12.34"), reason="goodwill")
    plan = PlanFactory(price=Decimal("50.00"))

    real = preview_then_run(
        lambda dry: subscription_create(customer=customer, plan=plan, dry_run=dry), None
    )

    assert real.summary.credit_applied == Decimal("12.34")
    assert real.payment.amount == Decimal("41.79")  # 54.13 − 12.34


def test_preview_equals_charge_convert_trial(taxed, travel):
    travel(D(2026, 3, 10))
    sub = subscription_create(
        customer=new_customer(),
        plan=PlanFactory(price=Decimal("45.55"), trial_days=30, setup_fee=Decimal("5.00")),
    ).subscription
    travel(D(2026, 3, 17))

    real = preview_then_run(lambda dry: convert_trial(subscription=sub, dry_run=dry), sub)

    assert real.invoice.total == Decimal("54.72")  # (45.55 + 5.00) × 1.0825


def test_preview_equals_charge_change_upgrade_now(live, travel):
    travel(D(2026, 3, 11))  # 20 of 31 days left
    bigger = PlanFactory(price=Decimal("199.99"), max_quantity=10)

    real = preview_then_run(
        lambda dry: subscription_change(
            subscription=live, request=ChangeRequest(plan=bigger, quantity=3), dry_run=dry
        ),
        live,
    )

    assert real.invoice is not None and real.credit_note is None


def test_preview_equals_charge_change_downgrade_now(live, travel):
    travel(D(2026, 3, 11))

    real = preview_then_run(
        lambda dry: subscription_change(
            subscription=live, request=ChangeRequest(quantity=1, addons={}), dry_run=dry
        ),
        live,
    )

    assert real.invoice is None and real.credit_note is not None


def test_preview_equals_charge_frequency_change_now(live, travel):
    travel(D(2026, 3, 11))
    yearly = PlanFactory(price=Decimal("1234.56"), yearly=True, max_quantity=10)

    real = preview_then_run(
        lambda dry: subscription_change(
            subscription=live, request=ChangeRequest(plan=yearly), dry_run=dry
        ),
        live,
    )

    assert real.summary.next_billing_date == D(2027, 3, 11)


def test_preview_equals_charge_scheduled_change_moves_no_money(live, travel):
    travel(D(2026, 3, 11))
    preview_then_run(
        lambda dry: subscription_change(
            subscription=live,
            request=ChangeRequest(quantity=5),
            timing=ChangeTiming.TERM_END,
            dry_run=dry,
        ),
        live,
    )
    assert ScheduledChange.objects.filter(subscription=live).count() == 1


def test_preview_equals_charge_resume_after_billing_date(live, travel):
    travel(D(2026, 3, 11))
    subscription_pause(subscription=live)
    travel(D(2026, 4, 9))

    real = preview_then_run(lambda dry: subscription_resume(subscription=live, dry_run=dry), live)

    assert real.invoice.period_start == D(2026, 4, 9)


def test_preview_equals_charge_resume_before_billing_date(live, travel):
    travel(D(2026, 3, 11))
    subscription_pause(subscription=live)
    travel(D(2026, 3, 20))

    real = preview_then_run(lambda dry: subscription_resume(subscription=live, dry_run=dry), live)

    assert real.invoice is None


def test_preview_equals_charge_reactivate_out_of_term_with_credit(live, travel):
    travel(D(2026, 3, 11))
    subscription_cancel(subscription=live, timing=ChangeTiming.NOW, credit_unused=True)
    travel(D(2026, 5, 2))

    real = preview_then_run(
        lambda dry: subscription_reactivate(subscription=live, dry_run=dry), live
    )

    assert real.summary.credit_applied > 0  # the cancellation credit pays part of it


def test_preview_equals_charge_cancel_now_with_credit(live, travel):
    travel(D(2026, 3, 11))

    real = preview_then_run(
        lambda dry: subscription_cancel(
            subscription=live, timing=ChangeTiming.NOW, credit_unused=True, dry_run=dry
        ),
        live,
    )

    assert real.credit_note.amount > 0


def test_preview_equals_charge_pause_with_credit(live, travel):
    travel(D(2026, 3, 11))

    real = preview_then_run(
        lambda dry: subscription_pause(subscription=live, credit_unused=True, dry_run=dry), live
    )

    assert real.credit_note.amount > 0


# ----------------------------------------------------------------------------- property
@dataclass(frozen=True)
class Scenario:
    start: datetime.date
    renewals: int
    day_fraction: float
    old_price: Decimal
    new_price: Decimal
    old_quantity: int
    new_quantity: int
    yearly: bool
    tax_rate: Decimal
    coupon_percent: Decimal | None


def _start_dates() -> st.SearchStrategy[datetime.date]:
    """Mostly month ends (anchors on the 29th–31st), some ordinary days."""

    def clamp(month: int, day: int) -> datetime.date:
        return D(2026, month, min(day, calendar.monthrange(2026, month)[1]))

    return st.builds(
        clamp,
        st.integers(min_value=1, max_value=12),
        st.one_of(st.integers(min_value=28, max_value=31), st.integers(min_value=1, max_value=27)),
    )


prices = st.decimals(min_value=0, max_value=5000, places=2, allow_nan=False, allow_infinity=False)
scenarios = st.builds(
    Scenario,
    start=_start_dates(),
    renewals=st.integers(min_value=0, max_value=3),
    day_fraction=st.floats(min_value=0, max_value=0.999),
    old_price=prices,
    new_price=prices,
    old_quantity=st.integers(min_value=1, max_value=20),
    new_quantity=st.integers(min_value=1, max_value=20),
    yearly=st.booleans(),
    tax_rate=st.decimals(min_value=0, max_value=30, places=3, allow_nan=False),
    coupon_percent=st.none() | st.decimals(min_value=1, max_value=100, places=2, allow_nan=False),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios)
def test_preview_equals_charge_random_changes_now(organization, scenario):
    org = Organization.load()
    org.tax_rate = scenario.tax_rate
    org.save()
    with time_machine.travel(moment(scenario.start), tick=False) as clock:
        old = PlanFactory(price=scenario.old_price, max_quantity=20)
        new = PlanFactory(price=scenario.new_price, max_quantity=20, yearly=scenario.yearly)
        coupon = (
            CouponFactory(percent_off=scenario.coupon_percent)
            if scenario.coupon_percent is not None
            else None
        )
        sub = subscription_create(
            customer=new_customer(),
            plan=old,
            quantity=scenario.old_quantity,
            coupon_code=coupon.code if coupon else "",
        ).subscription
        for _ in range(scenario.renewals):
            clock.move_to(moment(Subscription.objects.get(pk=sub.pk).current_term_end))
            assert subscription_renew(subscription=sub) is not None
        sub = Subscription.objects.get(pk=sub.pk)
        term_days = (sub.current_term_end - sub.current_term_start).days
        change_day = sub.current_term_start + datetime.timedelta(
            days=int(scenario.day_fraction * term_days)
        )
        assert sub.current_term_start <= change_day < sub.current_term_end
        clock.move_to(moment(change_day))

        real = preview_then_run(
            lambda dry: subscription_change(
                subscription=sub,
                request=ChangeRequest(plan=new, quantity=scenario.new_quantity),
                dry_run=dry,
            ),
            sub,
        )

        sub = Subscription.objects.get(pk=sub.pk)
        if scenario.yearly:
            assert (sub.anchor_date, sub.current_term_start) == (change_day, change_day)
        else:
            assert sub.current_term_end == real.summary.next_billing_date
        assert not Invoice.objects.filter(total__lt=0).exists()
        assert not CreditNote.objects.filter(amount__lte=0).exists()

        # The summary's next invoice is the renewal's invoice.
        clock.move_to(moment(real.summary.next_billing_date))
        renewal = subscription_renew(subscription=sub).invoice
        assert renewal.period_start == real.summary.next_billing_date
        assert renewal.total == real.summary.next_amount
