"""Paying in the portal: one invoice, everything outstanding, credit first, exactly once."""

import datetime
import logging
import re
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.enums import InvoiceStatus, PaymentStatus
from billing.models import (
    CreditAllocation,
    Invoice,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    Subscription,
)
from billing.selectors import invoice_balance
from tests.factories import (
    CreditNoteFactory,
    CustomerFactory,
    InvoiceFactory,
    OrganizationFactory,
    PaymentFactory,
    SubscriptionFactory,
)
from tests.helpers import login_verified
from tests.portal.payments_support import (
    DECLINED,
    TIMEOUT,
    VISA,
    assert_card_number_stored_nowhere,
    hidden_value,
    ledger_charges,
    queries_for,
    reauthenticate,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db


def pay_url(invoice):
    return reverse("portal:invoice_pay", args=[invoice.public_id])


def confirm(client, url, **fields):
    """Open the confirmation page, then submit it as shown (plus ``fields``)."""
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    data = {
        "idempotency_key": hidden_value(html, "idempotency_key"),
        "summary": hidden_value(html, "summary"),
        **fields,
    }
    return client.post(url, data), data


def new_card(number=VISA, **extra):
    return {"method": "new", "number": number, "exp": "12/30", "cvc": "123", "name": "Ada", **extra}


@pytest.fixture
def payer(client, organization):
    return sign_in(client)


# ----------------------------------------------------------------------------- one invoice
def test_pay_page_shows_amount_due_and_default_card_preselected(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, number="INV-0042")
    saved_card(payer.customer, "5555555555554444")
    default = saved_card(payer.customer, make_default=True)

    response = client.get(pay_url(invoice))

    text = text_of(response)
    assert "Pay invoice INV-0042" in text
    assert "Pay USD 100.00" in text
    html = response.content.decode()
    assert re.search(rf'value="{default.public_id}" id="id_method_\d" checked', html)
    assert 'autocomplete="cc-number"' in html and 'autocomplete="cc-csc"' in html
    assert 'autocomplete="cc-exp"' in html


def test_pay_with_saved_card_marks_invoice_paid_and_shows_receipt(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, number="INV-0001")
    card = saved_card(payer.customer)

    response, _data = confirm(client, pay_url(invoice), method=str(card.public_id))

    payment = Payment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:payment_detail", args=[payment.public_id])
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert payment.status == PaymentStatus.SUCCEEDED and payment.amount == Decimal("100.00")
    assert ledger_charges() == 1
    receipt = client.get(response["Location"])
    text = text_of(receipt)
    assert payment.receipt_number and payment.receipt_number in text
    assert "USD 100.00" in text and "INV-0001" in text
    assert f"Payment received (receipt {payment.receipt_number})" in text


def test_pay_with_new_card_saved_becomes_default_and_auto_charge_card(client, payer):
    old = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=old)
    invoice = InvoiceFactory(customer=payer.customer)
    reauthenticate(client)

    response, _ = confirm(client, pay_url(invoice), **new_card("5555555555554444", save_card="on"))

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert ledger_charges() == 1
    new = PaymentMethod.objects.get(customer=payer.customer, last4="4444")
    assert new.is_default
    subscription.refresh_from_db()
    assert subscription.payment_method == new
    old.refresh_from_db()
    assert not old.is_default


def test_pay_with_new_card_stores_and_logs_no_card_number(client, payer, caplog):
    caplog.set_level(logging.DEBUG)
    invoice = InvoiceFactory(customer=payer.customer)
    reauthenticate(client)

    response, _ = confirm(client, pay_url(invoice), **new_card("5555555555554444", save_card="on"))

    assert response.wsgi_request.sensitive_post_parameters == ("number", "cvc")
    assert "5555555555554444" not in caplog.text
    assert_card_number_stored_nowhere("5555555555554444")


