"""The payments list, the receipt page and the receipt PDF."""

import datetime
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pypdf import PdfReader

from billing.enums import InvoiceStatus, PaymentStatus
from billing.models import Invoice, Payment, PaymentAllocation
from tests.factories import (
    CustomerFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
)
from tests.portal.payments_support import queries_for, set_preference, sign_in, text_of

pytestmark = pytest.mark.django_db

LIST = "portal:payments"


def detail_url(payment):
    return reverse("portal:payment_detail", args=[payment.public_id])


def pdf_url(payment):
    return reverse("portal:payment_pdf", args=[payment.public_id])


def at(day: int, month: int = 1, year: int = 2026) -> datetime.datetime:
    return datetime.datetime(year, month, day, 12, tzinfo=datetime.UTC)


def payment_on(customer, when, **fields) -> Payment:
    payment = PaymentFactory(customer=customer, **fields)
    Payment.objects.filter(pk=payment.pk).update(created_at=when)
    payment.refresh_from_db()
    return payment


@pytest.fixture
def payer(client, organization):
    return sign_in(client)


@pytest.fixture
def family(organization):
    parent = CustomerFactory(display_name="Parent Co")
    branch = CustomerFactory(parent=parent, display_name="Visible Branch")
    hidden = CustomerFactory(parent=parent, visible_to_parent=False, display_name="Hidden Branch")
    return parent, branch, hidden


# ----------------------------------------------------------------------------- list
def test_payment_list_shows_receipts_amounts_and_statuses(client, payer):
    PaymentFactory(customer=payer.customer, receipt_number="RCPT-9001", amount=Decimal("45.50"))
    PaymentFactory(
        customer=payer.customer,
        failed=True,
        amount=Decimal("12.00"),
        failure_message="Your card was declined.",
    )
    PaymentFactory(receipt_number="RCPT-OTHER")

    text = text_of(client.get(reverse(LIST)))

    assert "RCPT-9001" in text and "USD 45.50" in text and "Succeeded" in text
    assert "USD 12.00" in text and "Failed" in text and "Your card was declined." in text
    assert "RCPT-OTHER" not in text


def test_payment_list_status_filter_shows_only_that_status(client, payer):
    PaymentFactory(customer=payer.customer, receipt_number="RCPT-OK")
    PaymentFactory(customer=payer.customer, refunded=True, receipt_number="RCPT-BACK")

    text = text_of(client.get(reverse(LIST), {"status": "refunded"}))

    assert "RCPT-BACK" in text and "RCPT-OK" not in text


def test_payment_list_date_range_includes_both_ends(client, payer):
    payment_on(payer.customer, at(1), receipt_number="RCPT-JAN01")
    payment_on(payer.customer, at(10), receipt_number="RCPT-JAN10")
    payment_on(payer.customer, at(20), receipt_number="RCPT-JAN20")
    payment_on(payer.customer, at(21), receipt_number="RCPT-JAN21")

    text = text_of(client.get(reverse(LIST), {"date_from": "2026-01-10", "date_to": "2026-01-20"}))

    assert "RCPT-JAN10" in text and "RCPT-JAN20" in text
    assert "RCPT-JAN01" not in text and "RCPT-JAN21" not in text


def test_payment_list_reversed_date_range_shows_error_next_to_field(client, payer):
    response = client.get(reverse(LIST), {"date_from": "2026-02-01", "date_to": "2026-01-01"})

    assert response.status_code == 200
    assert 'id="id_date_to-errors"' in response.content.decode()
    assert "The end date must not be before the start date." in text_of(response)


def test_payment_list_parent_sees_visible_branch_and_filters_by_it(client, family):
    parent, branch, hidden = family
    sign_in(client, parent)
    PaymentFactory(customer=parent, receipt_number="RCPT-PARENT")
    PaymentFactory(customer=branch, receipt_number="RCPT-BRANCH")
    PaymentFactory(customer=hidden, receipt_number="RCPT-HIDDEN")

    everything = text_of(client.get(reverse(LIST)))
    only_branch = text_of(client.get(reverse(LIST), {"customer": str(branch.public_id)}))
    hidden_filter = client.get(reverse(LIST), {"customer": str(hidden.public_id)})

    assert "RCPT-PARENT" in everything and "RCPT-BRANCH" in everything
    assert "Visible Branch" in everything and "RCPT-HIDDEN" not in everything
    assert "RCPT-BRANCH" in only_branch and "RCPT-PARENT" not in only_branch
    # A hidden branch is no choice: the filter is refused and shows nothing of it.
    assert 'id="id_customer-errors"' in hidden_filter.content.decode()
    assert "RCPT-HIDDEN" not in text_of(hidden_filter)


