"""The credits page: credit notes, where each went, and payments not yet applied."""

import datetime
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.enums import InvoiceStatus, RefundStatus
from billing.models import CreditAllocation, CreditNote
from portal.models import PortalPreferences
from tests.factories import (
    ContactPersonFactory,
    CreditAllocationFactory,
    CreditNoteFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
    RefundFactory,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 3, 20, 12, 0, tzinfo=datetime.UTC)
URL = reverse("portal:credits")
D = Decimal


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex")


def sign_in(client, customer, **traits):
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def set_preferences(**values) -> None:
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


def count_queries(client, url: str) -> int:
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def table_rows(response, css: str) -> list[list[str]]:
    table = re.search(rf'<table class="[^"]*{css}">(.*?)</table>', response.text, re.S)
    assert table, f"no {css} table"
    body = table.group(1).split("<tbody>")[1]
    return [
        [
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_credits_page_shows_notes_where_applied_refunds_and_unused_total(client, customer):
    applied = CreditNoteFactory(
        customer=customer, number="CN-1", amount=D("50.00"), issue_date=datetime.date(2026, 2, 1)
    )
    invoice = InvoiceFactory(customer=customer, number="INV-7")
    CreditAllocationFactory(credit_note=applied, invoice=invoice, amount=D("30.00"))
    payment = PaymentFactory(customer=customer, receipt_number="RCPT-1", amount=D("200.00"))
    RefundFactory(
        payment=payment, credit_note=applied, amount=D("5.00"), status=RefundStatus.SUCCEEDED
    )
    RefundFactory(
        payment=payment, credit_note=applied, amount=D("9.00"), status=RefundStatus.FAILED
    )
    voided_on = InvoiceFactory(customer=customer, number="INV-8", status=InvoiceStatus.VOID)
    CreditAllocationFactory(credit_note=applied, invoice=voided_on, amount=D("4.00"))
    unused = CreditNoteFactory(
        customer=customer, number="CN-2", amount=D("12.50"), issue_date=datetime.date(2026, 3, 1)
    )
    CreditNoteFactory(
        customer=customer,
        number="CN-VOID",
        amount=D("99.00"),
        issue_date=datetime.date(2026, 3, 10),
        void=True,
    )
    PaymentAllocationFactory(payment=payment, invoice__customer=customer, amount=D("120.00"))
    sign_in(client, customer)

    response = client.get(URL)

    assert response.status_code == 200
    notes = table_rows(response, "credit-notes")
    assert [row[0] for row in notes] == ["CN-VOID Void", "CN-2", "CN-1"]
    assert notes[1][1:5] == ["Mar 1, 2026", "Goodwill", "12.50", "12.50"]
    assert notes[1][5] == "Not used yet"
    # 50 − 30 applied − 5 refunded = 15 left; the allocation to a voided invoice came back.
    assert notes[2][3:5] == ["50.00", "15.00"]
    assert "Invoice INV-7 : USD 30.00" in notes[2][5]
    assert "Invoice INV-8 : USD 4.00 (invoice voided — returned as credit)" in notes[2][5]
    assert "Refunded Mar 20, 2026: USD 5.00" in notes[2][5]
    assert "9.00" not in notes[2][5]
    assert notes[0][4] == "—"
    payments = table_rows(response, "payment-credits")
    assert payments == [["RCPT-1", "Jan 15, 2026", "Card", "200.00", "120.00", "0.00", "80.00"]]
    # 15.00 + 12.50 from notes, 80.00 from the payment.
    assert re.search(r'data-testid="unused-total">USD 107.50<', response.text)
    assert f'href="{reverse("portal:invoice_detail", args=[invoice.public_id])}"' in response.text
    assert unused.number in response.text


def test_credits_page_without_credit_says_so(client, customer):
    sign_in(client, customer)

    response = client.get(URL)

    assert "No credit notes." in response.text and "No unapplied payments." in response.text
    assert re.search(r'data-testid="unused-total">USD 0.00<', response.text)


def test_credits_page_lists_no_other_customers_credit(client, customer):
    CreditNoteFactory(number="CN-OTHER", amount=D("70.00"))
    PaymentFactory(receipt_number="RCPT-OTHER", amount=D("80.00"))
    sign_in(client, customer)

    response = client.get(URL)

    assert "CN-OTHER" not in response.text and "RCPT-OTHER" not in response.text
    assert re.search(r'data-testid="unused-total">USD 0.00<', response.text)


def test_credits_parent_sees_visible_branch_credit_not_hidden(client, organization):
    parent = CustomerFactory(display_name="Acme Group")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    hidden = CustomerFactory(display_name="Acme Secret", parent=parent, hidden_from_parent=True)
    CreditNoteFactory(customer=parent, number="CN-P", amount=D("10.00"))
    CreditNoteFactory(customer=berlin, number="CN-B", amount=D("20.00"))
    CreditNoteFactory(customer=hidden, number="CN-H", amount=D("40.00"))
    sign_in(client, parent)

    response = client.get(URL)

    notes = table_rows(response, "credit-notes")
    assert sorted((row[0], row[1]) for row in notes) == [
        ("CN-B", "Acme Berlin"),
        ("CN-P", "Acme Group"),
    ]
    assert "CN-H" not in response.text and "Acme Secret" not in response.text
    assert re.search(r'data-testid="unused-total">USD 30.00<', response.text)
    assert '<td>Acme Berlin</td><td class="amount">USD 20.00</td>' in response.text


def test_credits_branch_contact_does_not_see_parent_credit(client, organization):
    parent = CustomerFactory(display_name="Acme Group")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    CreditNoteFactory(customer=parent, number="CN-P")
    sign_in(client, berlin)

    assert "CN-P" not in client.get(URL).text


def test_credits_preference_off_hides_nav_and_returns_404(client, customer):
    sign_in(client, customer)
    assert f'href="{URL}"' in client.get(reverse("portal:dashboard")).text
    set_preferences(show_credits=False)

    assert client.get(URL).status_code == 404
    assert f'href="{URL}"' not in client.get(reverse("portal:dashboard")).text


def test_credits_viewer_role_may_read(client, customer):
    sign_in(client, customer)  # viewer by default
    assert client.get(URL).status_code == 200


def test_credits_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    note = CreditNoteFactory(customer=small)
    CreditAllocationFactory(credit_note=note)
    PaymentFactory(customer=small)

    invoice = InvoiceFactory(customer=large, subtotal=D("5000.00"))
    CreditNote.objects.bulk_create(
        CreditNote(
            customer=large,
            number=f"BULK-CN-{n:05d}",
            reason="goodwill",
            currency="USD",
            amount=D("3.00"),
            issue_date=datetime.date(2026, 1, 1),
        )
        for n in range(500)
    )
    CreditAllocation.objects.bulk_create(
        CreditAllocation(credit_note=note, invoice=invoice, amount=D("1.00"))
        for note in CreditNote.objects.filter(customer=large)
    )
    for _ in range(3):
        PaymentFactory(customer=large)

    sign_in(client, small)
    few = count_queries(client, URL)
    client.logout()
    sign_in(client, large)
    many = count_queries(client, URL)

    assert few == many <= 10
    assert client.get(URL).text.count("BULK-CN-") == 500
