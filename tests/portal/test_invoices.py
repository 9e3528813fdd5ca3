"""The portal's invoice list and invoice page, as a customer's contact sees them."""

import datetime
import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import include, path, reverse

from billing.enums import CreditNoteStatus, InvoiceLineKind, InvoiceStatus, PaymentStatus
from billing.models import Invoice, InvoiceLine
from portal import urls as portal_urls
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
    SubscriptionFactory,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

# The factories issue invoices on 2026-01-15, due 14 days later; "today" is five days on.
NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)
TODAY = NOW.date()
LIST_URL = reverse("portal:invoices")


# A URL configuration with a stand-in for the payments engineer's pay page, so the Pay button's
# rule can be tested whether or not that page exists yet.
def _pay_stand_in(request, public_id):
    return HttpResponse("pay")


urlpatterns = [
    path(
        "portal/",
        include(
            (
                [
                    *portal_urls.urlpatterns,
                    path("invoices/<uuid:public_id>/pay/", _pay_stand_in, name="invoice_pay"),
                ],
                "portal",
            )
        ),
    ),
    path("accounts/", include("accounts.urls")),
]


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex", company_name="Globex Corporation")


def sign_in(client, customer, **traits):
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def set_preferences(**values) -> None:
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


def detail_url(invoice) -> str:
    return reverse("portal:invoice_detail", args=[invoice.public_id])


def listed_numbers(response) -> list[str]:
    """Invoice numbers in the table's rows, top to bottom."""
    return re.findall(r'<a href="/portal/invoices/[0-9a-f-]{36}/">([^<]+)</a>', response.text)


def bulk_invoices(customer, count: int, *, start=datetime.date(2024, 1, 1), prefix="BULK"):
    """``count`` finalized invoices, two per issue day (so the keyset needs its id tiebreak)."""
    Invoice.objects.bulk_create(
        Invoice(
            customer=customer,
            number=f"{prefix}-{n:05d}",
            status=InvoiceStatus.OPEN,
            kind="one_time",
            currency="USD",
            issue_date=start + datetime.timedelta(days=n // 2),
            due_date=start + datetime.timedelta(days=n // 2 + 14),
            subtotal=Decimal("10.00"),
            total=Decimal("10.00"),
        )
        for n in range(count)
    )


# ----------------------------------------------------------------------------- list


def test_invoice_list_default_shows_own_finalized_invoices_newest_first(client, customer):
    older = InvoiceFactory(customer=customer, number="INV-1", issue_date=datetime.date(2025, 12, 1))
    newer = InvoiceFactory(
        customer=customer, number="INV-2", subtotal=Decimal("1234.50"), tax_total=Decimal("0")
    )
    InvoiceFactory(customer=customer, draft=True)
    InvoiceFactory(number="OTHER-1")  # another customer's
    sign_in(client, customer)

    response = client.get(LIST_URL)

    assert response.status_code == 200
    assert listed_numbers(response) == [newer.number, older.number]
    assert "OTHER-1" not in response.text
    assert "USD 1,234.50" in response.text
    assert "Jan 15, 2026" in response.text and "Jan 29, 2026" in response.text
    assert "Overdue" in response.text  # INV-1 was due Dec 15
    assert '<th scope="col">Customer</th>' not in response.text  # not a parent


@pytest.fixture
def invoices_in_every_state(customer):
    """One invoice per state the status filter knows, as of TODAY."""
    open_ = InvoiceFactory(customer=customer, number="OPEN")
    overdue = InvoiceFactory(customer=customer, number="OVERDUE", overdue=True)
    partial = InvoiceFactory(customer=customer, number="PARTIAL")
    PaymentAllocationFactory(
        payment=PaymentFactory(customer=customer, amount=Decimal("40.00")),
        invoice=partial,
        amount=Decimal("40.00"),
    )
    credited = InvoiceFactory(customer=customer, number="CREDITED")
    CreditAllocationFactory(
        credit_note=CreditNoteFactory(customer=customer), invoice=credited, amount=Decimal("10.00")
    )
    paid = InvoiceFactory(customer=customer, number="PAID", paid=True)
    void = InvoiceFactory(customer=customer, number="VOID", void=True)
    # A failed payment pays nothing: still plain open.
    failed = InvoiceFactory(customer=customer, number="FAILEDPAY")
    PaymentAllocationFactory(payment=PaymentFactory(customer=customer, failed=True), invoice=failed)
    return open_, overdue, partial, credited, paid, void, failed


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("open", {"OPEN", "OVERDUE", "PARTIAL", "CREDITED", "FAILEDPAY"}),
        ("overdue", {"OVERDUE"}),
        ("partially_paid", {"PARTIAL", "CREDITED"}),
        ("paid", {"PAID"}),
        ("void", {"VOID"}),
        ("", {"OPEN", "OVERDUE", "PARTIAL", "CREDITED", "PAID", "VOID", "FAILEDPAY"}),
    ],
)
def test_invoice_list_status_filter_returns_matching_invoices(
    client, customer, invoices_in_every_state, status, expected
):
    sign_in(client, customer)

    response = client.get(LIST_URL, {"status": status})

    assert set(listed_numbers(response)) == expected