def test_pay_with_new_card_not_saved_keeps_no_card(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)

    response, _ = confirm(client, pay_url(invoice), **new_card())

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert not PaymentMethod.objects.filter(customer=payer.customer).exists()
    assert Payment.objects.get().method_label == "Visa •••• 4242"


def test_pay_with_card_changes_switched_off_offers_no_saving_and_keeps_no_card(client, payer):
    old = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=old)
    invoice = InvoiceFactory(customer=payer.customer)
    set_preference(allow_payment_method_changes=False)
    reauthenticate(client)

    page = text_of(client.get(pay_url(invoice)))
    assert "Save this card" not in page and "confirm it's you" not in page
    # A crafted post asking to save it anyway pays, and keeps nothing.
    response, _ = confirm(client, pay_url(invoice), **new_card("5555555555554444", save_card="on"))

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert list(PaymentMethod.objects.filter(customer=payer.customer)) == [old]
    old.refresh_from_db()
    subscription.refresh_from_db()
    assert old.is_default and subscription.payment_method == old


def test_pay_saving_card_without_recent_login_is_refused_and_charges_nothing(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)

    response, _ = confirm(client, pay_url(invoice), **new_card(save_card="on"))

    assert response.status_code == 200
    assert "Confirm it's you first to save a card" in text_of(response)
    assert ledger_charges() == 0
    assert not PaymentMethod.objects.exists()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_pay_declined_card_shows_message_keeps_invoice_open_and_new_key(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    card = saved_card(payer.customer, DECLINED)

    response, data = confirm(client, pay_url(invoice), method=str(card.public_id))

    assert response.status_code == 200
    assert "Your card was declined. Please use a different card" in text_of(response)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert Payment.objects.get().status == PaymentStatus.FAILED
    assert hidden_value(response.content.decode(), "idempotency_key") != data["idempotency_key"]
    assert PaymentMethod.objects.filter(pk=card.pk).exists()  # a saved card stays saved


def test_pay_declined_new_card_is_not_kept(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    reauthenticate(client)

    response, _ = confirm(client, pay_url(invoice), **new_card(DECLINED, save_card="on"))

    assert "Your card was declined" in text_of(response)
    assert not PaymentMethod.objects.exists()


def test_pay_invalid_card_number_shows_error_next_to_field_and_never_echoes_it(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)

    response, _ = confirm(client, pay_url(invoice), **new_card("4242424242424241"))

    html = response.content.decode()
    assert 'id="id_number-errors"' in html
    assert "4242424242424241" not in html
    assert ledger_charges() == 0


def test_pay_double_submit_with_same_key_charges_once(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    card = saved_card(payer.customer)
    first, data = confirm(client, pay_url(invoice), method=str(card.public_id))

    second = client.post(pay_url(invoice), data)

    payment = Payment.objects.get()
    assert first.status_code == second.status_code == 302
    assert second["Location"] == reverse("portal:payment_detail", args=[payment.public_id])
    assert ledger_charges() == 1
    assert PaymentAllocation.objects.filter(invoice=invoice).count() == 1


def test_pay_gateway_timeout_shows_payment_being_confirmed(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    card = saved_card(payer.customer, TIMEOUT)

    response, _ = confirm(client, pay_url(invoice), method=str(card.public_id))

    payment = Payment.objects.get()
    assert payment.status == PaymentStatus.UNKNOWN
    page = client.get(response["Location"])
    assert "still confirming this payment" in text_of(page)


def test_pay_applies_credit_first_and_charges_the_rest(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    CreditNoteFactory(customer=payer.customer, amount=Decimal("30.00"))
    card = saved_card(payer.customer)

    page = client.get(pay_url(invoice))
    text = text_of(page)
    assert "Your unused credit of USD 30.00 is applied first" in text
    assert "Pay USD 70.00" in text
    response, _ = confirm(client, pay_url(invoice), method=str(card.public_id))

    assert response.status_code == 302
    assert CreditAllocation.objects.get(invoice=invoice).amount == Decimal("30.00")
    assert Payment.objects.get().amount == Decimal("70.00")
    assert invoice_balance(invoice)[2] == 0
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


def test_pay_credit_covering_invoice_charges_no_card(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    CreditNoteFactory(customer=payer.customer, amount=Decimal("150.00"))

    response, _ = confirm(client, pay_url(invoice))

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert not Payment.objects.exists() and ledger_charges() == 0


def test_pay_amounts_changed_since_page_opened_charges_nothing_and_asks_again(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    card = saved_card(payer.customer)
    page = client.get(pay_url(invoice)).content.decode()
    CreditNoteFactory(customer=payer.customer, amount=Decimal("40.00"))  # arrives meanwhile

    response = client.post(
        pay_url(invoice),
        {
            "idempotency_key": hidden_value(page, "idempotency_key"),
            "summary": hidden_value(page, "summary"),
            "method": str(card.public_id),
        },
    )

    assert response.status_code == 200
    text = text_of(response)
    assert "The amounts changed since this page was opened" in text
    assert "Pay USD 60.00" in text
    assert ledger_charges() == 0 and not CreditAllocation.objects.exists()


def test_pay_already_paid_invoice_shows_nothing_to_pay(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, paid=True, number="INV-0009")

    response = client.get(pay_url(invoice))

    assert response.status_code == 200
    assert "Invoice INV-0009 is not open for payment." in text_of(response)
    assert 'name="idempotency_key"' not in response.content.decode()


def test_pay_draft_invoice_is_not_found(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, draft=True)

    assert client.get(pay_url(invoice)).status_code == 404


# ----------------------------------------------------------------------------- pay all
def test_pay_all_allocates_oldest_first_and_numbers_reconcile(client, payer):
    customer = payer.customer
    newest = InvoiceFactory(customer=customer, issue_date=datetime.date(2026, 1, 10))
    oldest = InvoiceFactory(
        customer=customer, issue_date=datetime.date(2025, 11, 1), subtotal=Decimal("40.00")
    )
    middle = InvoiceFactory(
        customer=customer, issue_date=datetime.date(2025, 12, 1), subtotal=Decimal("60.00")
    )
    CreditNoteFactory(customer=customer, amount=Decimal("50.00"))
    card = saved_card(customer)
    balances_before = sum(invoice_balance(i)[2] for i in (newest, oldest, middle))

    page = client.get(reverse("portal:pay_all"))
    text = text_of(page)
    assert text.index(oldest.number) < text.index(middle.number) < text.index(newest.number)
    assert "Pay USD 150.00" in text
    response, _ = confirm(client, reverse("portal:pay_all"), method=str(card.public_id))

    assert response.status_code == 302
    payment = Payment.objects.get()
    credit_applied = sum(a.amount for a in CreditAllocation.objects.all())
    # Credit goes to the oldest invoice first: all 40.00 of it, then 10.00 of the next one.
    assert CreditAllocation.objects.get(invoice=oldest).amount == Decimal("40.00")
    assert CreditAllocation.objects.get(invoice=middle).amount == Decimal("10.00")
    allocations = {a.invoice_id: a.amount for a in payment.allocations.all()}
    assert allocations == {middle.pk: Decimal("50.00"), newest.pk: Decimal("100.00")}
    assert sum(allocations.values()) == payment.amount == balances_before - credit_applied
    assert Invoice.objects.filter(status=InvoiceStatus.PAID).count() == 3
    assert ledger_charges() == 1


def test_pay_all_parent_pays_visible_branch_but_not_hidden_branch(client, organization):
    parent = CustomerFactory(display_name="Parent Co")
    branch = CustomerFactory(parent=parent, display_name="Visible Branch")
    hidden = CustomerFactory(parent=parent, visible_to_parent=False, display_name="Hidden Branch")
    contact = sign_in(client, parent)
    own = InvoiceFactory(customer=parent)
    branch_invoice = InvoiceFactory(customer=branch)
    hidden_invoice = InvoiceFactory(customer=hidden)
    card = saved_card(contact.customer)

    page = text_of(client.get(reverse("portal:pay_all")))
    assert branch_invoice.number in page and "Visible Branch" in page
    assert hidden_invoice.number not in page
    response, _ = confirm(client, reverse("portal:pay_all"), method=str(card.public_id))

    assert response.status_code == 302
    payment = Payment.objects.get()
    assert payment.customer == parent and payment.amount == Decimal("200.00")
    assert set(payment.allocations.values_list("invoice_id", flat=True)) == {
        own.pk,
        branch_invoice.pk,
    }
    hidden_invoice.refresh_from_db()
    assert hidden_invoice.status == InvoiceStatus.OPEN
    assert client.get(pay_url(hidden_invoice)).status_code == 404
    assert client.get(pay_url(branch_invoice)).status_code == 200


def test_pay_all_parent_credit_pays_branch_invoice(client, organization):
    parent = CustomerFactory()
    branch = CustomerFactory(parent=parent)
    sign_in(client, parent)
    invoice = InvoiceFactory(customer=branch)
    note = CreditNoteFactory(customer=parent, amount=Decimal("100.00"))

    response, _ = confirm(client, reverse("portal:pay_all"))

    assert response.status_code == 302
    assert CreditAllocation.objects.get(invoice=invoice).credit_note == note
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and ledger_charges() == 0


def test_pay_all_with_nothing_outstanding_says_so(client, payer):
    response = client.get(reverse("portal:pay_all"))

    assert "There is nothing to pay right now." in text_of(response)


# ----------------------------------------------------------------------------- exactly once
@pytest.mark.django_db(transaction=True)
def test_pay_ten_concurrent_requests_charge_the_card_once():
    OrganizationFactory()
    contact = sign_in(Client())
    invoice = InvoiceFactory(customer=contact.customer)
    card = saved_card(contact.customer)
    url = pay_url(invoice)
    forms = []
    for _ in range(10):
        browser = login_verified(Client(), contact.user)
        html = browser.get(url).content.decode()
        forms.append(
            (
                browser,
                {
                    "idempotency_key": hidden_value(html, "idempotency_key"),
                    "summary": hidden_value(html, "summary"),
                    "method": str(card.public_id),
                },
            )
        )
    barrier = threading.Barrier(len(forms))
    statuses = []

    def submit(browser, data):
        try:
            barrier.wait()
            statuses.append(browser.post(url, data).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=form) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 9 + [302], statuses
    assert ledger_charges() == 1
    assert Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count() == 1
    assert PaymentAllocation.objects.filter(invoice=invoice).count() == 1
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


# ----------------------------------------------------------------------------- access
def test_pay_viewer_is_forbidden_and_nothing_is_charged(client, organization):
    viewer = sign_in(client, role="viewer")
    invoice = InvoiceFactory(customer=viewer.customer)

    assert client.get(pay_url(invoice)).status_code == 403
    assert client.post(pay_url(invoice), {"method": "new"}).status_code == 403
    assert client.get(reverse("portal:pay_all")).status_code == 403
    assert ledger_charges() == 0


def test_pay_other_customers_invoice_is_not_found_and_unchanged(client, payer):
    other = InvoiceFactory()
    card = saved_card(payer.customer)

    assert client.get(pay_url(other)).status_code == 404
    response = client.post(
        pay_url(other),
        {"idempotency_key": "pay_0123456789abcdef", "summary": "x", "method": str(card.public_id)},
    )

    assert response.status_code == 404
    other.refresh_from_db()
    assert other.status == InvoiceStatus.OPEN and ledger_charges() == 0


def test_pay_with_other_customers_saved_card_is_refused(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    stranger_card = saved_card(CustomerFactory())

    response, _ = confirm(client, pay_url(invoice), method=str(stranger_card.public_id))

    assert response.status_code == 200
    assert 'id="id_method-errors"' in response.content.decode()
    assert ledger_charges() == 0


def test_pay_switched_off_is_not_found_and_hidden(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    set_preference(allow_payments=False)

    assert client.get(pay_url(invoice)).status_code == 404
    assert client.get(reverse("portal:pay_all")).status_code == 404
    dashboard = client.get(reverse("portal:dashboard")).content.decode()
    assert reverse("portal:pay_all") not in dashboard
    assert pay_url(invoice) not in client.get(reverse("portal:payments")).content.decode()


def test_pay_post_without_csrf_token_is_refused_and_charges_nothing(organization):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(browser)
    invoice = InvoiceFactory(customer=contact.customer)
    card = saved_card(contact.customer)
    html = browser.get(pay_url(invoice)).content.decode()

    response = browser.post(
        pay_url(invoice),
        {
            "idempotency_key": hidden_value(html, "idempotency_key"),
            "summary": hidden_value(html, "summary"),
            "method": str(card.public_id),
        },
    )

    assert response.status_code == 403
    assert ledger_charges() == 0 and not Payment.objects.exists()


def test_pay_get_changes_nothing(client, payer):
    invoice = InvoiceFactory(customer=payer.customer)
    CreditNoteFactory(customer=payer.customer, amount=Decimal("10.00"))
    saved_card(payer.customer)

    client.get(pay_url(invoice))
    client.get(reverse("portal:pay_all"))

    assert not Payment.objects.exists() and not CreditAllocation.objects.exists()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


# ----------------------------------------------------------------------------- queries
def _history(customer, rows: int) -> None:
    """``rows`` finalized invoices, payments and credit notes, written in bulk."""
    invoices = Invoice.objects.bulk_create(
        Invoice(
            customer=customer,
            status=InvoiceStatus.OPEN,
            number=f"BULK-{customer.pk}-{n:05d}",
            currency="USD",
            kind="one_time",
            issue_date=datetime.date(2025, 1, 1) + datetime.timedelta(days=n % 300),
            due_date=datetime.date(2025, 1, 15) + datetime.timedelta(days=n % 300),
            subtotal=Decimal("10.00"),
            total=Decimal("10.00"),
        )
        for n in range(rows)
    )
    payments = Payment.objects.bulk_create(
        Payment(
            customer=customer,
            amount=Decimal("5.00"),
            currency="USD",
            status=PaymentStatus.SUCCEEDED,
            idempotency_key=f"bulk-{customer.pk}-{n}",
            receipt_number=f"BR-{customer.pk}-{n:05d}",
            received_on=datetime.date(2025, 6, 1),
        )
        for n in range(rows)
    )
    PaymentAllocation.objects.bulk_create(
        PaymentAllocation(payment=p, invoice=i, amount=Decimal("5.00"))
        for p, i in zip(payments, invoices, strict=True)
    )


@pytest.mark.parametrize("page", ["one", "all"])
def test_pay_confirmation_query_count_is_small_and_constant(client, organization, page):
    counts = []
    for rows in (1, 500):
        customer = CustomerFactory()
        browser = Client()
        sign_in(browser, customer)
        _history(customer, rows)
        CreditNoteFactory(customer=customer, amount=Decimal("1.00"))
        PaymentFactory(customer=customer, amount=Decimal("9.00"))  # unapplied: credit too
        saved_card(customer)
        invoice = InvoiceFactory(customer=customer)
        url = pay_url(invoice) if page == "one" else reverse("portal:pay_all")
        counts.append(queries_for(browser, url))
    assert counts[0] == counts[1] <= 10, counts


def test_pay_subscription_card_untouched_by_unsaved_new_card(client, payer):
    card = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=card)
    invoice = InvoiceFactory(customer=payer.customer)

    confirm(client, pay_url(invoice), **new_card("5555555555554444"))

    assert Subscription.objects.get(pk=subscription.pk).payment_method == card
    card.refresh_from_db()
    assert card.is_default