def test_payment_list_pages_by_keyset_without_offset(client, payer):
    for day in range(1, 31):
        payment_on(payer.customer, at(day), receipt_number=f"RCPT-D{day:02d}")

    first = client.get(reverse(LIST))
    older_url = first.context["older_url"]
    with CaptureQueriesContext(connection) as captured:
        second = client.get(older_url)

    assert "RCPT-D30" in text_of(first) and "RCPT-D06" in text_of(first)
    assert "RCPT-D05" not in text_of(first)
    assert [p.receipt_number for p in second.context["payments"]] == [
        f"RCPT-D{day:02d}" for day in range(5, 0, -1)
    ]
    assert not any("OFFSET" in q["sql"].upper() for q in captured.captured_queries)
    back = client.get(second.context["newer_url"])
    assert back.context["payments"][0].receipt_number == "RCPT-D30"


def test_payment_list_tampered_cursor_starts_from_the_top(client, payer):
    payment_on(payer.customer, at(3), receipt_number="RCPT-TOP")

    response = client.get(reverse(LIST), {"older": "forged:cursor"})

    assert response.status_code == 200 and "RCPT-TOP" in text_of(response)


def test_payment_list_htmx_request_returns_only_the_table(client, payer):
    PaymentFactory(customer=payer.customer, receipt_number="RCPT-HX")

    response = client.get(reverse(LIST), headers={"HX-Request": "true"})

    html = response.content.decode()
    assert "RCPT-HX" in html and "<html" not in html and "<table" in html


def test_payment_list_switched_off_is_not_found_and_hidden_from_menu(client, payer):
    payment = PaymentFactory(customer=payer.customer)
    set_preference(show_payments=False)

    assert client.get(reverse(LIST)).status_code == 404
    assert client.get(detail_url(payment)).status_code == 404
    assert client.get(pdf_url(payment)).status_code == 404
    assert f'href="{reverse(LIST)}"' not in client.get(reverse("portal:dashboard")).content.decode()


def test_payment_list_shown_in_menu_when_switched_on(client, payer):
    assert f'href="{reverse(LIST)}"' in client.get(reverse("portal:dashboard")).content.decode()


def test_payment_list_viewer_may_see_payments(client, organization):
    viewer = sign_in(client, role="viewer")
    PaymentFactory(customer=viewer.customer, receipt_number="RCPT-VIEW")

    response = client.get(reverse(LIST))

    assert response.status_code == 200 and "RCPT-VIEW" in text_of(response)
    assert reverse("portal:pay_all") not in response.content.decode()


# ----------------------------------------------------------------------------- receipt
def test_receipt_shows_number_amount_method_and_invoices_paid(client, payer):
    payment = PaymentFactory(
        customer=payer.customer,
        receipt_number="RCPT-0777",
        amount=Decimal("150.00"),
        method_label="Visa •••• 4242",
    )
    PaymentAllocationFactory(
        payment=payment,
        invoice=InvoiceFactory(customer=payer.customer, number="INV-A", paid=True),
        amount=Decimal("100.00"),
    )
    PaymentAllocationFactory(
        payment=payment,
        invoice=InvoiceFactory(customer=payer.customer, number="INV-B", paid=True),
        amount=Decimal("50.00"),
    )

    text = text_of(client.get(detail_url(payment)))

    assert "Receipt RCPT-0777" in text and "USD 150.00" in text and "Visa •••• 4242" in text
    assert "INV-A" in text and "USD 100.00" in text and "INV-B" in text and "USD 50.00" in text


def test_receipt_shows_part_kept_as_credit(client, payer):
    payment = PaymentFactory(customer=payer.customer, amount=Decimal("150.00"))
    PaymentAllocationFactory(
        payment=payment,
        invoice=InvoiceFactory(customer=payer.customer, paid=True),
        amount=Decimal("100.00"),
    )

    text = text_of(client.get(detail_url(payment)))

    assert "USD 50.00 of this payment is kept as credit on your account." in text


