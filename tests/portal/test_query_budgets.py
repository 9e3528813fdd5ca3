"""Query budgets: every portal page answers in at most 10 SQL queries, whatever the data.

Every GET page of the portal (walked from the URLconf, so new pages are included without being
listed) is requested by a portal admin whose session passed MFA, once to warm up and once under
CaptureQueriesContext: for a customer with 1 invoice and for one with 5,000 invoices, the
count must be the same and within the budget. Lists are also asked for a filter and for their
oldest page, the statement for this year.
"""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.clock import billing_today
from billing.enums import InvoiceKind, InvoiceLineKind, InvoiceStatus, PaymentStatus
from billing.models import Invoice, InvoiceLine, Payment, PaymentAllocation
from portal.views.invoices import _cursor as invoice_cursor
from tests.factories import ContactPersonFactory, CustomerFactory
from tests.helpers import login_verified
from tests.portal.payments_support import reauthenticate
from tests.portal.portal_sweep import objects_of, portal_routes, preferences_everything_on

pytestmark = pytest.mark.django_db

BUDGET = 10
# The ?preview=1 requests run a money-moving service in dry-run mode (the same code as the real
# action, DESIGN rule 5): they get their own budget, and must still not grow with the data.
PREVIEW_BUDGET = 20
HISTORY = 5_000  # invoices of the big customer
OPEN = 10  # of them still open; the rest paid in payments of PER_PAYMENT invoices each
PER_PAYMENT = 50

# Extra query strings asked of some pages, besides the bare URL.
# The subscription summaries load their figures (the service's dry run) with a second GET,
# ?preview=1: htmx asks for it as the page loads, and it is the page without script.
PREVIEWED = ("convert", "resume", "keep", "reactivate", "recover")
VARIANTS = {
    "portal:invoices": ["?status=overdue", "?status=paid"],
    "portal:payments": ["?status=succeeded"],
    "portal:statement": ["?period=this_year"],
    **{f"portal:subscription_{name}": ["?preview=1"] for name in PREVIEWED},
}


def _bulk_history(customer, today: datetime.date, count: int) -> None:
    """``count`` finalized invoices, one a day back from yesterday, with a line each; all but
    the newest OPEN are paid by succeeded payments allocated over PER_PAYMENT invoices."""
    amount = Decimal("100.00")
    invoices = Invoice.objects.bulk_create(
        Invoice(
            customer=customer,
            kind=InvoiceKind.ONE_TIME,
            status=InvoiceStatus.OPEN if n < OPEN else InvoiceStatus.PAID,
            number=f"BIG-{customer.pk}-{n:06d}",
            currency="USD",
            issue_date=today - datetime.timedelta(days=n + 1),
            due_date=today - datetime.timedelta(days=n + 1) + datetime.timedelta(days=14),
            subtotal=amount,
            total=amount,
        )
        for n in range(count)
    )
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            kind=InvoiceLineKind.ONE_TIME,
            description="Professional services",
            unit_price=amount,
            amount=amount,
        )
        for invoice in invoices
    )
    paid = [i for i in invoices if i.status == InvoiceStatus.PAID]
    batches = [paid[n : n + PER_PAYMENT] for n in range(0, len(paid), PER_PAYMENT)]
    payments = Payment.objects.bulk_create(
        Payment(
            customer=customer,
            amount=amount * len(batch),
            currency="USD",
            status=PaymentStatus.SUCCEEDED,
            gateway="sandbox",
            idempotency_key=uuid.uuid4().hex,
            receipt_number=f"BIG-RCPT-{customer.pk}-{n:05d}",
            received_on=batch[0].issue_date,
        )
        for n, batch in enumerate(batches)
    )
    PaymentAllocation.objects.bulk_create(
        PaymentAllocation(payment=payment, invoice=invoice, amount=amount)
        for payment, batch in zip(payments, batches, strict=True)
        for invoice in batch
    )


def _signed_in_admin(client, customer):
    contact = ContactPersonFactory(customer=customer, admin=True, with_login=True)
    login_verified(client, contact.user)
    reauthenticate(client)  # the card pages would otherwise redirect to the password step
    return contact


def _count(client, url: str) -> tuple[int | None, list[str]]:
    """Queries of the second GET; None for an action that takes only POST."""
    warm = client.get(url)
    if warm.status_code == 405:
        return None, []
    assert warm.status_code == 200, f"{url}: {warm.status_code}"
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return len(captured.captured_queries), [q["sql"] for q in captured.captured_queries]


def _pages(objects) -> list[tuple[str, str]]:
    """(label, URL) of every portal GET page for one customer's objects."""
    pages = []
    for route in portal_routes():
        url = route.url(objects)
        pages.append((route.name, url))
        pages.extend((f"{route.name}{q}", f"{url}{q}") for q in VARIANTS.get(route.name, ()))
    return pages


@pytest.fixture
def customers(organization):
    preferences_everything_on()
    today = billing_today()
    small, big = CustomerFactory(display_name="Small"), CustomerFactory(display_name="Big")
    small_objects = objects_of(small, today=today)
    big_objects = objects_of(big, today=today)
    _bulk_history(big, today, HISTORY - 1)
    return (small, small_objects), (big, big_objects)


def test_every_portal_page_stays_within_budget_and_constant_in_history(client, customers):
    (small, small_objects), (big, big_objects) = customers
    assert Invoice.objects.filter(customer=small).count() == 1
    assert Invoice.objects.filter(customer=big).count() == HISTORY
    oldest_page = Invoice.objects.filter(customer=big).order_by("issue_date", "id")[5]

    counts: dict[str, list[int]] = {}
    samples: dict[str, list[str]] = {}
    post_only: set[str] = set()
    for customer, objects in ((small, small_objects), (big, big_objects)):
        client.logout()
        _signed_in_admin(client, customer)
        pages = _pages(objects)
        if customer is big:  # the oldest page of the list, through a real cursor
            cursor = invoice_cursor(oldest_page)
            pages.append(("portal:invoices (oldest page)", f"/portal/invoices/?older={cursor}"))
        for label, url in pages:
            count, sql = _count(client, url)
            if count is None:
                post_only.add(label)
                continue
            counts.setdefault(label, []).append(count)
            samples[label] = sql

    report = "\n".join(f"  {label}: {' / '.join(map(str, n))}" for label, n in counts.items())
    print(f"\nqueries per page (1 invoice / {HISTORY} invoices):\n{report}")
    print(f"  POST only (no page): {', '.join(sorted(post_only))}")
    # The oldest page has no small-customer twin: it must match the first page.
    counts["portal:invoices (oldest page)"].insert(0, counts["portal:invoices"][0])
    growing = {label: n for label, n in counts.items() if len(set(n)) != 1}
    assert not growing, f"query count depends on the amount of data: {growing}"
    over = {
        label: n
        for label, n in counts.items()
        if max(n) > (PREVIEW_BUDGET if label.endswith("?preview=1") else BUDGET)
    }
    assert not over, f"over the budget of {BUDGET}: {over}\n" + "\n".join(
        f"{label}:\n    " + "\n    ".join(sql[:160] for sql in samples[label]) for label in over
    )
