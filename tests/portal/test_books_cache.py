"""Portal pages cached until the customer's books change (billing.books_cache).

The suite runs with BOOKS_CACHE_VERIFY on, which recomputes every hit; these tests turn it off
where they check what a customer really gets served, so a missed invalidation shows here as
a stale page.
"""

import datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.books_cache import StaleBooksCache, books_cached
from billing.clock import billing_today
from billing.enums import InvoiceStatus
from billing.models import Invoice, Payment
from billing.services.invoices import invoice_void
from tests.factories import (
    CustomerFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
)
from tests.helpers import login_verified
from tests.jobs.conftest import billing_run, new_subscription, noon
from tests.portal.payments_support import (
    hidden_value,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("portal:dashboard")
INVOICES = reverse("portal:invoices")
STATEMENT = reverse("portal:statement") + "?period=this_year"
PAGES = (DASHBOARD, INVOICES, STATEMENT)
UNREACHABLE = {  # a Redis nobody listens for
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
    }
}


@pytest.fixture
def served(settings):
    """What a customer is served: cache hits are not recomputed."""
    settings.BOOKS_CACHE_VERIFY = False
    settings.BOOKS_CACHE_SECONDS = 300


@pytest.fixture
def payer(client, organization, served):
    return sign_in(client)


def outstanding(client) -> str:
    text = text_of(client.get(DASHBOARD))
    return text.split("Outstanding", 1)[1].split("Overdue", 1)[0].strip()


def invoice_queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in captured.captured_queries if "billing_invoice" in q["sql"]]


def test_second_view_reads_no_invoice_rows(client, payer):
    InvoiceFactory.create_batch(3, customer=payer.customer)
    for url in PAGES:
        assert invoice_queries(client, url), url  # computed once
        assert invoice_queries(client, url) == [], url  # then served as cached


def test_paying_in_the_portal_shows_on_every_page_at_once(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, number="INV-0007", subtotal=Decimal("80"))
    card = saved_card(payer.customer)
    assert outstanding(client) == "USD 80.00"
    assert "Overdue" in text_of(client.get(INVOICES)).split("Balance due Status", 1)[1]
    assert client.get(STATEMENT).status_code == 200

    url = reverse("portal:invoice_pay", args=[invoice.public_id])
    html = client.get(url).content.decode()
    response = client.post(
        url,
        {
            "idempotency_key": hidden_value(html, "idempotency_key"),
            "summary": hidden_value(html, "summary"),
            "method": str(card.public_id),
        },
    )
    assert response.status_code == 302

    receipt = Payment.objects.get().receipt_number
    assert outstanding(client) == "USD 0.00"
    rows = text_of(client.get(INVOICES)).split("Balance due Status", 1)[1]
    assert "INV-0007" in rows and "Paid" in rows and "Overdue" not in rows
    assert receipt in text_of(client.get(STATEMENT))


def test_renewal_by_the_batch_job_shows_the_new_invoice(client, organization, served, time_machine):
    time_machine.move_to(noon(datetime.date(2027, 3, 10)), tick=False)
    subscription = new_subscription(card=None)
    contact = sign_in(client, subscription.customer)
    before = Invoice.objects.filter(customer=subscription.customer).count()
    moment = noon(datetime.date(2027, 4, 10))
    time_machine.move_to(moment, tick=False)
    client.logout()
    login_verified(client, contact.user)  # a month later: signed in again
    assert text_of(client.get(INVOICES)).count("INV-") == before

    billing_run(moment)

    assert Invoice.objects.filter(customer=subscription.customer).count() == before + 1
    assert text_of(client.get(INVOICES)).count("INV-") == before + 1


def test_staff_edit_outside_a_service_shows_at_once(client, payer):
    InvoiceFactory(customer=payer.customer)
    client.get(DASHBOARD)
    customer = payer.customer
    customer.display_name = "Renamed Ltd"
    customer.save()  # what Django admin does

    assert "Renamed Ltd" in text_of(client.get(DASHBOARD))


def test_branch_invoice_shows_on_the_parents_pages(client, organization, served):
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Berlin", parent=parent)
    sign_in(client, parent)
    assert outstanding(client) == "USD 0.00"

    InvoiceFactory(customer=branch, subtotal=Decimal("25"), number="INV-0099")

    assert outstanding(client) == "USD 25.00"
    assert "INV-0099" in text_of(client.get(INVOICES))


def test_setting_change_shows_at_once(client, payer):
    InvoiceFactory(customer=payer.customer)
    assert "Pay all outstanding" in text_of(client.get(DASHBOARD))

    set_preference(allow_payments=False)

    assert "Pay all outstanding" not in text_of(client.get(DASHBOARD))


def test_an_invoice_falls_overdue_the_next_day_without_any_write(client, payer, time_machine):
    today = billing_today()
    InvoiceFactory(customer=payer.customer, due_date=today, subtotal=Decimal("40"))
    text = text_of(client.get(DASHBOARD))
    assert "Overdue USD 0.00" in text

    time_machine.move_to(noon(today + datetime.timedelta(days=1)), tick=False)
    client.logout()
    login_verified(client, payer.user)  # a day later: signed in again

    assert "Overdue USD 40.00" in text_of(client.get(DASHBOARD))