def test_invoice_list_partially_paid_row_shows_balance_and_badge(
    client, customer, invoices_in_every_state
):
    sign_in(client, customer)

    response = client.get(LIST_URL, {"status": "partially_paid"})

    row = re.search(r"PARTIAL</a>.*?</tr>", response.text, re.S).group(0)
    assert "USD 100.00" in row and "USD 60.00" in row and "Partially paid" in row


def test_invoice_list_date_range_filter_is_inclusive(client, customer):
    for number, day in [("DEC", 1), ("JAN5", 5), ("JAN10", 10), ("JAN15", 15)]:
        month = 12 if number == "DEC" else 1
        year = 2025 if number == "DEC" else 2026
        InvoiceFactory(customer=customer, number=number, issue_date=datetime.date(year, month, day))
    sign_in(client, customer)

    response = client.get(LIST_URL, {"issued_from": "2026-01-05", "issued_to": "2026-01-10"})

    assert listed_numbers(response) == ["JAN10", "JAN5"]


def test_invoice_list_reversed_date_range_shows_error_next_to_field(client, customer):
    InvoiceFactory(customer=customer, number="INV-1")
    sign_in(client, customer)

    response = client.get(LIST_URL, {"issued_from": "2026-02-01", "issued_to": "2026-01-01"})

    assert response.status_code == 200
    assert 'id="id_issued_to-errors"' in response.text
    assert "The end date is before the start date." in response.text


def test_invoice_list_malformed_date_is_a_field_error_not_a_500(client, customer):
    InvoiceFactory(customer=customer, number="INV-1")
    sign_in(client, customer)

    response = client.get(LIST_URL, {"issued_from": "not-a-date"})

    assert response.status_code == 200
    assert 'id="id_issued_from-errors"' in response.text
    assert listed_numbers(response) == ["INV-1"]


def test_invoice_list_subscription_filter_returns_that_subscriptions_invoices(client, customer):
    pro = SubscriptionFactory(customer=customer, plan__name="Pro")
    starter = SubscriptionFactory(customer=customer, plan__name="Starter")
    InvoiceFactory(customer=customer, subscription=pro, number="PRO-1")
    InvoiceFactory(customer=customer, subscription=starter, number="STARTER-1")
    InvoiceFactory(customer=customer, number="ONE-OFF")
    sign_in(client, customer)

    page = client.get(LIST_URL)
    response = client.get(LIST_URL, {"subscription": str(pro.public_id)})

    assert "Pro × 1" in page.text and "Starter × 1" in page.text
    assert listed_numbers(response) == ["PRO-1"]


def test_invoice_list_other_customers_subscription_is_refused(client, customer):
    foreign = SubscriptionFactory()
    InvoiceFactory(customer=foreign.customer, subscription=foreign, number="FOREIGN-1")
    InvoiceFactory(customer=customer, number="MINE-1")
    sign_in(client, customer)

    response = client.get(LIST_URL, {"subscription": str(foreign.public_id)})

    assert "FOREIGN-1" not in response.text
    assert 'id="id_subscription-errors"' in response.text
    assert listed_numbers(response) == ["MINE-1"]


