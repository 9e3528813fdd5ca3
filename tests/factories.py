"""factory-boy factories for every model, with one trait per status."""

import datetime
import uuid
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from accounts.models import User
from billing import models as m
from billing.enums import (
    AddonKind,
    CancelReason,
    CouponDuration,
    CreditNoteReason,
    DiscountType,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentStatus,
    PortalRole,
    SubscriptionStatus,
)

TODAY = datetime.date(2026, 1, 15)


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    full_name = factory.Faker("name")
    password = factory.django.Password("correct horse battery staple")

    class Params:
        staff = factory.Trait(is_staff=True, is_superuser=True)


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = m.Organization
        django_get_or_create = ("id",)

    id = 1
    name = "Northwind Cloud"
    email = "billing@northwind.example"
    base_currency = "USD"
    time_zone = "UTC"
    tax_rate = Decimal("0")


class ProductFactory(DjangoModelFactory):
    class Meta:
        model = m.Product

    name = factory.Sequence(lambda n: f"Product {n}")


class PlanFactory(DjangoModelFactory):
    class Meta:
        model = m.Plan

    product = factory.SubFactory(ProductFactory)
    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    price = Decimal("30.00")

    class Params:
        free = factory.Trait(is_free=True, price=Decimal("0"), setup_fee=Decimal("0"))
        yearly = factory.Trait(interval="year")
        with_trial = factory.Trait(trial_days=14)
        inactive = factory.Trait(active=False)


class AddonFactory(DjangoModelFactory):
    class Meta:
        model = m.Addon

    code = factory.Sequence(lambda n: f"addon-{n}")
    name = factory.Sequence(lambda n: f"Addon {n}")
    price = Decimal("5.00")
    kind = AddonKind.RECURRING

    class Params:
        one_time = factory.Trait(kind=AddonKind.ONE_TIME)
        metered = factory.Trait(kind=AddonKind.METERED, unit_name="hour")


class CouponFactory(DjangoModelFactory):
    class Meta:
        model = m.Coupon

    code = factory.Sequence(lambda n: f"coupon-{n}")
    name = factory.Sequence(lambda n: f"Coupon {n}")
    discount_type = DiscountType.PERCENT
    percent_off = Decimal("10")
    amount_off = None
    duration = CouponDuration.FOREVER

    class Params:
        flat = factory.Trait(
            discount_type=DiscountType.FLAT, percent_off=None, amount_off=Decimal("5.00")
        )
        repeating = factory.Trait(duration=CouponDuration.REPEATING, duration_cycles=3)
        once = factory.Trait(duration=CouponDuration.ONCE)
        expired = factory.Trait(expires_on=TODAY - datetime.timedelta(days=1))


class PriceListFactory(DjangoModelFactory):
    class Meta:
        model = m.PriceList

    name = factory.Sequence(lambda n: f"Price list {n}")
    percent = Decimal("10")


class CustomerGroupFactory(DjangoModelFactory):
    class Meta:
        model = m.CustomerGroup

    name = factory.Sequence(lambda n: f"Group {n}")


class CustomerFactory(DjangoModelFactory):
    class Meta:
        model = m.Customer

    display_name = factory.Sequence(lambda n: f"Customer {n}")
    company_name = factory.LazyAttribute(lambda o: f"{o.display_name} Ltd")
    email = factory.Sequence(lambda n: f"billing{n}@customer.test")
    billing_line1 = "1 Main Street"
    billing_city = "Springfield"
    billing_postal_code = "12345"
    billing_country = "United States"

    class Params:
        inactive = factory.Trait(status="inactive")
        hidden_from_parent = factory.Trait(visible_to_parent=False)


class ContactPersonFactory(DjangoModelFactory):
    class Meta:
        model = m.ContactPerson

    customer = factory.SubFactory(CustomerFactory)
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.Sequence(lambda n: f"contact{n}@customer.test")
    portal_role = PortalRole.VIEWER

    class Params:
        payer = factory.Trait(portal_role=PortalRole.PAYER)
        admin = factory.Trait(portal_role=PortalRole.ADMIN)
        with_login = factory.Trait(
            user=factory.SubFactory(UserFactory, email=factory.SelfAttribute("..email"))
        )