def test_a_write_nothing_reports_is_caught_when_verifying(client, payer, settings):
    invoice = InvoiceFactory(customer=payer.customer, subtotal=Decimal("80"))
    client.get(DASHBOARD)
    # A raw UPDATE: no service, no event, no signal. Served as cached...
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.VOID)
    assert outstanding(client) == "USD 80.00"

    # ... which the test suite's verifying mode refuses.
    settings.BOOKS_CACHE_VERIFY = True
    with pytest.raises(StaleBooksCache):
        client.get(DASHBOARD)


def test_an_evicted_token_never_brings_back_an_old_entry(client, payer):
    invoice = InvoiceFactory(customer=payer.customer, subtotal=Decimal("80"))
    client.get(DASHBOARD)
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.VOID)
    cache.delete(f"books:{payer.customer.pk}")  # as Redis evicting it

    assert outstanding(client) == "USD 0.00"


def test_unreachable_cache_computes_every_time(settings, organization):
    settings.BOOKS_CACHE_VERIFY = False
    today = billing_today()
    settings.CACHES = UNREACHABLE
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert books_cached([1], "part", (), compute, today=today) == 1
    assert books_cached([1], "part", (), compute, today=today) == 2


def test_no_caching_when_turned_off(client, payer, settings):
    settings.BOOKS_CACHE_SECONDS = 0
    InvoiceFactory(customer=payer.customer)
    client.get(DASHBOARD)
    assert invoice_queries(client, DASHBOARD)


def test_voiding_a_hidden_branchs_invoice_returns_the_parents_money_at_once(
    client, organization, served
):
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Oslo", parent=parent, visible_to_parent=False)
    invoice = InvoiceFactory(customer=branch, subtotal=Decimal("40"))
    payment = PaymentFactory(customer=parent, amount=Decimal("25.00"))
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("10.00"))
    sign_in(client, parent)
    assert "Unused credit USD 15.00" in text_of(client.get(DASHBOARD))

    invoice_void(invoice=invoice)  # the branch's books: the parent's credit comes back

    assert "Unused credit USD 25.00" in text_of(client.get(DASHBOARD))


def test_portal_pages_serve_with_redis_unreachable(client, payer, settings):
    InvoiceFactory(customer=payer.customer, subtotal=Decimal("80"), number="INV-0080")
    settings.CACHES = UNREACHABLE

    assert outstanding(client) == "USD 80.00"
    assert "INV-0080" in text_of(client.get(INVOICES))
    assert client.get(STATEMENT).status_code == 200


def test_renaming_a_parent_shows_on_its_branchs_statement(client, organization, served):
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Berlin", parent=parent)
    invoice = InvoiceFactory(customer=branch, subtotal=Decimal("40"))
    payment = PaymentFactory(customer=parent, amount=Decimal("40.00"))
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("40.00"))
    sign_in(client, branch)
    assert "Paid by Acme Group" in text_of(client.get(STATEMENT))

    parent.display_name = "Acme Holdings"
    parent.save()  # what Django admin does

    assert "Paid by Acme Holdings" in text_of(client.get(STATEMENT))


def test_a_former_parent_sees_its_money_come_back_when_the_invoice_is_voided(
    client, organization, served
):
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Oslo", parent=parent)
    invoice = InvoiceFactory(customer=branch, subtotal=Decimal("40"))
    payment = PaymentFactory(customer=parent, amount=Decimal("25.00"))
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("10.00"))
    branch.parent = None
    branch.save()  # detached in Django admin
    sign_in(client, parent)
    assert "Unused credit USD 15.00" in text_of(client.get(DASHBOARD))

    invoice_void(invoice=invoice)

    assert "Unused credit USD 25.00" in text_of(client.get(DASHBOARD))


def test_detaching_a_branch_shows_on_the_former_parents_pages(client, organization, served):
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Oslo", parent=parent)
    InvoiceFactory(customer=branch, subtotal=Decimal("40"), number="INV-0040")
    sign_in(client, parent)
    assert outstanding(client) == "USD 40.00"

    branch.parent = None
    branch.save()

    assert outstanding(client) == "USD 0.00"
    assert "INV-0040" not in text_of(client.get(INVOICES))


def test_only_canonical_views_are_cached_so_query_strings_cannot_flood_the_cache(client, payer):
    InvoiceFactory.create_batch(3, customer=payer.customer)
    # Ad-hoc views are computed every time: no entry per made-up query string.
    for url in (
        f"{INVOICES}?status=paid",
        f"{INVOICES}?junk=1",
        f"{STATEMENT.split('?')[0]}?period=custom&start=2026-01-01&end=2026-01-31",
        f"{STATEMENT}&junk=1",
        f"{STATEMENT}&page=21",
    ):
        client.get(url)
        assert invoice_queries(client, url), url
    # A preset's dates sent along (the htmx form sends them) share the preset's entry.
    client.get(STATEMENT)
    assert invoice_queries(client, f"{STATEMENT}&start=2020-01-01&end=2020-01-02") == []
