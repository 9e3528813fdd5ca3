"""Renewals through the jobs: exactly one invoice and one charge per (subscription, period),
however often and however concurrently the run repeats; month-end anchors through a year.
"""

import datetime
import threading
from collections import Counter
from decimal import Decimal
from itertools import pairwise

import pytest
from django.db import connection

from billing import jobs
from billing.enums import (
    ChangeTiming,
    InvoiceKind,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.models import Event, Invoice, Payment, ScheduledChange
from billing.services.subscriptions import (
    ChangeRequest,
    invoice_attempt_key,
    subscription_cancel,
    subscription_change,
    subscription_pause_schedule,
)
from tests.factories import PlanFactory
from tests.jobs.conftest import (
    assert_each_invoice_charged_at_most_once,
    billing_run,
    ledger_count,
    new_subscription,
    noon,
    outcomes,
    reload,
)

D = datetime.date


def invoices_of(subscription) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=subscription).order_by("period_start"))


@pytest.mark.django_db
def test_renewal_run_twice_one_invoice_one_charge_per_period(organization, travel, run_day):
    travel(D(2027, 3, 10))
    subscription = new_subscription()

    first = run_day(D(2027, 4, 10))
    second = run_day(D(2027, 4, 10))

    invoices = invoices_of(subscription)
    assert [(i.period_start, i.period_end) for i in invoices] == [
        (D(2027, 3, 10), D(2027, 4, 10)),
        (D(2027, 4, 10), D(2027, 5, 10)),
    ]
    renewal = invoices[1]
    assert renewal.status == InvoiceStatus.PAID
    assert ledger_count(invoice_attempt_key(renewal)) == 1
    assert ledger_count() == 2
    assert Payment.objects.filter(allocations__invoice=renewal).count() == 1
    assert "renewed_charged" in first
    assert "renewed_charged" not in second
    assert reload(subscription).current_term_end == D(2027, 5, 10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runner", ["run_due", "run_batch"])
def test_renewal_six_concurrent_runs_one_invoice_one_charge_per_subscription(
    organization, travel, runner
):
    travel(D(2027, 3, 10))
    subscriptions = [new_subscription() for _ in range(5)]
    ids = [s.pk for s in subscriptions]
    now = travel(D(2027, 4, 10))
    barrier = threading.Barrier(6)
    results: list[Counter] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            if runner == "run_due":
                results.append(jobs.run_due(now=now, jobs=("renew",)))
            else:
                results.append(jobs.run_batch("renew", ids, now=now))
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures
    total = sum(results, Counter())
    assert total["renewed_charged"] == 5
    assert total["errors"] == 0
    for subscription in subscriptions:
        renewals = Invoice.objects.filter(
            subscription=subscription, kind=InvoiceKind.RECURRING, period_start=D(2027, 4, 10)
        )
        assert renewals.count() == 1
        (renewal,) = renewals
        assert renewal.status == InvoiceStatus.PAID
        assert ledger_count(invoice_attempt_key(renewal)) == 1
        assert reload(subscription).current_term_end == D(2027, 5, 10)
    assert ledger_count() == 10  # 5 first invoices + 5 renewals
    assert not Payment.objects.exclude(status=PaymentStatus.SUCCEEDED).exists()
    assert_each_invoice_charged_at_most_once()


@pytest.mark.slow
@pytest.mark.django_db
def test_renewal_month_end_anchor_jan_31_daily_runs_for_a_year_bill_twelve_tiling_periods(
    organization, travel
):
    travel(D(2027, 1, 31))
    subscription = new_subscription()

    day = D(2027, 2, 1)
    while day < D(2028, 1, 31):
        billing_run(noon(day))
        day += datetime.timedelta(days=1)

    invoices = invoices_of(subscription)
    assert [i.issue_date for i in invoices] == [
        D(2027, 1, 31),
        D(2027, 2, 28),
        D(2027, 3, 31),
        D(2027, 4, 30),
        D(2027, 5, 31),
        D(2027, 6, 30),
        D(2027, 7, 31),
        D(2027, 8, 31),
        D(2027, 9, 30),
        D(2027, 10, 31),
        D(2027, 11, 30),
        D(2027, 12, 31),
    ]
    assert all(i.period_start == i.issue_date for i in invoices)
    # Consecutive periods tile the year: each starts where the previous one ended.
    assert all(a.period_end == b.period_start for a, b in pairwise(invoices))
    assert invoices[-1].period_end == D(2028, 1, 31)
    assert all(i.status == InvoiceStatus.PAID for i in invoices)
    assert ledger_count() == 12
    subscription = reload(subscription)
    assert subscription.status == SubscriptionStatus.LIVE
    assert subscription.current_term_end == D(2028, 1, 31)

    # The day it is due again, exactly one more.
    billing_run(noon(D(2028, 1, 31)))
    billing_run(noon(D(2028, 1, 31)))
    assert len(invoices_of(subscription)) == 13
    assert invoices_of(subscription)[-1].period_end == D(2028, 2, 29)  # a leap year


@pytest.mark.django_db
def test_scheduled_change_applied_at_term_end_by_the_renewal_once(organization, travel, run_day):
    travel(D(2027, 3, 10))
    subscription = new_subscription(price="30.00")
    bigger = PlanFactory(price=Decimal("50.00"))
    subscription_change(
        subscription=subscription,
        request=ChangeRequest(plan=bigger),
        timing=ChangeTiming.TERM_END,
    )
    run_day(D(2027, 4, 9))
    assert reload(subscription).plan != bigger  # not before the term ends

    run_day(D(2027, 4, 10))
    run_day(D(2027, 4, 10))

    subscription = reload(subscription)
    assert subscription.plan == bigger
    assert not ScheduledChange.objects.filter(subscription=subscription).exists()
    (renewal,) = Invoice.objects.filter(subscription=subscription, period_start=D(2027, 4, 10))
    assert renewal.total == Decimal("50.00")
    assert renewal.status == InvoiceStatus.PAID
    assert ledger_count(invoice_attempt_key(renewal)) == 1
    assert Event.objects.filter(subscription=subscription, kind="subscription.changed").count() == 1


@pytest.mark.django_db
def test_scheduled_cancellation_cancels_at_term_end_without_billing(organization, travel, run_day):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    subscription_cancel(subscription=subscription, timing=ChangeTiming.TERM_END)
    assert reload(subscription).status == SubscriptionStatus.NON_RENEWING

    out = run_day(D(2027, 4, 10))
    run_day(D(2027, 4, 10))
    run_day(D(2027, 5, 10))

    assert outcomes(out)["cancelled_at_term_end"] == 1
    subscription = reload(subscription)
    assert subscription.status == SubscriptionStatus.CANCELLED
    assert len(invoices_of(subscription)) == 1
    assert ledger_count() == 1


@pytest.mark.django_db
def test_scheduled_pause_and_resume_run_by_the_jobs_no_invoice_while_paused(
    organization, travel, run_day
):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    subscription_pause_schedule(
        subscription=subscription, pause_on=D(2027, 3, 20), resume_on=D(2027, 4, 20)
    )

    day = D(2027, 3, 11)
    while day <= D(2027, 4, 25):
        run_day(day)
        if day in (D(2027, 3, 20), D(2027, 4, 20)):
            run_day(day)  # the same day again: nothing twice
        day += datetime.timedelta(days=1)

    subscription = reload(subscription)
    assert subscription.status == SubscriptionStatus.LIVE
    invoices = invoices_of(subscription)
    # Nothing on Apr 10 (paused); resumed after the billing date: a new term from Apr 20.
    assert [(i.period_start, i.period_end) for i in invoices] == [
        (D(2027, 3, 10), D(2027, 4, 10)),
        (D(2027, 4, 20), D(2027, 5, 20)),
    ]
    assert invoices[-1].status == InvoiceStatus.PAID
    assert subscription.current_term_end == D(2027, 5, 20)
    assert ledger_count() == 2
    kinds = list(
        Event.objects.filter(
            subscription=subscription, kind__in=("subscription.paused", "subscription.resumed")
        ).values_list("kind", flat=True)
    )
    assert sorted(kinds) == ["subscription.paused", "subscription.resumed"]