class PaymentMethodFactory(DjangoModelFactory):
    class Meta:
        model = m.PaymentMethod

    customer = factory.SubFactory(CustomerFactory)
    gateway = "sandbox"
    token = factory.LazyFunction(lambda: f"tok_{uuid.uuid4().hex}")
    brand = "Visa"
    last4 = "4242"
    exp_month = 12
    exp_year = 2030

    class Params:
        default = factory.Trait(is_default=True)
        expired = factory.Trait(exp_year=2020)


class SubscriptionFactory(DjangoModelFactory):
    class Meta:
        model = m.Subscription

    customer = factory.SubFactory(CustomerFactory)
    plan = factory.SubFactory(PlanFactory)
    quantity = 1
    status = SubscriptionStatus.LIVE
    start_date = TODAY
    anchor_date = factory.SelfAttribute("start_date")
    current_term_start = factory.SelfAttribute("start_date")
    current_term_end = factory.LazyAttribute(lambda o: o.start_date + datetime.timedelta(days=31))

    class Params:
        future = factory.Trait(
            status=SubscriptionStatus.FUTURE,
            start_date=TODAY + datetime.timedelta(days=10),
            current_term_start=None,
            current_term_end=None,
        )
        in_trial = factory.Trait(
            status=SubscriptionStatus.IN_TRIAL,
            trial_start=TODAY,
            trial_end=TODAY + datetime.timedelta(days=14),
            current_term_start=None,
            current_term_end=None,
        )
        non_renewing = factory.Trait(
            status=SubscriptionStatus.NON_RENEWING,
            cancel_at=factory.SelfAttribute("current_term_end"),
        )
        paused = factory.Trait(status=SubscriptionStatus.PAUSED, paused_at=TODAY, pause_at=TODAY)
        past_due = factory.Trait(status=SubscriptionStatus.PAST_DUE)
        unpaid = factory.Trait(status=SubscriptionStatus.UNPAID)
        expired = factory.Trait(
            status=SubscriptionStatus.EXPIRED,
            trial_start=TODAY - datetime.timedelta(days=14),
            trial_end=TODAY,
            current_term_start=None,
            current_term_end=None,
        )
        cancelled = factory.Trait(
            status=SubscriptionStatus.CANCELLED,
            cancel_reason=CancelReason.CUSTOMER,
            cancelled_at=factory.LazyFunction(
                lambda: datetime.datetime(2026, 1, 20, tzinfo=datetime.UTC)
            ),
        )


class SubscriptionAddonFactory(DjangoModelFactory):
    class Meta:
        model = m.SubscriptionAddon

    subscription = factory.SubFactory(SubscriptionFactory)
    addon = factory.SubFactory(AddonFactory)
    quantity = 1


class SubscriptionCouponFactory(DjangoModelFactory):
    class Meta:
        model = m.SubscriptionCoupon

    subscription = factory.SubFactory(SubscriptionFactory)
    coupon = factory.SubFactory(CouponFactory)


class InvoiceFactory(DjangoModelFactory):
    """A finalized, open invoice of 100.00 by default; traits move it along its lifecycle."""

    class Meta:
        model = m.Invoice
        skip_postgeneration_save = True

    customer = factory.SubFactory(CustomerFactory)
    kind = InvoiceKind.ONE_TIME
    status = InvoiceStatus.OPEN
    number = factory.Sequence(lambda n: f"TEST-{n:06d}")
    currency = "USD"
    issue_date = TODAY
    due_date = factory.LazyAttribute(lambda o: o.issue_date + datetime.timedelta(days=14))
    subtotal = Decimal("100.00")
    discount_total = Decimal("0.00")
    tax_total = Decimal("0.00")
    total = factory.LazyAttribute(lambda o: o.subtotal - o.discount_total + o.tax_total)

    class Params:
        draft = factory.Trait(
            status=InvoiceStatus.DRAFT, number=None, issue_date=None, due_date=None
        )
        paid = factory.Trait(status=InvoiceStatus.PAID)
        void = factory.Trait(status=InvoiceStatus.VOID)
        uncollectible = factory.Trait(status=InvoiceStatus.UNCOLLECTIBLE)
        overdue = factory.Trait(issue_date=TODAY - datetime.timedelta(days=45))

    @factory.post_generation
    def lines(obj, create, extracted, **kwargs):  # noqa: N805 (factory-boy passes the instance)
        if not create or extracted is False:
            return
        InvoiceLineFactory(invoice=obj, amount=obj.subtotal, unit_price=obj.subtotal)


