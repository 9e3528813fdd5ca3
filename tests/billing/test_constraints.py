"""The database itself refuses what must never be stored, whatever code path tries."""

import datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from accounts.models import User
from billing import models as m
from billing.enums import DiscountType, InvoiceKind, InvoiceStatus
from portal.models import PortalPreferences, Review
from tests import factories as f

pytestmark = pytest.mark.django_db

D = Decimal


def rejected(build) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        build()


# Each case breaks exactly one invariant; the matching "accepted" twin proves the setup is valid.
CASES = {
    "organization_second_row": lambda: m.Organization.objects.create(id=2),
    "sequence_next_zero": lambda: m.DocumentSequence.objects.create(kind="invoice", next_number=0),
    "plan_negative_price": lambda: f.PlanFactory(price=D("-1")),
    "plan_negative_setup_fee": lambda: f.PlanFactory(setup_fee=D("-0.01")),
    "plan_interval_count_zero": lambda: f.PlanFactory(interval_count=0),
    "plan_min_quantity_zero": lambda: f.PlanFactory(min_quantity=0),
    "plan_max_below_min": lambda: f.PlanFactory(min_quantity=5, max_quantity=2),
    "plan_free_with_price": lambda: f.PlanFactory(is_free=True, price=D("1")),
    "plan_duplicate_code": lambda: [f.PlanFactory(code="pro"), f.PlanFactory(code="pro")],
    "addon_negative_price": lambda: f.AddonFactory(price=D("-5")),
    "coupon_percent_without_value": lambda: f.CouponFactory(percent_off=None),
    "coupon_percent_over_100": lambda: f.CouponFactory(percent_off=D("100.5")),
    "coupon_flat_with_percent": lambda: f.CouponFactory(
        discount_type=DiscountType.FLAT, amount_off=D("5"), percent_off=D("5")
    ),
    "coupon_flat_zero": lambda: f.CouponFactory(flat=True, amount_off=D("0")),
    "coupon_repeating_without_cycles": lambda: f.CouponFactory(
        duration="repeating", duration_cycles=None
    ),
    "price_list_item_no_target": lambda: m.PriceListItem.objects.create(
        price_list=f.PriceListFactory(), price=D("1")
    ),
    "price_list_item_two_targets": lambda: m.PriceListItem.objects.create(
        price_list=f.PriceListFactory(), plan=f.PlanFactory(), addon=f.AddonFactory(), price=D("1")
    ),
    "contact_duplicate_email_any_case": lambda: [
        c := f.ContactPersonFactory(email="ann@x.test"),
        f.ContactPersonFactory(customer=c.customer, email="ANN@x.test"),
    ],
    "contact_two_primaries": lambda: [
        c := f.ContactPersonFactory(is_primary=True),
        f.ContactPersonFactory(customer=c.customer, is_primary=True),
    ],
    "subscription_quantity_zero": lambda: f.SubscriptionFactory(quantity=0),
    "subscription_term_end_before_start": lambda: f.SubscriptionFactory(
        current_term_start=datetime.date(2026, 2, 1), current_term_end=datetime.date(2026, 1, 1)
    ),
    "subscription_trial_end_before_start": lambda: f.SubscriptionFactory(
        trial_start=datetime.date(2026, 2, 1), trial_end=datetime.date(2026, 1, 1)
    ),
    "subscription_resume_before_pause": lambda: f.SubscriptionFactory(
        pause_at=datetime.date(2026, 2, 1), resume_at=datetime.date(2026, 2, 1)
    ),
    "subscription_addon_twice": lambda: [
        a := f.SubscriptionAddonFactory(),
        f.SubscriptionAddonFactory(subscription=a.subscription, addon=a.addon),
    ],
    "subscription_addon_quantity_zero": lambda: f.SubscriptionAddonFactory(quantity=0),
    "subscription_coupon_twice": lambda: [
        c := f.SubscriptionCouponFactory(),
        f.SubscriptionCouponFactory(subscription=c.subscription, coupon=c.coupon),
    ],
    "scheduled_change_quantity_zero": lambda: f.ScheduledChangeFactory(quantity=0),
    "usage_quantity_zero": lambda: f.UsageRecordFactory(quantity=D("0")),
    "usage_duplicate_key": lambda: [
        f.UsageRecordFactory(idempotency_key="u-1"),
        f.UsageRecordFactory(idempotency_key="u-1"),
    ],
    "invoice_twice_for_period": lambda: [
        i := f.InvoiceFactory(
            kind=InvoiceKind.RECURRING,
            subscription=f.SubscriptionFactory(),
            period_start=datetime.date(2026, 1, 1),
        ),
        f.InvoiceFactory(
            kind=InvoiceKind.RECURRING,
            customer=i.customer,
            subscription=i.subscription,
            period_start=i.period_start,
        ),
    ],
    "invoice_negative_total": lambda: f.InvoiceFactory(subtotal=D("-1")),
    "invoice_negative_discount": lambda: f.InvoiceFactory(discount_total=D("-1")),
    "invoice_negative_tax": lambda: f.InvoiceFactory(tax_total=D("-1")),
    "invoice_total_does_not_add_up": lambda: f.InvoiceFactory(total=D("99.99")),
    "invoice_draft_with_number": lambda: f.InvoiceFactory(draft=True, number="INV-1"),
    "invoice_open_without_number": lambda: f.InvoiceFactory(number=None),
    "invoice_due_before_issue": lambda: f.InvoiceFactory(due_date=datetime.date(2026, 1, 1)),
    "invoice_duplicate_number": lambda: [
        f.InvoiceFactory(number="INV-9"),
        f.InvoiceFactory(number="INV-9"),
    ],
    "credit_note_zero": lambda: f.CreditNoteFactory(amount=D("0")),
    "credit_note_duplicate_number": lambda: [
        f.CreditNoteFactory(number="CN-1"),
        f.CreditNoteFactory(number="CN-1"),
    ],
    "credit_allocation_negative": lambda: f.CreditAllocationFactory(amount=D("-1")),
    "payment_method_two_defaults": lambda: [
        p := f.PaymentMethodFactory(default=True),
        f.PaymentMethodFactory(customer=p.customer, default=True),
    ],
    "payment_method_duplicate_token": lambda: [
        f.PaymentMethodFactory(token="tok_1"),
        f.PaymentMethodFactory(token="tok_1"),
    ],
    "payment_method_month_13": lambda: f.PaymentMethodFactory(exp_month=13),
    "payment_method_last4_letters": lambda: f.PaymentMethodFactory(last4="42a2"),
    "payment_zero": lambda: f.PaymentFactory(amount=D("0")),
    "payment_duplicate_idempotency_key": lambda: [
        f.PaymentFactory(idempotency_key="k"),
        f.PaymentFactory(idempotency_key="k"),
    ],
    "payment_duplicate_receipt_number": lambda: [
        f.PaymentFactory(receipt_number="R-1"),
        f.PaymentFactory(receipt_number="R-1"),
    ],
    "payment_allocation_zero": lambda: f.PaymentAllocationFactory(amount=D("0")),
    "payment_allocation_twice": lambda: [
        a := f.PaymentAllocationFactory(amount=D("10")),
        f.PaymentAllocationFactory(payment=a.payment, invoice=a.invoice, amount=D("10")),
    ],
    "invoice_second_pending_payment": lambda: [
        i := f.InvoiceFactory(),
        m.InvoicePaymentLock.objects.create(
            invoice=i, payment=f.PaymentFactory(pending=True, customer=i.customer)
        ),
        m.InvoicePaymentLock.objects.create(
            invoice=i, payment=f.PaymentFactory(pending=True, customer=i.customer)
        ),
    ],
    "refund_zero": lambda: f.RefundFactory(amount=D("0")),
    "refund_duplicate_key": lambda: [
        f.RefundFactory(idempotency_key="r"),
        f.RefundFactory(idempotency_key="r"),
    ],
    "payment_attempt_twice": lambda: [
        a := f.PaymentAttemptFactory(attempt_number=1),
        f.PaymentAttemptFactory(invoice=a.invoice, attempt_number=1),
    ],
    "review_rating_six": lambda: Review.objects.create(customer=f.CustomerFactory(), rating=6),
    "portal_retention_coupon_missing": lambda: PortalPreferences.objects.create(
        retention_offer="coupon"
    ),
    "user_duplicate_email_any_case": lambda: [
        User.objects.create_user("Ann@x.test"),
        User.objects.create(email="ANN@X.TEST"),
    ],
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_constraint_invalid_row_rejected(case):
    rejected(case)


def test_constraint_valid_twins_accepted():
    """The same builders with valid values are stored, so the refusals above are meaningful."""
    f.PlanFactory(is_free=True, price=D("0"), min_quantity=2, max_quantity=2)
    c = f.ContactPersonFactory(email="ann@x.test", is_primary=True)
    f.ContactPersonFactory(customer=c.customer, email="bob@x.test")
    sub = f.SubscriptionFactory()
    f.InvoiceFactory(
        kind=InvoiceKind.RECURRING, subscription=sub, period_start=datetime.date(2026, 1, 1)
    )
    # Prorations and one-time charges may share a period start.
    f.InvoiceFactory(
        kind=InvoiceKind.PRORATION, subscription=sub, period_start=datetime.date(2026, 1, 1)
    )
    f.InvoiceFactory(
        kind=InvoiceKind.PRORATION, subscription=sub, period_start=datetime.date(2026, 1, 1)
    )
    f.InvoiceFactory(draft=True)
    f.InvoiceFactory(subtotal=D("100.00"), discount_total=D("10.00"), tax_total=D("9.00"))
    pm = f.PaymentMethodFactory(default=True)
    f.PaymentMethodFactory(customer=pm.customer)
    f.CouponFactory(flat=True)
    f.CouponFactory(repeating=True)
    assert m.Invoice.objects.filter(status=InvoiceStatus.OPEN).count() == 4


class TestCustomerHierarchy:
    def test_hierarchy_self_parent_rejected(self):
        customer = f.CustomerFactory()
        customer.parent = customer
        rejected(customer.save)

    def test_hierarchy_grandchild_rejected(self):
        parent = f.CustomerFactory()
        child = f.CustomerFactory(parent=parent)
        rejected(lambda: f.CustomerFactory(parent=child))

    def test_hierarchy_parent_becoming_branch_rejected(self):
        parent = f.CustomerFactory()
        f.CustomerFactory(parent=parent)
        other = f.CustomerFactory()
        parent.parent = other
        rejected(parent.save)

    def test_hierarchy_two_customers_parenting_each_other_rejected(self):
        a, b = f.CustomerFactory(), f.CustomerFactory()
        a.parent = b
        a.save()
        b.parent = a
        rejected(b.save)

    def test_hierarchy_one_level_accepted(self):
        parent = f.CustomerFactory()
        f.CustomerFactory(parent=parent)
        f.CustomerFactory(parent=parent)
        assert parent.children.count() == 2


class TestEventsAppendOnly:
    def test_event_save_again_refused(self):
        event = f.EventFactory()
        event.description = "rewritten"
        with pytest.raises(TypeError):
            event.save()
        assert m.Event.objects.get().description == "Subscription created"

    def test_event_delete_refused(self):
        event = f.EventFactory()
        with pytest.raises(TypeError):
            event.delete()
        with pytest.raises(TypeError):
            m.Event.objects.all().delete()
        with pytest.raises(TypeError):
            m.Event.objects.update(kind="x")
        assert m.Event.objects.count() == 1
