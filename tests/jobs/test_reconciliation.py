"""Reconciliation (DESIGN rule 7): a payment whose outcome was lost — a gateway timeout, a worker
killed between the charge and its record — is settled by asking the gateway about its key once
it is ``RECONCILE_AFTER`` old, never charged again under a new key. A renewal whose worker died
before the charge began is charged by the next run, under the invoice's own key.
"""

import dataclasses
import datetime

import pytest

from billing import jobs
from billing.enums import InvoiceStatus, PaymentStatus, SubscriptionStatus
from billing.gateways import get_gateway
from billing.models import Invoice, InvoicePaymentLock, Payment
from billing.services import payments, renewals
from billing.services.payments import payment_begin
from billing.services.subscriptions import invoice_attempt_key
from tests.factories import PlanFactory
from tests.jobs.conftest import (
    TIMEOUT_CARD,
    add_card,
    assert_each_invoice_charged_at_most_once,
    billing_run,
    ledger_count,
    new_subscription,
    outcomes,
    reload,
    summary,
)

pytestmark = pytest.mark.django_db

D = datetime.date
MINUTE = datetime.timedelta(minutes=1)


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


def renewal_of(subscription, start: datetime.date) -> Invoice:
    return Invoice.objects.get(subscription=subscription, period_start=start)


def test_gateway_timeout_payment_unknown_then_reconciled_to_succeeded_with_the_same_key(
    organization, travel
):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    add_card(subscription.customer, TIMEOUT_CARD, use_for_subscriptions=True)
    renewal_time = travel(D(2027, 4, 10))

    billing_run(renewal_time)

    invoice = renewal_of(subscription, D(2027, 4, 10))
    key = invoice_attempt_key(invoice)
    (payment,) = Payment.objects.filter(allocations__invoice=invoice)
    assert payment.status == PaymentStatus.UNKNOWN
    assert payment.idempotency_key == key
    assert invoice.status == InvoiceStatus.OPEN
    assert InvoicePaymentLock.objects.filter(invoice=invoice).exists()  # nobody pays it twice
    assert reload(subscription).status == SubscriptionStatus.LIVE  # no dunning for "unknown"
    assert ledger_count(key) == 1  # the money moved; only the answer was lost

    # Runs before RECONCILE_AFTER leave it alone and charge nothing else.
    out = billing_run(renewal_time + jobs.RECONCILE_AFTER - MINUTE)
    assert summary(out)["reconciled"] == 0
    assert reload(payment).status == PaymentStatus.UNKNOWN

    out = billing_run(renewal_time + jobs.RECONCILE_AFTER + MINUTE)

    assert outcomes(out)["reconciled_succeeded"] == 1
    payment = reload(payment)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.receipt_number
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert not InvoicePaymentLock.objects.filter(invoice=invoice).exists()
    assert ledger_count(key) == 1
    assert ledger_count() == 2  # the first invoice and this renewal, nothing more
    assert Payment.objects.filter(allocations__invoice=invoice).count() == 1

    billing_run(renewal_time + datetime.timedelta(days=1))
    assert ledger_count() == 2
    assert_each_invoice_charged_at_most_once()


def test_charged_but_never_recorded_reconcile_job_records_the_charge_without_charging_again(
    organization, travel
):
    """The state a worker SIGKILLed right after the gateway call leaves behind."""
    travel(D(2027, 3, 10))
    subscription = new_subscription(auto_charge=False)
    customer = subscription.customer
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    method = customer.payment_methods.get()
    key = invoice_attempt_key(invoice)
    payment, created = payment_begin(
        payer=customer, invoices=[invoice], method=method, idempotency_key=key
    )
    get_gateway(payment.gateway).charge(
        token=method.token, amount=payment.amount, currency=payment.currency, idempotency_key=key
    )
    # ... and the worker dies here: no payment_record_result.
    assert created
    assert reload(payment).status == PaymentStatus.PENDING
    assert ledger_count(key) == 1

    now = travel(D(2027, 3, 10)) + jobs.RECONCILE_AFTER + MINUTE
    out = billing_run(now)

    assert outcomes(out)["reconciled_succeeded"] == 1
    assert reload(payment).status == PaymentStatus.SUCCEEDED
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(key) == 1
    assert ledger_count() == 1


