"""The tick and real Celery workers: due renewals fan out as batches of ids, workers run them,
and every renewal is invoiced and charged once — also when batches are delivered twice and
when a worker is SIGKILLed mid-batch (acks_late redelivery, reconciliation by key).
"""

import datetime

import pytest
from django.core.cache import cache
from django.utils import timezone

from billing import jobs, tasks
from billing.enums import InvoiceKind, InvoiceStatus, PaymentStatus
from billing.models import Invoice, Notification, Payment, SandboxCharge, Subscription
from billing.services.subscriptions import invoice_attempt_key
from tests.jobs.conftest import (
    assert_each_invoice_charged_at_most_once,
    billing_run,
    ledger_count,
    subscriptions_due_now,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def renewal_invoices(subscriptions) -> list[Invoice]:
    """Invoices issued after the first one of each subscription."""
    firsts = {s.pk: s.current_term_start for s in subscriptions}
    return [
        invoice
        for invoice in Invoice.objects.filter(
            subscription__in=subscriptions, kind=InvoiceKind.RECURRING
        )
        if invoice.period_start != firsts[invoice.subscription_id]
    ]


def all_renewed_and_paid(subscriptions) -> bool:
    invoices = renewal_invoices(subscriptions)
    return len(invoices) == len(subscriptions) and all(
        invoice.status == InvoiceStatus.PAID for invoice in invoices
    )


def test_tick_batches_run_by_worker_renew_and_charge_each_subscription_once(
    organization, start_worker, broker, monkeypatch
):
    monkeypatch.setattr(jobs, "BATCH_SIZE", 5)
    subscriptions = subscriptions_due_now(10)
    charges_before = ledger_count()
    batches = list(jobs.due_ids(jobs.JOBS_BY_NAME["renew"], now=timezone.now()))

    # Each batch also delivered a second time (as after a redelivery), queued right next to
    # the tick's copy, so that the worker's two processes run the same ids at the same time.
    tasks.run_batch.delay("renew", batches[0])
    first = tasks.tick()
    second = tasks.tick()  # a minute later, say: the first tick's batches still wait
    tasks.run_batch.delay("renew", batches[1])
    worker = start_worker(pool="prefork", concurrency=2)

    assert len(batches) == 2
    assert first["renew"] == 10
    assert "renew" not in second  # not enqueued again while in flight
    wait_until(lambda: all_renewed_and_paid(subscriptions), what="the renewals")
    broker.wait_drained()
    invoices = renewal_invoices(subscriptions)
    assert len(invoices) == 10
    assert sorted(i.subscription_id for i in invoices) == sorted(s.pk for s in subscriptions)
    assert ledger_count() == charges_before + 10
    assert all(ledger_count(invoice_attempt_key(invoice)) == 1 for invoice in invoices)
    for subscription in subscriptions:
        renewed = Subscription.objects.get(pk=subscription.pk)
        assert renewed.current_term_start == subscription.current_term_end
        assert renewed.status == "live"

    # Every batch done: the next tick looks again, and finds nothing to renew.
    assert (cache.get(tasks.IN_FLIGHT_KEY.format(job="renew")) or 0) <= 0
    third = tasks.tick()
    broker.wait_drained()

    assert "renew" not in third
    assert len(renewal_invoices(subscriptions)) == 10
    assert ledger_count() == charges_before + 10
    assert_each_invoice_charged_at_most_once()
    # The emails the renewals queued went out through the worker's send_notification tasks.
    assert Notification.objects.filter(invoice__in=renewal_invoices(subscriptions)).count() == 10
    wait_until(lambda: not Notification.objects.filter(sent_at__isnull=True).exists())
    worker.assert_no_errors()


def test_worker_killed_after_gateway_charge_rerun_reconciles_by_key_without_new_charge(
    organization, start_worker, broker
):
    (subscription,) = subscriptions_due_now(1)
    charges_before = ledger_count()
    doomed = start_worker(env={"JOBS_TEST_KILL_AFTER_CHARGE": "1"})

    tasks.tick()
    doomed.process.wait(timeout=30)

    # The gateway charged under the invoice's key; nobody recorded it.
    (invoice,) = renewal_invoices([subscription])
    key = invoice_attempt_key(invoice)
    payment = Payment.objects.get(idempotency_key=key)
    assert doomed.process.returncode == -9
    assert ledger_count(key) == 1
    assert payment.status == PaymentStatus.PENDING
    assert invoice.status == InvoiceStatus.OPEN

    # A new worker gets the unacknowledged batch again: the renewal is done, nothing is billed.
    fresh = start_worker()
    broker.wait_drained()
    assert len(renewal_invoices([subscription])) == 1
    assert ledger_count() == charges_before + 1

    # The reconcile job (due once the payment is RECONCILE_AFTER old) asks the gateway by key.
    later = timezone.now() + jobs.RECONCILE_AFTER + datetime.timedelta(minutes=1)
    for ids in jobs.due_ids(jobs.JOBS_BY_NAME["reconcile"], now=later):
        tasks.run_batch.delay("reconcile", ids)
    wait_until(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED)
    broker.wait_drained()

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(key) == 1
    assert ledger_count() == charges_before + 1
    assert Payment.objects.filter(allocations__invoice=invoice).count() == 1
    fresh.assert_no_errors()


def test_worker_killed_mid_batch_redelivered_to_new_worker_everything_processed_once(
    organization, start_worker, broker
):
    subscriptions = subscriptions_due_now(8)
    charges_before = ledger_count()
    # A slow gateway (a 5 s round trip) so the kill lands while the batch's charges are in
    # flight: its invoices and pending payments are committed, no outcome is recorded.
    slow = start_worker(env={"SANDBOX_GATEWAY_LATENCY_MS": "5000"})

    fanned = tasks.tick()
    assert fanned["renew"] == 8  # one batch
    wait_until(
        lambda: Payment.objects.filter(status=PaymentStatus.PENDING).count() == 8,
        what="the batch's invoices and pending payments",
    )
    slow.kill()
    assert len(renewal_invoices(subscriptions)) == 8
    assert ledger_count() == charges_before

    fresh = start_worker()
    wait_until(lambda: len(renewal_invoices(subscriptions)) == 8, what="the redelivered batch")
    broker.wait_drained()
    # Whatever the kill interrupted (a charge in flight, or a renewal not yet charged) is
    # settled by the next billing run once it is RECONCILE_AFTER old — by the same key.
    billing_run(timezone.now() + jobs.RECONCILE_AFTER + datetime.timedelta(minutes=1))

    invoices = renewal_invoices(subscriptions)
    assert len(invoices) == 8
    assert all(invoice.status == InvoiceStatus.PAID for invoice in invoices)
    assert ledger_count() == charges_before + 8
    assert all(ledger_count(invoice_attempt_key(invoice)) == 1 for invoice in invoices)
    assert not Payment.objects.filter(
        status__in=(PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
    ).exists()
    assert SandboxCharge.objects.count() == charges_before + 8
    assert_each_invoice_charged_at_most_once()
    fresh.assert_no_errors()