@pytest.fixture
def family(organization):
    """A parent with a visible branch and a hidden one, one invoice each."""
    parent = CustomerFactory(display_name="Acme Corp")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    hidden = CustomerFactory(display_name="Acme Secret", parent=parent, hidden_from_parent=True)
    invoices = {
        "parent": InvoiceFactory(customer=parent, number="ACME-1"),
        "berlin": InvoiceFactory(customer=berlin, number="BERLIN-1"),
        "hidden": InvoiceFactory(customer=hidden, number="HIDDEN-1"),
    }
    return SimpleNamespace(parent=parent, berlin=berlin, hidden=hidden, invoices=invoices)


def test_invoice_list_parent_sees_visible_branch_with_customer_column(client, family):
    sign_in(client, family.parent)

    response = client.get(LIST_URL)

    assert set(listed_numbers(response)) == {"ACME-1", "BERLIN-1"}
    assert '<th scope="col">Customer</th>' in response.text
    assert "Acme Berlin" in response.text
    assert "Acme Secret" not in response.text  # not even as a branch choice


def test_invoice_list_branch_filter_returns_only_that_branch(client, family):
    sign_in(client, family.parent)

    response = client.get(LIST_URL, {"customer": str(family.berlin.public_id)})

    assert listed_numbers(response) == ["BERLIN-1"]


def test_invoice_list_hidden_branch_filter_is_refused(client, family):
    sign_in(client, family.parent)

    response = client.get(LIST_URL, {"customer": str(family.hidden.public_id)})

    assert "HIDDEN-1" not in response.text
    assert 'id="id_customer-errors"' in response.text


def test_invoice_list_branch_user_sees_only_its_own_invoices(client, family):
    sign_in(client, family.berlin)

    response = client.get(LIST_URL)

    assert listed_numbers(response) == ["BERLIN-1"]
    assert 'name="customer"' not in response.text


def test_invoice_list_pages_return_every_invoice_once_and_back(client, customer):
    bulk_invoices(customer, 61)
    sign_in(client, customer)
    expected = list(
        Invoice.objects.filter(customer=customer)
        .order_by("-issue_date", "-id")
        .values_list("number", flat=True)
    )

    seen, pages, url = [], [], LIST_URL
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(listed_numbers(response))
        seen += pages[-1]
        match = re.search(r'<a class="page-link" href="([^"]+)"[^>]*>Older', response.text)
        url = match.group(1).replace("&amp;", "&") if match else None

    assert seen == expected  # all of them, once each, newest first
    assert [len(p) for p in pages] == [25, 25, 11]
    last_page = response
    assert "Older →</span>" in last_page.text  # disabled on the last page

    back = []
    response = last_page
    while match := re.search(r'<a class="page-link" href="([^"]+)"[^>]*>← Newer', response.text):
        response = client.get(match.group(1).replace("&amp;", "&"))
        back.append(listed_numbers(response))
    assert back == [pages[1], pages[0]]


def test_invoice_list_pagination_keeps_filters(client, customer):
    bulk_invoices(customer, 30)
    InvoiceFactory(
        customer=customer, number="PAID-1", paid=True, issue_date=datetime.date(2023, 1, 1)
    )
    sign_in(client, customer)

    first = client.get(LIST_URL, {"status": "open"})
    older = re.search(r'<a class="page-link" href="([^"]+)"[^>]*>Older', first.text).group(1)
    second = client.get(older.replace("&amp;", "&"))

    assert "status=open" in older
    assert len(listed_numbers(second)) == 5 and "PAID-1" not in second.text


def test_invoice_list_tampered_cursor_shows_first_page(client, customer):
    bulk_invoices(customer, 3)
    sign_in(client, customer)

    response = client.get(LIST_URL, {"older": "WyIyMDI2LTAxLTE1IiwxXQ:forged"})

    assert response.status_code == 200
    assert len(listed_numbers(response)) == 3


def test_invoice_list_htmx_request_renders_only_the_table(client, customer):
    InvoiceFactory(customer=customer, number="INV-1")
    sign_in(client, customer)

    partial = client.get(LIST_URL, {"status": "open"}, headers={"HX-Request": "true"})
    full = client.get(LIST_URL, {"status": "open"})

    assert "INV-1" in partial.text and "<html" not in partial.text and "<form" not in partial.text
    assert "HX-Request" in partial["Vary"]
    assert "<html" in full.text and 'hx-target="#invoice-table"' in full.text
    assert 'id="invoice-table"' in full.text


