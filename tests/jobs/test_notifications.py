"""Customer emails: queued once per event inside the change's transaction, sent once however
often the sender runs, to the contacts who receive documents — and never lost when the broker
is down (the tick's email job sends them later).
"""

import datetime
import threading
import time
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse

from billing import jobs, notifications, tasks
from billing.models import Event, Invoice, Notification
from billing.notifications import notification_send, queue_for_event, recipients_for
from billing.services.invoices import invoice_create_one_time
from tests.factories import ContactPersonFactory, CustomerFactory
from tests.jobs.conftest import billing_run, new_subscription, outcomes

D = datetime.date


def one_time_invoice(customer=None) -> Invoice:
    return invoice_create_one_time(
        customer=customer or CustomerFactory(),
        description="Consulting",
        unit_price=Decimal("120.00"),
    )


def notification_for(invoice: Invoice, kind: str = "invoice_issued") -> Notification:
    return Notification.objects.get(invoice=invoice, kind=kind)


@pytest.mark.django_db
def test_notification_queued_once_per_event_even_if_queued_again(organization):
    invoice = one_time_invoice()
    event = Event.objects.get(invoice=invoice, kind="invoice.issued")

    again = queue_for_event(event)

    assert again is None
    assert Notification.objects.filter(invoice=invoice).count() == 1
    assert notification_for(invoice).key == f"invoice_issued:event:{event.pk}"


@pytest.mark.django_db
def test_notification_send_twice_one_email_second_reports_already_sent(organization):
    notification = notification_for(one_time_invoice())

    first = notification_send(notification_id=notification.pk)
    second = tasks.send_notification(notification.pk)  # the task body, run in this process

    assert (first, second) == (True, False)
    assert len(mail.outbox) == 1
    notification.refresh_from_db()
    assert notification.sent_at is not None
    assert notification.subject == mail.outbox[0].subject
    assert notification.subject.startswith("Invoice ")


@pytest.mark.django_db
def test_batch_email_task_sends_each_once_and_a_broken_one_does_not_stop_the_rest(
    organization, monkeypatch
):
    first, second, third = (notification_for(one_time_invoice()) for _ in range(3))
    notification_send(notification_id=first.pk)  # already out: a redelivered batch
    mail.outbox.clear()
    original = notifications.render_to_string

    def broken_for_second(template, context):
        if context["invoice"] and context["invoice"].pk == second.invoice_id:
            raise ValueError("a broken template")
        return original(template, context)

    monkeypatch.setattr(notifications, "render_to_string", broken_for_second)

    sent = tasks.send_notifications([first.pk, second.pk, third.pk])

    assert sent == 1
    assert [m.subject for m in mail.outbox] == [
        f"Invoice {third.invoice.number} from {organization.name}"
    ]
    second.refresh_from_db()
    assert second.sent_at is None  # left for the tick's sweep


@pytest.mark.django_db(transaction=True)
def test_notification_send_concurrently_one_email(organization):
    notification = notification_for(one_time_invoice())
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def send() -> None:
        try:
            barrier.wait()
            results.append(notification_send(notification_id=notification.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == [False, False, False, True]
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_notification_recipients_contacts_receiving_documents_else_customer_email(organization):
    customer = CustomerFactory(email="accounts@acme.test")
    assert recipients_for(customer) == ["accounts@acme.test"]
    ContactPersonFactory(customer=customer, email="cfo@acme.test")
    ContactPersonFactory(customer=customer, email="ap@acme.test")
    ContactPersonFactory(customer=customer, email="dev@acme.test", receives_documents=False)

    invoice = one_time_invoice(customer)
    notification_send(notification_id=notification_for(invoice).pk)

    assert sorted(recipients_for(customer)) == ["ap@acme.test", "cfo@acme.test"]
    (email,) = mail.outbox
    assert sorted(email.to) == ["ap@acme.test", "cfo@acme.test"]
    assert "dev@acme.test" not in email.to + email.cc + email.bcc
    assert sorted(notification_for(invoice).recipients) == ["ap@acme.test", "cfo@acme.test"]


@pytest.mark.django_db
def test_renewal_emails_once_each_however_often_the_run_and_sweep_repeat(organization, travel):
    travel(D(2027, 3, 10))
    subscription = new_subscription()
    customer = subscription.customer
    renewal = travel(D(2027, 4, 10))

    billing_run(renewal)
    billing_run(renewal)
    later = renewal + jobs.RESEND_AFTER + datetime.timedelta(minutes=1)
    swept = billing_run(later)
    billing_run(later)

    invoice = Invoice.objects.get(subscription=subscription, period_start=D(2027, 4, 10))
    kinds = sorted(
        Notification.objects.filter(customer=customer, invoice=invoice).values_list(
            "kind", flat=True
        )
    )
    assert kinds == ["invoice_issued"]
    assert Notification.objects.filter(customer=customer, kind="payment_receipt").count() == 2
    assert not Notification.objects.filter(sent_at__isnull=True).exists()
    assert outcomes(swept)["email_sent"] >= 2  # this renewal's invoice and receipt
    sent_to_customer = [m.subject for m in mail.outbox if m.to == [customer.email]]
    assert len(sent_to_customer) == len(set(sent_to_customer))  # nothing twice
    assert sum(1 for s in sent_to_customer if s.startswith(f"Invoice {invoice.number} ")) == 1


@pytest.mark.django_db
@pytest.mark.urls("tests.jobs.urls")
def test_broker_down_pages_serve_action_succeeds_and_email_sent_later_by_sweep(
    organization, client, broker_down, django_capture_on_commit_callbacks, caplog
):
    invoice = one_time_invoice()
    notification_send(notification_id=notification_for(invoice).pk)  # the invoice email

    assert client.get("/healthz").status_code == 200
    assert client.get(reverse("account_login")).status_code == 200
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(f"/jobs-test/invoices/{invoice.pk}/record-payment")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < 10  # the publish gives up quickly
    assert callbacks  # the receipt's enqueue ran after commit ...
    receipt = Notification.objects.get(customer=invoice.customer, kind="payment_receipt")
    assert receipt.sent_at is None  # ... and could not reach the broker
    assert "the tick will send it" in caplog.text
    assert len(mail.outbox) == 1

    # The tick's email job picks it up once it is RESEND_AFTER old.
    soon = billing_run(receipt.created_at + jobs.RESEND_AFTER - datetime.timedelta(seconds=30))
    later = billing_run(receipt.created_at + jobs.RESEND_AFTER + datetime.timedelta(seconds=30))

    assert outcomes(soon)["email_sent"] == 0
    assert outcomes(later)["email_sent"] == 1
    receipt.refresh_from_db()
    assert receipt.sent_at is not None
    assert len(mail.outbox) == 2
    assert mail.outbox[1].subject.startswith("Receipt ")