def test_pending_payment_never_sent_reconcile_charges_once_under_the_same_key(organization, travel):
    """Killed after the pending payment committed, before the gateway heard of it."""
    travel(D(2027, 3, 10))
    subscription = new_subscription(auto_charge=False)
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    key = invoice_attempt_key(invoice)
    payment, _ = payment_begin(
        payer=subscription.customer,
        invoices=[invoice],
        method=subscription.customer.payment_methods.get(),
        idempotency_key=key,
    )
    assert ledger_count() == 0

    billing_run(travel(D(2027, 3, 10)) + jobs.RECONCILE_AFTER + MINUTE)
    billing_run(travel(D(2027, 3, 10)) + jobs.RECONCILE_AFTER + 2 * MINUTE)

    assert reload(payment).status == PaymentStatus.SUCCEEDED
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(key) == 1
    assert ledger_count() == 1


@pytest.fixture
def one_by_one_renewals(monkeypatch):
    """Renew through ``subscription_renew`` one by one, the path renewals that cancel, change or
    bill usage take (and a whole batch whose set-based step failed)."""
    job = jobs.JOBS_BY_NAME["renew"]
    monkeypatch.setitem(jobs.JOBS_BY_NAME, "renew", dataclasses.replace(job, run_many=None))


def test_batch_renewal_committed_but_worker_died_before_charging_is_reconciled_by_key_once(
    organization, travel, monkeypatch
):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    renewal_time = travel(D(2027, 4, 10))

    def killed(*_args, **_kwargs):
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(renewals, "payments_charge_many", killed)
        with pytest.raises(WorkerKilled):
            billing_run(renewal_time)

    # The batch committed the invoice and its pending payment (the invoice locked by it).
    invoice = renewal_of(subscription, D(2027, 4, 10))
    (payment,) = Payment.objects.filter(allocations__invoice=invoice)
    assert payment.status == PaymentStatus.PENDING
    assert payment.idempotency_key == invoice_attempt_key(invoice)
    assert InvoicePaymentLock.objects.filter(invoice=invoice, payment=payment).exists()
    assert ledger_count(invoice_attempt_key(invoice)) == 0

    # The same day's rerun bills and charges nothing: the payment may be in flight elsewhere.
    rerun = outcomes(billing_run(renewal_time))
    assert not [label for label in rerun if label.startswith(("renewed", "reconciled"))]
    assert Invoice.objects.filter(subscription=subscription).count() == 2
    out = billing_run(renewal_time + jobs.RECONCILE_AFTER + MINUTE)

    assert outcomes(out)["reconciled_succeeded"] == 1
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(invoice_attempt_key(invoice)) == 1
    assert Payment.objects.filter(allocations__invoice=invoice).count() == 1


def test_renewal_committed_but_worker_died_before_charging_next_run_charges_it_once(
    organization, travel, monkeypatch, one_by_one_renewals
):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    renewal_time = travel(D(2027, 4, 10))

    def killed(**_kwargs):
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(payments, "payment_begin", killed)
        with pytest.raises(WorkerKilled):
            billing_run(renewal_time)

    invoice = renewal_of(subscription, D(2027, 4, 10))
    assert invoice.status == InvoiceStatus.OPEN
    assert not Payment.objects.filter(allocations__invoice=invoice).exists()
    assert reload(subscription).current_term_end == D(2027, 5, 10)  # the renewal committed

    # The same day's rerun: the term is renewed, and the charge is not due until the
    # renewal is RECONCILE_AFTER old (it may still be in flight in another worker).
    billing_run(renewal_time)
    assert not Payment.objects.filter(allocations__invoice=invoice).exists()

    out = billing_run(renewal_time + jobs.RECONCILE_AFTER + MINUTE)
    billing_run(renewal_time + jobs.RECONCILE_AFTER + 2 * MINUTE)

    assert outcomes(out)["collected_charged"] == 1
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(invoice_attempt_key(invoice)) == 1
    assert ledger_count() == 2
    assert Payment.objects.filter(allocations__invoice=invoice).count() == 1


def test_trial_end_timeout_stays_in_trial_then_next_run_reconciles_by_key_and_goes_live(
    organization, travel
):
    travel(D(2027, 3, 1))
    subscription = new_subscription(card=TIMEOUT_CARD, plan=PlanFactory(trial_days=14))
    trial_end = travel(D(2027, 3, 15))

    billing_run(trial_end)

    subscription = reload(subscription)
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    key = invoice_attempt_key(invoice)
    assert subscription.status == SubscriptionStatus.IN_TRIAL
    assert Payment.objects.get(idempotency_key=key).status == PaymentStatus.UNKNOWN

    billing_run(trial_end + jobs.RECONCILE_AFTER + MINUTE)

    assert reload(subscription).status == SubscriptionStatus.LIVE
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_count(key) == 1
    assert ledger_count() == 1
    assert Payment.objects.filter(allocations__invoice=invoice).count() == 1
