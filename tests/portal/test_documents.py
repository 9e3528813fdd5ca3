"""Invoice PDF, print view and the receipt template, read back as a customer would see them."""

import datetime
import io
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from pypdf import PdfReader

from billing.enums import InvoiceLineKind, PaymentStatus
from billing.models import Organization, PaymentAllocation
from portal.documents import render_pdf
from portal.models import PortalPreferences
from tests.factories import (
    ContactPersonFactory,
    CreditAllocationFactory,
    CreditNoteFactory,
    CustomerFactory,
    InvoiceFactory,
    InvoiceLineFactory,
    PaymentAllocationFactory,
    PaymentFactory,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(
        display_name="Globex",
        company_name="Globex Corporation",
        billing_line1="500 Oak Avenue",
        billing_city="Cypress",
        billing_state="CA",
        billing_postal_code="90630",
        billing_country="United States",
    )


def sign_in(client, customer, **traits):
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def squash(text: str) -> str:
    """PDF text extraction may break lines and spacing anywhere; compare without whitespace."""
    return re.sub(r"\s+", "", text)


@pytest.fixture
def invoice(customer):
    invoice = InvoiceFactory(
        customer=customer,
        number="INV-000042",
        issue_date=datetime.date(2026, 1, 15),
        due_date=datetime.date(2026, 2, 14),
        period_start=datetime.date(2026, 1, 15),
        period_end=datetime.date(2026, 2, 15),
        subtotal=Decimal("1200.00"),
        discount_total=Decimal("120.00"),
        tax_rate=Decimal("19"),
        tax_total=Decimal("205.20"),
        lines=False,
        billing_details={
            "name": "Globex",
            "company": "Globex Corporation",
            "email": "ap@globex.example",
            "address_lines": ["Globex Corporation", "500 Oak Avenue", "Cypress, CA 90630"],
            "tax_id": "US-123",
        },
        merchant_details={
            "name": "Northwind Cloud",
            "address_lines": ["1 Merchant Way", "Seattle, WA 98101"],
            "email": "billing@northwind.example",
            "tax_id": "NW-999",
            "tax_label": "VAT",
            "footer": "Thank you for your business.",
        },
    )
    InvoiceLineFactory(
        invoice=invoice,
        kind=InvoiceLineKind.PLAN,
        description="Pro plan",
        quantity=Decimal("3"),
        unit_price=Decimal("400.00"),
        amount=Decimal("1200.00"),
        position=0,
    )
    InvoiceLineFactory(
        invoice=invoice,
        kind=InvoiceLineKind.DISCOUNT,
        description="Loyalty discount",
        unit_price=Decimal("-120.00"),
        amount=Decimal("-120.00"),
        position=1,
    )
    return invoice


def pdf_url(invoice) -> str:
    return reverse("portal:invoice_pdf", args=[invoice.public_id])


def test_invoice_pdf_is_a_no_store_attachment_named_after_the_number(client, customer, invoice):
    sign_in(client, customer)

    response = client.get(pdf_url(invoice))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="invoice-inv-000042.pdf"'
    assert response["Cache-Control"] == "no-store"
    assert response.content.startswith(b"%PDF")


def test_invoice_pdf_text_has_parties_number_dates_lines_and_totals(client, customer, invoice):
    note = CreditNoteFactory(customer=customer, number="CN-000007", amount=Decimal("85.20"))
    CreditAllocationFactory(credit_note=note, invoice=invoice, amount=Decimal("85.20"))
    payment = PaymentFactory(
        customer=customer,
        amount=Decimal("500.00"),
        receipt_number="RCPT-000101",
        method_label="Visa 4242",
        received_on=datetime.date(2026, 1, 16),
    )
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("500.00"))
    sign_in(client, customer)

    text = squash(pdf_text(client.get(pdf_url(invoice)).content))

    for expected in [
        "NorthwindCloud",
        "1MerchantWay",
        "Taxid:NW-999",
        "BILLTO",
        "Globex",
        "500OakAvenue",
        "Cypress,CA90630",
        "INV-000042",
        "IssuedateJan15,2026",
        "DuedateFeb14,2026",
        "PeriodJan15,2026–Feb14,2026",
        "Proplan",
        "USD400.00",
        "USD1,200.00",
        "Loyaltydiscount",
        "VAT(19%)USD205.20",
        "TotalUSD1,285.20",
        "CN-000007",
        "RCPT-000101",
        "Visa4242",
        "Jan16,2026",
        "BalancedueUSD700.00",
        "Thankyouforyourbusiness.",
    ]:
        assert expected in text, expected
    assert "PAID" not in text and "VOID" not in text


@pytest.mark.parametrize(("trait", "word"), [("paid", "PAID"), ("void", "VOID")])
def test_invoice_pdf_paid_or_void_carries_a_watermark(client, customer, trait, word):
    invoice = InvoiceFactory(customer=customer, number="INV-000077", **{trait: True})
    sign_in(client, customer)

    text = pdf_text(client.get(pdf_url(invoice)).content)

    assert word in text
    assert "INV-000077" in text