def test_receipt_of_failed_payment_says_nothing_was_charged(client, payer):
    payment = PaymentFactory(
        customer=payer.customer, failed=True, failure_message="Your card was declined."
    )

    text = text_of(client.get(detail_url(payment)))

    assert "did not go through: Your card was declined." in text
    assert "Nothing was charged" in text
    assert client.get(pdf_url(payment)).status_code == 404


def test_receipt_pdf_contains_receipt_number_and_amount(client, payer):
    payment = PaymentFactory(
        customer=payer.customer, receipt_number="RCPT-0555", amount=Decimal("1234.50")
    )
    PaymentAllocationFactory(
        payment=payment,
        invoice=InvoiceFactory(customer=payer.customer, number="INV-PDF", paid=True),
        amount=Decimal("1234.50"),
    )

    response = client.get(pdf_url(payment))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Cache-Control"] == "no-store"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "RCPT-0555" in text and "1,234.50" in text and "INV-PDF" in text


@pytest.mark.parametrize("name", ["portal:payment_detail", "portal:payment_pdf"])
def test_receipt_of_another_customer_is_not_found(client, payer, name):
    stranger = PaymentFactory()

    assert client.get(reverse(name, args=[stranger.public_id])).status_code == 404


@pytest.mark.parametrize("name", ["portal:payment_detail", "portal:payment_pdf"])
def test_receipt_parent_sees_visible_branch_but_not_hidden_branch(client, family, name):
    parent, branch, hidden = family
    sign_in(client, parent)
    visible = PaymentFactory(customer=branch)
    invisible = PaymentFactory(customer=hidden)

    assert client.get(reverse(name, args=[visible.public_id])).status_code == 200
    assert client.get(reverse(name, args=[invisible.public_id])).status_code == 404


def test_receipt_branch_user_cannot_see_parents_payment(client, family):
    parent, branch, _hidden = family
    sign_in(client, branch)

    assert client.get(detail_url(PaymentFactory(customer=parent))).status_code == 404


def test_receipt_unknown_id_is_not_found(client, payer):
    response = client.get(
        reverse("portal:payment_detail", args=["0" * 8 + "-0000-0000-0000-" + "0" * 12])
    )

    assert response.status_code == 404


def test_payment_pages_refuse_post(client, payer):
    payment = PaymentFactory(customer=payer.customer)

    assert client.post(reverse(LIST)).status_code == 405
    assert client.post(detail_url(payment)).status_code == 405


# ----------------------------------------------------------------------------- queries
def _bulk_payments(customer, rows: int) -> Payment:
    """``rows`` payments, the first one also allocated to ``rows`` invoices."""
    invoices = Invoice.objects.bulk_create(
        Invoice(
            customer=customer,
            status=InvoiceStatus.PAID,
            number=f"BULK-{customer.pk}-{n:05d}",
            currency="USD",
            kind="one_time",
            issue_date=datetime.date(2025, 1, 1),
            due_date=datetime.date(2025, 1, 15),
            subtotal=Decimal("5.00"),
            total=Decimal("5.00"),
        )
        for n in range(rows)
    )
    payments = Payment.objects.bulk_create(
        Payment(
            customer=customer,
            amount=Decimal("5.00") * (rows if n == 0 else 1),
            currency="USD",
            status=PaymentStatus.SUCCEEDED,
            idempotency_key=f"bulk-{customer.pk}-{n}",
            receipt_number=f"BR-{customer.pk}-{n:05d}",
            received_on=datetime.date(2025, 6, 1),
        )
        for n in range(rows)
    )
    PaymentAllocation.objects.bulk_create(
        PaymentAllocation(payment=payments[0], invoice=invoice, amount=Decimal("5.00"))
        for invoice in invoices
    )
    return payments[0]


@pytest.mark.parametrize("page", ["list", "receipt"])
def test_payment_pages_query_count_is_small_and_constant(organization, page):
    counts = []
    for rows in (1, 500):
        browser = Client()
        contact = sign_in(browser)
        payment = _bulk_payments(contact.customer, rows)
        url = reverse(LIST) if page == "list" else detail_url(payment)
        counts.append(queries_for(browser, url))
    assert counts[0] == counts[1] <= 10, counts


def test_payment_list_query_count_for_parent_with_branches_is_constant(family):
    parent, branch, _hidden = family
    browser = Client()
    sign_in(browser, parent)
    _bulk_payments(branch, 1)
    small = queries_for(browser, reverse(LIST))
    _bulk_payments(parent, 500)

    assert queries_for(browser, reverse(LIST)) == small <= 10
