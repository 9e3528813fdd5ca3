"""The set-based batch paths (renewals, dunning retries) give exactly the books the one-by-one
services give: same invoices and lines to the cent, same payments, events, emails, terms and
coupon countdowns — for a batch mixing every kind of renewal, including those the batch hands
to ``subscription_renew`` (cancellations, scheduled changes, usage, customer credit).
"""

import dataclasses
import datetime
from collections import Counter
from decimal import Decimal

import pytest
from django.db import transaction

from billing import jobs
from billing.enums import (
    CreditNoteReason,
    InvoiceStatus,
    PaymentAttemptStatus,
    PriceListKind,
    SubscriptionStatus,
)
from billing.models import (
    Event,
    Invoice,
    Notification,
    Payment,
    PaymentAttempt,
    PriceListItem,
    Subscription,
    SubscriptionCoupon,
)
from billing.services import renewals
from billing.services.credits import credit_note_issue
from billing.services.subscriptions import (
    ChangeRequest,
    subscription_cancel,
    subscription_change,
    usage_record,
)
from tests.factories import (
    AddonFactory,
    CouponFactory,
    CustomerFactory,
    CustomerGroupFactory,
    PlanFactory,
    PriceListFactory,
)
from tests.jobs.conftest import (
    FAILING_CARD,
    GOOD_CARD,
    LOST_CARD,
    TIMEOUT_CARD,
    add_card,
    billing_run,
    new_subscription,
    outcomes,
)

pytestmark = pytest.mark.django_db

D = datetime.date


class Rollback(Exception):
    pass


def one_by_one(monkeypatch) -> None:
    for name in ("renew", "dunning"):
        job = jobs.JOBS_BY_NAME[name]
        monkeypatch.setitem(jobs.JOBS_BY_NAME, name, dataclasses.replace(job, run_many=None))


def population(travel) -> list[Subscription]:
    """Subscriptions of every kind, created on Mar 10 and due on Apr 10."""
    travel(D(2027, 3, 10))
    plan = PlanFactory(price=Decimal("30.00"))
    addon = AddonFactory(price=Decimal("4.99"))
    metered = AddonFactory(metered=True, price=Decimal("0.35"))
    per_item = PriceListFactory(kind=PriceListKind.PER_ITEM)
    PriceListItem.objects.create(price_list=per_item, plan=plan, price=Decimal("27.50"))
    groups = {
        "per_item": CustomerGroupFactory(price_list=per_item),
        "markup": CustomerGroupFactory(
            price_list=PriceListFactory(kind=PriceListKind.MARKUP, percent=Decimal("12.5")),
            discount_percent=Decimal("3"),
        ),
    }
    subs = [
        new_subscription(plan=plan),
        new_subscription(plan=plan, quantity=3, addons={addon.code: 2}),
        new_subscription(plan=plan, coupon_code=CouponFactory(repeating=True).code),
        new_subscription(plan=plan, coupon_code=CouponFactory(flat=True).code),
        new_subscription(plan=PlanFactory(free=True)),
        new_subscription(plan=PlanFactory(price=Decimal("19.99"), billing_cycles=1)),
        new_subscription(card=None, plan=plan, auto_charge=False),
    ]
    # Paid their first term; the card that renews them declines, is lost, or times out.
    for card in (FAILING_CARD, LOST_CARD, TIMEOUT_CARD):
        sub = new_subscription(plan=plan)
        add_card(sub.customer, card, use_for_subscriptions=True)
        subs.append(sub)
    for group in groups.values():
        customer = CustomerFactory(group=group, tax_exempt=group is groups["markup"])
        add_card(customer, GOOD_CARD)
        subs.append(subscription_create_for(customer, plan, addons={addon.code: 1}))
    # Handed to subscription_renew one by one: a change and a cancellation at term end,
    # metered usage, and customer credit that pays part of the invoice.
    changed = new_subscription(plan=plan)
    subscription_change(
        subscription=changed,
        request=ChangeRequest(quantity=2),
        timing="term_end",
    )
    cancelled = new_subscription(plan=plan)
    subscription_cancel(subscription=cancelled)
    used = new_subscription(plan=plan)
    usage_record(
        subscription=used, addon=metered, quantity=Decimal("12.5"), idempotency_key="use-1"
    )
    credited = new_subscription(plan=plan)
    credit_note_issue(
        customer=credited.customer,
        amount=Decimal("7.25"),
        reason=CreditNoteReason.GOODWILL,
    )
    return [*subs, changed, cancelled, used, credited]


def subscription_create_for(customer, plan, **kwargs) -> Subscription:
    from billing.services.subscriptions import subscription_create

    return subscription_create(customer=customer, plan=plan, **kwargs).subscription