def test_invoice_pdf_paid_in_full_shows_zero_balance(client, customer):
    invoice = InvoiceFactory(customer=customer, number="INV-000078", paid=True)
    PaymentAllocationFactory(
        payment=PaymentFactory(customer=customer, receipt_number="RCPT-000555"),
        invoice=invoice,
        amount=Decimal("100.00"),
    )
    sign_in(client, customer)

    text = squash(pdf_text(client.get(pdf_url(invoice)).content))

    assert "PAID" in text and "RCPT-000555" in text and "BalancedueUSD0.00" in text


def test_invoice_print_view_shows_the_document_without_the_portal_chrome(client, customer, invoice):
    sign_in(client, customer)

    response = client.get(reverse("portal:invoice_print", args=[invoice.public_id]))
    text = response.text

    assert response.status_code == 200
    assert "Invoice INV-000042" in text
    assert "USD 1,285.20" in text and "VAT (19%)" in text and "Feb 14, 2026" in text
    assert "/static/css/print.css" in text
    assert "use your browser's Print command" in text.replace("&#x27;", "'")
    assert 'id="sidebar"' not in text and "bootstrap" not in text
    assert "<script" not in text


def test_invoice_print_view_paid_invoice_is_stamped(client, customer):
    invoice = InvoiceFactory(customer=customer, paid=True)
    sign_in(client, customer)

    text = client.get(reverse("portal:invoice_print", args=[invoice.public_id])).text

    assert 'class="stamp stamp-paid"' in text


@pytest.mark.parametrize("name", ["portal:invoice_pdf", "portal:invoice_print"])
def test_invoice_documents_other_customers_invoice_is_404(client, customer, name):
    foreign = InvoiceFactory(number="FOREIGN-1")
    sign_in(client, customer)

    response = client.get(reverse(name, args=[foreign.public_id]))

    assert response.status_code == 404
    assert not response.content.startswith(b"%PDF")


@pytest.mark.parametrize("name", ["portal:invoice_pdf", "portal:invoice_print"])
def test_invoice_documents_hidden_branch_is_404_visible_branch_is_200(client, organization, name):
    parent = CustomerFactory(display_name="Acme Corp")
    visible = InvoiceFactory(customer=CustomerFactory(parent=parent), number="BR-1")
    hidden = InvoiceFactory(
        customer=CustomerFactory(parent=parent, hidden_from_parent=True), number="BR-2"
    )
    sign_in(client, parent)

    assert client.get(reverse(name, args=[visible.public_id])).status_code == 200
    assert client.get(reverse(name, args=[hidden.public_id])).status_code == 404


@pytest.mark.parametrize("name", ["portal:invoice_pdf", "portal:invoice_print"])
def test_invoice_documents_module_switched_off_is_404(client, customer, invoice, name):
    sign_in(client, customer)
    preferences = PortalPreferences.load()
    preferences.show_invoices = False
    preferences.save()

    assert client.get(reverse(name, args=[invoice.public_id])).status_code == 404


def test_receipt_template_renders_number_date_amount_method_and_invoices(customer):
    first = InvoiceFactory(customer=customer, number="INV-000301", paid=True)
    second = InvoiceFactory(
        customer=customer, number="INV-000302", subtotal=Decimal("50.00"), paid=True
    )
    payment = PaymentFactory(
        customer=customer,
        amount=Decimal("175.00"),
        receipt_number="RCPT-000900",
        method_label="Mastercard •••• 4444",
        received_on=datetime.date(2026, 1, 18),
    )
    PaymentAllocationFactory(payment=payment, invoice=first, amount=Decimal("100.00"))
    PaymentAllocationFactory(payment=payment, invoice=second, amount=Decimal("50.00"))
    allocations = list(
        PaymentAllocation.objects.filter(payment=payment).select_related("invoice").order_by("id")
    )

    pdf = render_pdf(
        "documents/receipt.html",
        {
            "payment": payment,
            "allocations": allocations,
            "organization": Organization.load(),
            "unapplied": Decimal("25.00"),
        },
    )
    text = squash(pdf_text(pdf))

    for expected in [
        "Receipt",
        "RCPT-000900",
        "DateJan18,2026",
        "Mastercard••••4444",
        "AmountreceivedUSD175.00",
        "INV-000301",
        "INV-000302",
        "USD100.00",
        "USD50.00",
        "USD25.00ofthispaymentiskeptascredit",
        "NorthwindCloud",
        "Globex",
        "500OakAvenue",
    ]:
        assert expected in text, expected
    assert "REFUNDED" not in text


def test_receipt_template_refunded_payment_carries_a_watermark(customer):
    payment = PaymentFactory(
        customer=customer, status=PaymentStatus.REFUNDED, receipt_number="RCPT-000901"
    )

    text = pdf_text(
        render_pdf(
            "documents/receipt.html",
            {"payment": payment, "allocations": [], "organization": Organization.load()},
        )
    )

    assert "REFUNDED" in text and "RCPT-000901" in text
    assert "kept as credit" in text