def test_invoice_list_htmx_request_with_bad_filter_says_what_was_ignored(client, customer):
    InvoiceFactory(customer=customer, number="INV-1")
    sign_in(client, customer)

    partial = client.get(
        LIST_URL,
        {"issued_from": "2026-02-01", "issued_to": "2026-01-01"},
        headers={"HX-Request": "true"},
    )

    assert "Some filters were not applied: Issued to: The end date is before the start date." in (
        partial.text
    )


def test_invoice_list_module_switched_off_is_hidden_and_404(client, customer):
    InvoiceFactory(customer=customer)
    sign_in(client, customer)
    set_preferences(show_invoices=False)

    assert client.get(LIST_URL).status_code == 404
    assert f'href="{LIST_URL}"' not in client.get(reverse("portal:dashboard")).text


def test_invoice_list_post_is_not_allowed(client, customer):
    sign_in(client, customer)

    assert client.post(LIST_URL).status_code == 405


def test_invoice_list_sidebar_marks_invoices_current(client, customer):
    sign_in(client, customer)

    response = client.get(LIST_URL)

    assert re.search(r'class="nav-link active" href="/portal/invoices/"', response.text)


def count_queries(client, url) -> int:
    client.get(url)  # warm-up: cached settings rows, session
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_invoice_list_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    InvoiceFactory(customer=small)
    bulk_invoices(large, 500)
    SubscriptionFactory(customer=large)

    sign_in(client, small)
    few = count_queries(client, LIST_URL)
    client.logout()
    sign_in(client, large)
    many = count_queries(client, LIST_URL)
    first = client.get(LIST_URL)
    for _ in range(19):  # walk to the last page
        match = re.search(r'<a class="page-link" href="([^"]+)"[^>]*>Older', first.text)
        if not match:
            break
        last_url = match.group(1).replace("&amp;", "&")
        first = client.get(last_url)
    last = count_queries(client, last_url)
    filtered = count_queries(client, f"{LIST_URL}?status=partially_paid&issued_from=2024-01-01")

    assert few == many == last == filtered
    assert many <= 10


def test_invoice_list_query_count_for_parent_is_bounded(client, family):
    bulk_invoices(family.berlin, 100, prefix="B")
    sign_in(client, family.parent)

    assert count_queries(client, LIST_URL) <= 10


# ----------------------------------------------------------------------------- detail


@pytest.fixture
def settled_invoice(customer):
    """A 19 % taxed invoice with a discount, part credited and part paid."""
    invoice = InvoiceFactory(
        customer=customer,
        number="INV-000042",
        subscription=SubscriptionFactory(customer=customer, plan__name="Pro"),
        period_start=datetime.date(2026, 1, 15),
        period_end=datetime.date(2026, 2, 15),
        subtotal=Decimal("1200.00"),
        discount_total=Decimal("120.00"),
        tax_rate=Decimal("19"),
        tax_total=Decimal("205.20"),
        lines=False,
        billing_details={
            "name": "Globex (as invoiced)",
            "company": "Globex Corporation",
            "email": "ap@globex.example",
            "address_lines": ["Globex Corporation", "500 Snapshot Road", "Cypress, CA 90630"],
            "tax_id": "US-123",
        },
        merchant_details={
            "name": "Northwind Cloud",
            "address_lines": ["1 Merchant Way", "Seattle, WA 98101"],
            "email": "billing@northwind.example",
            "tax_id": "NW-999",
            "tax_label": "VAT",
        },
    )
    InvoiceLineFactory(
        invoice=invoice,
        kind=InvoiceLineKind.PLAN,
        description="Pro plan",
        quantity=Decimal("3"),
        unit_price=Decimal("400.00"),
        amount=Decimal("1200.00"),
        period_start=datetime.date(2026, 1, 15),
        period_end=datetime.date(2026, 2, 15),
        position=0,
    )
    InvoiceLineFactory(
        invoice=invoice,
        kind=InvoiceLineKind.DISCOUNT,
        description="WELCOME10 (10% off)",
        unit_price=Decimal("-120.00"),
        amount=Decimal("-120.00"),
        position=1,
    )
    note = CreditNoteFactory(customer=customer, number="CN-000007", amount=Decimal("85.20"))
    CreditAllocationFactory(credit_note=note, invoice=invoice, amount=Decimal("85.20"))
    payment = PaymentFactory(
        customer=customer,
        amount=Decimal("500.00"),
        receipt_number="RCPT-000101",
        method_label="Visa •••• 4242",
        received_on=datetime.date(2026, 1, 16),
    )
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("500.00"))
    # Neither a failed payment nor a void credit note counts.
    PaymentAllocationFactory(
        payment=PaymentFactory(customer=customer, failed=True, receipt_number="RCPT-FAILED"),
        invoice=invoice,
        amount=Decimal("100.00"),
    )
    CreditAllocationFactory(
        credit_note=CreditNoteFactory(
            customer=customer, number="CN-VOIDED", status=CreditNoteStatus.VOID
        ),
        invoice=invoice,
        amount=Decimal("5.00"),
    )
    return invoice


