"""The customer portal in a real browser, on the demo data (billing.demo.demo_seed).

Ada (Acme Corp, a parent with the branches Acme Berlin and Acme Paris) signs in with her
password and a TOTP code, filters her invoices, downloads one as a PDF, pays one with a new test
card, pays everything else outstanding for the whole family, and reads her statement of the
year. No sleeps: Playwright waits for what each step should show.
"""

import datetime
import io
import math
import re
from decimal import Decimal

import pyotp
import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from billing.clock import billing_today
from billing.demo import ADA_EMAIL, DEMO_PASSWORD, DEMO_TOTP_SECRET, demo_seed
from billing.enums import InvoiceStatus, PaymentStatus
from billing.models import Customer, Invoice, Organization, Payment
from portal.statements import PAGE_SIZE, statement_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
VISA = "4242 4242 4242 4242"
MONEY = re.compile(r"-?[\d,]+\.\d{2}")


@pytest.fixture
def demo(live_server):
    demo_seed()
    return Customer.objects.get(display_name="Acme Corp")


def sign_in(page, email: str = ADA_EMAIL, customer: str = "Acme Corp") -> None:
    """Password, then a fresh code from the authenticator app (the demo's TOTP secret); lands
    on the dashboard of ``customer``."""
    page.goto("/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url("**/accounts/2fa/")
    page.fill("input[name=code]", pyotp.TOTP(DEMO_TOTP_SECRET).now())
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")
    expect(page.locator("h1")).to_have_text(customer)


def family_invoices(acme: Customer):
    return Invoice.objects.filter(customer__in=[acme, *acme.children.all()])


def overdue_numbers(acme: Customer) -> set[str]:
    today = billing_today()
    rows = family_invoices(acme).filter(status=InvoiceStatus.OPEN, due_date__lt=today)
    return set(rows.values_list("number", flat=True))


def money(text: str) -> Decimal:
    return Decimal(MONEY.search(text)[0].replace(",", ""))


def test_signs_in_with_totp_filters_overdue_invoices_and_downloads_a_pdf(page, demo):
    overdue = overdue_numbers(demo)
    assert len(overdue) == 2  # one of Acme Berlin, one of Acme Paris

    sign_in(page)
    page.click("#sidebar >> text=Invoices")
    page.wait_for_url("**/portal/invoices/")
    page.select_option("select[name=status]", "overdue")  # htmx refreshes the table
    page.wait_for_url(re.compile(r".*/portal/invoices/\?.*status=overdue"))
    rows = page.locator("#invoice-table tbody tr")
    expect(rows).to_have_count(len(overdue))
    expect(rows.locator(".badge")).to_have_text(["Overdue"] * len(overdue))
    assert set(rows.locator("td:first-child a").all_inner_texts()) == overdue
    # A parent sees whose invoice each is.
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {"Acme Berlin", "Acme Paris"}

    number = rows.first.locator("td:first-child a").inner_text()
    rows.first.locator("td:first-child a").click()
    expect(page.locator("h1")).to_contain_text(f"Invoice {number}")
    with page.expect_download() as info:
        page.click("text=Download PDF")
    download = info.value
    assert download.suggested_filename.endswith(".pdf")
    reader = PdfReader(io.BytesIO(download.path().read_bytes()))
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert number in text


def test_pays_one_invoice_with_a_new_card_then_everything_outstanding_as_the_parent(page, demo):
    sign_in(page)
    invoice = family_invoices(demo).filter(status=InvoiceStatus.OPEN).order_by("due_date").first()

    # One invoice, with a new test card typed into the card form.
    page.goto(f"/portal/invoices/{invoice.public_id}/")
    expect(page.locator("h1 .badge")).to_have_text("Overdue")
    page.click("a.btn-primary:has-text('Pay')")
    page.wait_for_url(f"**/portal/invoices/{invoice.public_id}/pay/")
    page.check("input[name=method][value=new]")
    page.fill("input[name=number]", VISA)
    page.fill("input[name=exp]", "12/30")
    page.fill("input[name=cvc]", "123")
    page.fill("input[name=name]", "Ada Lovelace")
    charged = money(page.inner_text("[data-testid=charge-total]"))
    page.click("form button[type=submit]:has-text('Pay')")
    page.wait_for_url(re.compile(r".*/portal/payments/[0-9a-f-]+/$"))
    receipt = page.inner_text("[data-testid=receipt-number]").strip()
    expect(page.locator(".alert-success")).to_contain_text(f"receipt {receipt}")
    assert money(page.inner_text("[data-testid=payment-amount]")) == charged
    payment = Payment.objects.get(receipt_number=receipt)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.method_label.endswith("4242")

    page.click(f"a:has-text('{invoice.number}')")
    expect(page.locator("h1 .badge")).to_have_text("Paid")
    expect(page.locator("[data-testid=balance-due]")).to_have_text("USD 0.00")
    expect(page.locator("table").filter(has_text="Receipt")).to_contain_text(receipt)

    # Everything else the family owes, in one payment with the saved (default) card.
    still_open = family_invoices(demo).filter(status=InvoiceStatus.OPEN)
    assert still_open.exists()
    page.goto("/portal/")
    page.click("a:has-text('Pay all')")
    page.wait_for_url("**/portal/pay-all/")
    summary = page.locator("section[aria-labelledby=summary-title] tbody tr")
    expect(summary).to_have_count(still_open.count())
    customers = set(summary.locator("td:nth-child(2)").all_inner_texts())
    assert customers == set(still_open.values_list("customer__display_name", flat=True))
    assert customers & {"Acme Berlin", "Acme Paris"}
    expect(page.locator("input[name=method]:checked")).not_to_have_value("new")
    total = money(page.inner_text("[data-testid=charge-total]"))
    page.click("form button[type=submit]:has-text('Pay')")
    page.wait_for_url(re.compile(r".*/portal/payments/[0-9a-f-]+/$"))
    expect(page.locator(".alert-success")).to_contain_text("Payment received")
    assert money(page.inner_text("[data-testid=payment-amount]")) == total
    assert not family_invoices(demo).filter(status=InvoiceStatus.OPEN).exists()

    page.goto("/portal/invoices/?status=open")
    expect(page.locator("#invoice-table tbody")).to_contain_text("No invoices match")


def test_statement_of_this_year_shows_opening_and_closing_balances(page, demo):
    organization = Organization.load()
    today = billing_today()
    start = datetime.date(today.year, 1, 1)
    expected = statement_for(
        customers=[(demo.pk, demo.display_name)],
        start=start,
        end=today,
        currency="USD",
        zone=organization.zone,
    )
    sign_in(page)
    page.click("#sidebar >> text=Statement")
    page.wait_for_url("**/portal/statement/")
    page.click("button[name=period][value=this_year]")
    page.wait_for_url(re.compile(r".*period=this_year"))
    expect(page.locator("#statement-title")).to_contain_text(
        f"{start:%b} {start.day}, {start.year}"
    )
    assert money(page.inner_text("[data-testid=opening]")) == expected.opening
    assert money(page.inner_text("[data-testid=closing]")) == expected.closing
    # A page of lines between the opening (or brought forward) and closing (or carried forward)
    # balances; the last page closes at the closing balance.
    shown = min(len(expected.lines), PAGE_SIZE)
    expect(page.locator(".statement-table tbody tr")).to_have_count(shown + 2)
    if expected.lines:
        assert money(page.inner_text("[data-testid=page-opening]")) == expected.opening
    if len(expected.lines) > PAGE_SIZE:
        last = statement_for(
            customers=[(demo.pk, demo.display_name)],
            start=start,
            end=today,
            currency="USD",
            zone=organization.zone,
            page=math.ceil(len(expected.lines) / PAGE_SIZE),
            page_size=PAGE_SIZE,
        )
        page.click("nav[aria-label='Statement pages'] >> text=Last")  # htmx swaps the body
        expect(page.locator("[data-testid=closing-row]")).to_be_visible()
        assert money(page.inner_text("[data-testid=page-opening]")) == last.page_opening
        expect(page.locator(".statement-table tbody tr")).to_have_count(len(last.lines) + 2)
    assert money(page.inner_text("[data-testid=closing-row]")) == expected.closing

    # The family consolidated: the branches' open invoices are in the closing balance.
    page.check("input[name=include_branches]")
    page.click("button[name=period][value=this_year]")
    expect(page.locator("#statement-title")).to_contain_text("Acme Corp and branches")
    family = statement_for(
        customers=[(c.pk, c.display_name) for c in [demo, *demo.children.order_by("pk")]],
        start=start,
        end=today,
        currency="USD",
        zone=organization.zone,
    )
    assert money(page.inner_text("[data-testid=closing]")) == family.closing
    assert family.closing > expected.closing  # the branches owe what Acme itself does not