class InvoiceLineFactory(DjangoModelFactory):
    class Meta:
        model = m.InvoiceLine

    invoice = factory.SubFactory(InvoiceFactory, lines=False)
    kind = InvoiceLineKind.ONE_TIME
    description = "Professional services"
    quantity = Decimal("1")
    unit_price = Decimal("100.00")
    amount = Decimal("100.00")


class PaymentFactory(DjangoModelFactory):
    class Meta:
        model = m.Payment

    customer = factory.SubFactory(CustomerFactory)
    amount = Decimal("100.00")
    currency = "USD"
    status = PaymentStatus.SUCCEEDED
    gateway = "sandbox"
    idempotency_key = factory.LazyFunction(lambda: uuid.uuid4().hex)
    receipt_number = factory.Sequence(lambda n: f"RCPT-{n:06d}")
    received_on = TODAY

    class Params:
        pending = factory.Trait(status=PaymentStatus.PENDING, receipt_number=None)
        failed = factory.Trait(
            status=PaymentStatus.FAILED, receipt_number=None, failure_code="card_declined"
        )
        unknown = factory.Trait(status=PaymentStatus.UNKNOWN, receipt_number=None)
        refunded = factory.Trait(status=PaymentStatus.REFUNDED)


class PaymentAllocationFactory(DjangoModelFactory):
    class Meta:
        model = m.PaymentAllocation

    payment = factory.SubFactory(PaymentFactory)
    invoice = factory.SubFactory(
        InvoiceFactory, customer=factory.SelfAttribute("..payment.customer")
    )
    amount = Decimal("100.00")


class CreditNoteFactory(DjangoModelFactory):
    class Meta:
        model = m.CreditNote

    number = factory.Sequence(lambda n: f"CN-{n:06d}")
    customer = factory.SubFactory(CustomerFactory)
    reason = CreditNoteReason.GOODWILL
    currency = "USD"
    amount = Decimal("20.00")
    issue_date = TODAY

    class Params:
        void = factory.Trait(status="void")


class CreditAllocationFactory(DjangoModelFactory):
    class Meta:
        model = m.CreditAllocation

    credit_note = factory.SubFactory(CreditNoteFactory)
    invoice = factory.SubFactory(
        InvoiceFactory, customer=factory.SelfAttribute("..credit_note.customer")
    )
    amount = Decimal("10.00")


class UsageRecordFactory(DjangoModelFactory):
    class Meta:
        model = m.UsageRecord

    subscription = factory.SubFactory(SubscriptionFactory)
    addon = factory.SubFactory(AddonFactory, metered=True)
    quantity = Decimal("2.5")
    used_at = factory.LazyFunction(lambda: datetime.datetime(2026, 1, 20, tzinfo=datetime.UTC))
    idempotency_key = factory.LazyFunction(lambda: uuid.uuid4().hex)


class PaymentAttemptFactory(DjangoModelFactory):
    class Meta:
        model = m.PaymentAttempt

    invoice = factory.SubFactory(InvoiceFactory)
    attempt_number = factory.Sequence(lambda n: n % 50)
    scheduled_for = factory.LazyFunction(
        lambda: datetime.datetime(2026, 1, 16, tzinfo=datetime.UTC)
    )


class RefundFactory(DjangoModelFactory):
    class Meta:
        model = m.Refund

    payment = factory.SubFactory(PaymentFactory)
    amount = Decimal("10.00")
    idempotency_key = factory.LazyFunction(lambda: uuid.uuid4().hex)


class ScheduledChangeFactory(DjangoModelFactory):
    class Meta:
        model = m.ScheduledChange

    subscription = factory.SubFactory(SubscriptionFactory)
    plan = factory.SubFactory(PlanFactory)
    quantity = 2


class EventFactory(DjangoModelFactory):
    class Meta:
        model = m.Event

    kind = "subscription.created"
    description = "Subscription created"
    customer = factory.SubFactory(CustomerFactory)