def test_invoice_detail_shows_snapshot_lines_totals_credits_payments_and_balance(
    client, customer, settled_invoice
):
    customer.billing_line1 = "999 Moved Street"
    customer.save()
    sign_in(client, customer)

    response = client.get(detail_url(settled_invoice))
    text = response.text

    assert response.status_code == 200
    assert "Invoice INV-000042" in text
    assert "Globex (as invoiced)" in text and "500 Snapshot Road" in text
    assert "999 Moved Street" not in text  # the snapshot, not today's address
    assert "1 Merchant Way" in text and "NW-999" in text
    assert "Pro plan" in text and "WELCOME10 (10% off)" in text
    assert "USD 400.00" in text and "USD 1,200.00" in text and "USD -120.00" in text
    assert "Jan 15, 2026 – Feb 14, 2026" in text  # the period, read inclusive
    assert "−USD 120.00" in text  # discount total
    assert "VAT (19%)" in text and "USD 205.20" in text
    assert "USD 1,285.20" in text  # total
    assert "CN-000007" in text and "−USD 85.20" in text
    assert "RCPT-000101" in text and "Visa •••• 4242" in text and "Jan 16, 2026" in text
    assert "RCPT-FAILED" not in text and "CN-VOIDED" not in text
    balance = re.search(r'data-testid="balance-due">([^<]+)<', text).group(1)
    assert balance == "USD 700.00"
    assert "Partially paid" in text


def test_invoice_detail_buttons_link_to_pdf_print_and_forward(client, customer, settled_invoice):
    sign_in(client, customer)

    text = client.get(detail_url(settled_invoice)).text

    assert f'href="{reverse("portal:invoice_pdf", args=[settled_invoice.public_id])}"' in text
    assert f'href="{reverse("portal:invoice_print", args=[settled_invoice.public_id])}"' in text
    assert f'href="{reverse("portal:invoice_forward", args=[settled_invoice.public_id])}"' in text


@pytest.mark.urls(__name__)
def test_invoice_detail_pay_button_for_payer_with_balance(client, customer, settled_invoice):
    sign_in(client, customer, payer=True)

    text = client.get(detail_url(settled_invoice)).text

    assert f'href="/portal/invoices/{settled_invoice.public_id}/pay/"' in text
    assert "Pay USD 700.00" in text


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("case", ["viewer", "paid", "void", "payments_off"])
def test_invoice_detail_pay_button_hidden_when_not_payable(client, customer, case):
    invoice = InvoiceFactory(customer=customer, paid=case == "paid", void=case == "void")
    sign_in(client, customer, payer=case != "viewer")
    if case == "payments_off":
        set_preferences(allow_payments=False)

    text = client.get(detail_url(invoice)).text

    assert "/pay/" not in text


def test_invoice_detail_forward_button_hidden_when_forwarding_off(client, customer):
    invoice = InvoiceFactory(customer=customer)
    sign_in(client, customer)
    set_preferences(allow_document_forward=False)

    text = client.get(detail_url(invoice)).text

    assert "/forward/" not in text and "Download PDF" in text


def test_invoice_detail_void_invoice_owes_nothing(client, customer):
    invoice = InvoiceFactory(customer=customer, void=True)
    sign_in(client, customer)

    text = client.get(detail_url(invoice)).text

    assert re.search(r'data-testid="balance-due">USD 0.00<', text)
    assert "Void" in text