def books(subs: list[Subscription]) -> dict:
    """Everything an accountant or a customer would see of the run, by subscription."""
    result = {}
    for sub in Subscription.objects.filter(pk__in=[s.pk for s in subs]).order_by("pk"):
        invoices = Invoice.objects.filter(subscription=sub).order_by("period_start", "kind")
        result[sub.pk] = {
            "status": sub.status,
            "term": (sub.current_term_start, sub.current_term_end),
            "cycles": sub.remaining_billing_cycles,
            "coupons": sorted(
                SubscriptionCoupon.objects.filter(subscription=sub).values_list(
                    "remaining_cycles", flat=True
                ),
                key=str,
            ),
            "invoices": [
                (
                    i.kind,
                    i.status,
                    i.period_start,
                    i.issue_date,
                    i.due_date,
                    i.subtotal,
                    i.discount_total,
                    i.tax_total,
                    i.total,
                    i.billing_details,
                    [
                        (line.kind, line.description, line.quantity, line.unit_price, line.amount)
                        for line in i.lines.order_by("position")
                    ],
                    sorted(
                        (p.payment.status, p.amount, p.payment.decline_kind)
                        for p in i.payment_allocations.select_related("payment")
                    ),
                    sorted(
                        (a.attempt_number, a.status, a.scheduled_for)
                        for a in i.payment_attempts.all()
                    ),
                )
                for i in invoices
            ],
            "events": Counter(
                Event.objects.filter(customer=sub.customer).values_list("kind", flat=True)
            ),
            "emails": Counter(
                Notification.objects.filter(customer=sub.customer).values_list("kind", flat=True)
            ),
        }
    numbers = sorted(Invoice.objects.exclude(number=None).values_list("number", flat=True))
    receipts = sorted(
        Payment.objects.exclude(receipt_number=None).values_list("receipt_number", flat=True)
    )
    result["numbers"] = numbers
    result["receipts"] = receipts
    return result


def run_and_read(subs, moments) -> tuple[dict, Counter]:
    """Run billing at each moment and read the books, then undo it all."""
    totals: Counter = Counter()
    try:
        with transaction.atomic():
            for moment in moments:
                totals.update(outcomes(billing_run(moment)))
            read = books(subs)
            raise Rollback
    except Rollback:
        return read, totals


def test_batch_renewals_and_dunning_keep_the_same_books_as_one_by_one(
    organization, travel, monkeypatch
):
    subs = population(travel)
    # The renewal day, then the first dunning retry's day (policy default: retries from +1).
    moments = [travel(D(2027, 4, 10)), travel(D(2027, 4, 11)) + datetime.timedelta(hours=11)]
    travel(D(2027, 4, 10))

    batched, batch_counts = run_and_read(subs, moments)
    with monkeypatch.context() as patch:
        one_by_one(patch)
        single, single_counts = run_and_read(subs, moments)

    assert batched == single
    assert batch_counts == single_counts
    # The run did what the population asks for (so the comparison compares something).
    assert batch_counts["renewed_charged"] >= 8
    assert batch_counts["renewed_charge_failed"] == 2
    assert batch_counts["renewed_charge_unknown"] == 1
    assert batch_counts["cancelled_at_term_end"] == 2  # scheduled, and out of cycles
    assert batch_counts["dunning_failed"] == 1


def test_renewal_batch_that_fails_as_a_whole_is_renewed_one_by_one(
    organization, travel, monkeypatch
):
    travel(D(2027, 3, 10))
    subs = [new_subscription() for _ in range(3)]
    renewal_time = travel(D(2027, 4, 10))

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in the set-based step")

    monkeypatch.setattr(renewals, "document_numbers_allocate", broken)
    out = billing_run(renewal_time)

    assert outcomes(out)["renewed_charged"] == 3
    for sub in subs:
        sub.refresh_from_db()
        assert sub.current_term_end == D(2027, 5, 10)
        (renewal,) = Invoice.objects.filter(subscription=sub, period_start=D(2027, 4, 10))
        assert renewal.status == InvoiceStatus.PAID


def test_renewal_batch_run_again_finds_nothing_due_and_bills_nothing(organization, travel):
    travel(D(2027, 3, 10))
    first, second = new_subscription(), new_subscription()
    travel(D(2027, 4, 10))

    batch = renewals.subscriptions_renew_many([first.pk, second.pk])

    assert batch.counts == Counter({"renewed_charged": 2})
    again = renewals.subscriptions_renew_many([first.pk, second.pk])
    assert again.counts == Counter({"nothing_due": 2})
    assert again.one_by_one == []
    assert Invoice.objects.filter(subscription__in=[first, second]).count() == 4
    assert not PaymentAttempt.objects.filter(status=PaymentAttemptStatus.SCHEDULED).exists()
    assert all(
        s.status == SubscriptionStatus.LIVE
        for s in Subscription.objects.filter(pk__in=[first.pk, second.pk])
    )