ID_URLS = ["portal:invoice_detail", "portal:invoice_pdf", "portal:invoice_print"]


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_other_customers_invoice_is_404(client, customer, name):
    foreign = InvoiceFactory(number="FOREIGN-1")
    sign_in(client, customer)

    response = client.get(reverse(name, args=[foreign.public_id]))

    assert response.status_code == 404
    assert b"FOREIGN-1" not in response.content


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_draft_is_404(client, customer, name):
    draft = InvoiceFactory(customer=customer, draft=True)
    sign_in(client, customer)

    assert client.get(reverse(name, args=[draft.public_id])).status_code == 404


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_unknown_id_is_404(client, customer, name):
    sign_in(client, customer)

    assert (
        client.get(reverse(name, args=["00000000-0000-4000-8000-000000000000"])).status_code == 404
    )


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_parent_sees_visible_branch_not_hidden_branch(client, family, name):
    sign_in(client, family.parent)

    assert client.get(reverse(name, args=[family.invoices["berlin"].public_id])).status_code == 200
    assert client.get(reverse(name, args=[family.invoices["hidden"].public_id])).status_code == 404


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_branch_cannot_see_parents_invoice(client, family, name):
    sign_in(client, family.berlin)

    assert client.get(reverse(name, args=[family.invoices["parent"].public_id])).status_code == 404


@pytest.mark.parametrize("name", ID_URLS)
def test_invoice_urls_module_switched_off_is_404(client, customer, name):
    invoice = InvoiceFactory(customer=customer)
    sign_in(client, customer)
    set_preferences(show_invoices=False)

    assert client.get(reverse(name, args=[invoice.public_id])).status_code == 404


@pytest.mark.parametrize("name", ["portal:invoices", *ID_URLS])
def test_invoice_urls_signed_out_redirects_to_login(client, customer, name):
    invoice = InvoiceFactory(customer=customer)
    args = [] if name == "portal:invoices" else [invoice.public_id]

    response = client.get(reverse(name, args=args))

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_invoice_detail_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    one = InvoiceFactory(customer=small)
    bulk_invoices(large, 500)
    target = InvoiceFactory(customer=large, subscription=SubscriptionFactory(customer=large))
    for n in range(5):
        InvoiceLineFactory(invoice=target, description=f"Extra {n}", position=n + 1)
        PaymentAllocationFactory(
            payment=PaymentFactory(customer=large), invoice=target, amount=Decimal("1.00")
        )
        CreditAllocationFactory(
            credit_note=CreditNoteFactory(customer=large), invoice=target, amount=Decimal("1.00")
        )

    sign_in(client, small)
    few = count_queries(client, detail_url(one))
    client.logout()
    sign_in(client, large)
    many = count_queries(client, detail_url(target))

    assert few == many
    assert many <= 10


def test_invoice_line_bulk_rows_do_not_change_query_count(client, customer):
    invoice = InvoiceFactory(customer=customer)
    sign_in(client, customer)
    before = count_queries(client, detail_url(invoice))
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            kind=InvoiceLineKind.USAGE,
            description=f"Usage {n}",
            quantity=Decimal("1"),
            unit_price=Decimal("0.0125"),
            amount=Decimal("0.01"),
            position=n + 1,
        )
        for n in range(200)
    )

    after = count_queries(client, detail_url(invoice))
    text = client.get(detail_url(invoice)).text

    assert before == after
    assert "USD 0.0125" in text  # a metered unit price keeps its four places


def test_invoice_pages_have_no_inline_script_style_or_handlers(client, customer, settled_invoice):
    sign_in(client, customer)
    pages = [
        client.get(LIST_URL).text,
        client.get(detail_url(settled_invoice)).text,
        client.get(reverse("portal:invoice_print", args=[settled_invoice.public_id])).text,
        client.get(reverse("portal:invoice_forward", args=[settled_invoice.public_id])).text,
    ]

    for text in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text)
        assert not re.search(r"<style", text)
        assert not re.search(r"\sstyle=", text)
        assert not re.search(r"\son[a-z]+=", text)


def test_invoice_list_payment_statuses_pending_does_not_count(client, customer):
    invoice = InvoiceFactory(customer=customer, number="PENDING-1")
    PaymentAllocationFactory(
        payment=PaymentFactory(
            customer=customer, status=PaymentStatus.PENDING, receipt_number=None
        ),
        invoice=invoice,
    )
    sign_in(client, customer)

    response = client.get(LIST_URL, {"status": "partially_paid"})

    assert listed_numbers(response) == []
