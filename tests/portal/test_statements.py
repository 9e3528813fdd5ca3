"""The statement of account: the ledger it builds, and the page, print view and PDF a
customer's accountant reads."""

import datetime
import html
import io
import math
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.books_cache import books_changed
from billing.clock import billing_today
from billing.enums import InvoiceStatus, PaymentStatus, RefundStatus
from billing.models import CreditAllocation, Invoice, Organization, Payment, PaymentAllocation
from billing.models import Refund as RefundModel
from billing.money import ZERO
from billing.selectors import (
    customer_balance,
    customer_credit_balance,
    invoices_with_amounts,
    payments_with_unapplied,
)
from portal.models import PortalPreferences
from portal.statements import (
    PAGE_SIZE,
    Movement,
    MovementKind,
    OpenItem,
    ageing_bucket,
    ageing_of,
    opening_balance,
    period_range,
    statement_build,
    statement_for,
)
from tests.factories import (
    ContactPersonFactory,
    CreditNoteFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
    RefundFactory,
)
from tests.helpers import login_verified

NOW = datetime.datetime(2026, 3, 20, 12, 0, tzinfo=datetime.UTC)
TODAY = NOW.date()
URL = reverse("portal:statement")
PRINT_URL = reverse("portal:statement_print")
PDF_URL = reverse("portal:statement_pdf")
D = Decimal


def day(month: int, dom: int, year: int = 2026) -> datetime.date:
    return datetime.date(year, month, dom)


def noon(date: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(date, datetime.time(12), tzinfo=datetime.UTC)


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
    """Queries of one request, after a warm-up request has filled the caches."""
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def rows(response) -> list[list[str]]:
    """The movement table's body rows as lists of cell texts (tags stripped)."""
    table = re.search(
        r'<table class="table[^"]*statement-table">(.*?)</table>', response.text, re.S
    )
    assert table, "no statement table on the page"
    body = table.group(1).split("<tbody>")[1]
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def field_error(response, field: str) -> str:
    match = re.search(rf'id="id_{field}-errors">([^<]*)<', response.text)
    return match.group(1) if match else ""


def set_created(model, pk, moment) -> None:
    model.objects.filter(pk=pk).update(created_at=moment)


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-10, "current"),
        (0, "current"),
        (1, "days_1_30"),
        (30, "days_1_30"),
        (31, "days_31_60"),
        (60, "days_31_60"),
        (61, "days_61_90"),
        (90, "days_61_90"),
        (91, "over_90"),
        (400, "over_90"),
    ],
)
def test_ageing_bucket_boundaries_days_past_due_lands_in_its_bucket(days, bucket):
    assert ageing_bucket(days) == bucket


@pytest.mark.parametrize(
    ("period", "today", "expected"),
    [
        ("this_month", day(3, 20), (day(3, 1), day(3, 20))),
        ("this_year", day(3, 20), (day(1, 1), day(3, 20))),
        ("last_quarter", day(3, 20), (day(10, 1, 2025), day(12, 31, 2025))),
        ("last_quarter", day(4, 1), (day(1, 1), day(3, 31))),
        ("last_quarter", day(12, 31), (day(7, 1), day(9, 30))),
    ],
)
def test_period_range_presets_give_calendar_ranges_ending_by_today(period, today, expected):
    assert period_range(period, today) == expected


def test_statement_build_unsorted_movements_runs_balance_in_date_order():
    def movement(kind, when, amount, row):
        return Movement(when, kind, f"R{row}", "", D(amount), 1, row)

    statement = statement_build(
        start=day(1, 1),
        end=day(1, 31),
        currency="USD",
        opening=D("50.00"),
        movements=[
            movement(MovementKind.PAYMENT, day(1, 10), "30.00", 1),
            movement(MovementKind.INVOICE, day(1, 10), "100.00", 2),
            movement(MovementKind.REFUND, day(1, 20), "5.00", 3),
            movement(MovementKind.CREDIT_NOTE, day(1, 5), "20.00", 4),
            movement(MovementKind.VOID, day(1, 25), "100.00", 2),
        ],
        open_items=[OpenItem(day(2, 5), D("70.00")), OpenItem(day(12, 1, 2025), D("9.00"))],
    )

    assert [line.movement.reference for line in statement.lines] == ["R4", "R2", "R1", "R3", "R2"]
    assert [line.balance for line in statement.lines] == [
        D("30.00"),
        D("130.00"),
        D("100.00"),
        D("105.00"),
        D("5.00"),
    ]
    assert statement.closing == D("5.00")
    assert statement.charges == D("105.00") and statement.credits == D("150.00")
    assert statement.ageing.current == D("70.00") and statement.ageing.days_61_90 == D("9.00")


def test_ageing_of_settled_items_ignores_zero_and_negative_balances():
    ageing = ageing_of([OpenItem(day(1, 1), ZERO), OpenItem(day(1, 1), D("-3.00"))], day(3, 1))
    assert ageing.total == ZERO


# ----------------------------------------------------------------------------- property

amounts = st.decimals(min_value=D("0.01"), max_value=D("900.00"), places=2)
offsets = st.integers(min_value=0, max_value=400)
picks = st.integers(min_value=0, max_value=30)
# Each operation: (kind, days before today, who: index into the family, arguments...).
who = st.integers(min_value=0, max_value=1)
operations = st.one_of(
    st.tuples(st.just("invoice"), offsets, who, amounts, st.integers(min_value=0, max_value=60)),
    st.tuples(st.just("payment"), offsets, who, amounts, st.booleans()),
    st.tuples(st.just("credit_note"), offsets, who, amounts, st.booleans()),
    st.tuples(st.just("void"), offsets, who, picks),
    st.tuples(st.just("refund"), offsets, who, amounts, picks),
)


def _apply(payer, family, kind: str, source, left: Decimal, when: datetime.date) -> None:
    """Apply a payment or credit note to open invoices oldest first, dated ``when`` (as the
    services would, on the day it happened): the payer's own, and a parent's also its
    branches' (a parent paying for its branch)."""
    payable = [c.pk for c in family if c.pk == payer.pk or c.parent_id == payer.pk]
    open_invoices = invoices_with_amounts(
        Invoice.objects.filter(
            customer__in=payable, status=InvoiceStatus.OPEN, issue_date__lte=when
        )
    ).order_by("issue_date", "id")
    for invoice in open_invoices:
        if left <= 0:
            break
        share = min(left, invoice.balance_due)
        if share <= 0:
            continue
        if kind == "payment":
            allocation = PaymentAllocation.objects.create(
                payment=source, invoice=invoice, amount=share
            )
            set_created(PaymentAllocation, allocation.pk, noon(when))
        else:
            allocation = CreditAllocation.objects.create(
                credit_note=source, invoice=invoice, amount=share
            )
            set_created(CreditAllocation, allocation.pk, noon(when))
        left -= share
        if share == invoice.balance_due:
            Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.PAID)


def build_history(family: list, history, today: datetime.date) -> None:
    """Replay random operations in date order, keeping every row consistent."""
    for kind, offset, index, *args in sorted(history, key=lambda op: -op[1]):
        when = today - datetime.timedelta(days=offset)
        customer = family[index % len(family)]
        if kind == "invoice":
            amount, terms = args
            InvoiceFactory(
                customer=customer,
                issue_date=when,
                due_date=when + datetime.timedelta(days=terms),
                subtotal=amount,
            )
        elif kind == "payment":
            amount, apply = args
            payment = PaymentFactory(customer=customer, amount=amount, received_on=when)
            if apply:
                _apply(customer, family, "payment", payment, amount, when)
        elif kind == "credit_note":
            amount, apply = args
            note = CreditNoteFactory(customer=customer, amount=amount, issue_date=when)
            if apply:
                _apply(customer, family, "credit_note", note, amount, when)
        elif kind == "void":
            candidates = list(
                Invoice.objects.filter(
                    customer=customer, status=InvoiceStatus.OPEN, issue_date__lte=when
                ).order_by("pk")
            )
            if candidates:
                target = candidates[args[0] % len(candidates)]
                Invoice.objects.filter(pk=target.pk).update(
                    status=InvoiceStatus.VOID, voided_at=noon(when)
                )
        elif kind == "refund":
            amount, pick = args
            payments = list(
                payments_with_unapplied(
                    Payment.objects.filter(
                        customer=customer,
                        status=PaymentStatus.SUCCEEDED,
                        received_on__lte=when,
                    )
                )
                .filter(unapplied__gt=0)
                .order_by("pk")
            )
            if payments:
                payment = payments[pick % len(payments)]
                refund = RefundFactory(
                    payment=payment,
                    amount=min(amount, payment.unapplied),
                    status=RefundStatus.SUCCEEDED,
                )
                set_created(RefundModel, refund.pk, noon(when))


def open_balance_of(customer) -> Decimal:
    return sum(
        (
            invoice.balance_due
            for invoice in invoices_with_amounts(
                Invoice.objects.filter(customer=customer, status=InvoiceStatus.OPEN)
            )
        ),
        ZERO,
    )


def assert_adds_up(statement) -> None:
    """opening + Σ movements = closing, each running balance follows from the one before,
    lines in date order inside the range, and the ageing buckets add up to their total."""
    assert statement.opening + sum((line.amount for line in statement.lines), ZERO) == (
        statement.closing
    )
    running = statement.opening
    for line in statement.lines:
        running += line.amount
        assert line.balance == running
        assert statement.start <= line.movement.day <= statement.end
    days = [line.movement.day for line in statement.lines]
    assert days == sorted(days)
    assert sum((amount for _label, amount in statement.ageing.buckets), ZERO) == (
        statement.ageing.total
    )


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(operations, max_size=14),
    first=st.integers(min_value=0, max_value=450),
    second=st.integers(min_value=0, max_value=450),
)
def test_statement_random_history_adds_up_and_agrees_with_customer_balance(
    organization, history, first, second
):
    today = billing_today()
    zone = Organization.load().zone
    customer = CustomerFactory()
    build_history([customer], history, today)
    ids = [(customer.pk, customer.display_name)]
    start = today - datetime.timedelta(days=max(first, second))
    end = today - datetime.timedelta(days=min(first, second))

    statement = statement_for(customers=ids, start=start, end=end, currency="USD", zone=zone)

    assert_adds_up(statement)
    # The closing balance is the next day's opening balance.
    assert statement.closing == opening_balance(
        [customer.pk], end + datetime.timedelta(days=1), zone
    )
    # From before the first movement up to today: the whole history.
    whole = statement_for(
        customers=ids,
        start=today - datetime.timedelta(days=500),
        end=today,
        currency="USD",
        zone=zone,
    )
    assert_adds_up(whole)
    assert whole.opening == ZERO
    assert whole.closing == customer_balance(customer)
    assert whole.ageing.total == open_balance_of(customer)
    assert whole.closing == whole.ageing.total - customer_credit_balance(customer)


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(operations, max_size=16),
    first=st.integers(min_value=0, max_value=450),
    second=st.integers(min_value=0, max_value=450),
)
def test_statement_random_family_history_each_ledger_and_consolidated_agree(
    organization, history, first, second
):
    """A parent paying and crediting its branch: each customer's own statement closes at its
    open invoices less its unused credit; the consolidated one at the family's balance."""
    today = billing_today()
    zone = Organization.load().zone
    parent = CustomerFactory()
    branch = CustomerFactory(parent=parent)
    build_history([parent, branch], history, today)
    since = today - datetime.timedelta(days=500)
    start = today - datetime.timedelta(days=max(first, second))
    end = today - datetime.timedelta(days=min(first, second))
    family = [(parent.pk, "parent"), (branch.pk, "branch")]

    for customers in ([family[0]], [family[1]], family):
        ranged = statement_for(customers=customers, start=start, end=end, currency="USD", zone=zone)
        whole = statement_for(
            customers=customers, start=since, end=today, currency="USD", zone=zone
        )
        assert_adds_up(ranged)
        assert_adds_up(whole)
        ids = [pk for pk, _name in customers]
        assert ranged.closing == opening_balance(ids, end + datetime.timedelta(days=1), zone)
        assert whole.opening == ZERO
    for customer, name in ((parent, "parent"), (branch, "branch")):
        own = statement_for(
            customers=[(customer.pk, name)], start=since, end=today, currency="USD", zone=zone
        )
        assert own.closing == open_balance_of(customer) - customer_credit_balance(customer)
    consolidated = statement_for(
        customers=family, start=since, end=today, currency="USD", zone=zone
    )
    assert consolidated.closing == customer_balance(parent) + customer_balance(branch)
    assert consolidated.ageing.total == open_balance_of(parent) + open_balance_of(branch)


def assert_pages_continue(customers, start, end, zone, page_size: int) -> None:
    """Every page of the statement, read ``page_size`` lines at a time, joins up with the whole:
    the same lines with the same running balances, each page opening at the balance the page
    before it carried forward, the same totals on every page."""
    whole = statement_for(customers=customers, start=start, end=end, currency="USD", zone=zone)
    pages = []
    carried = whole.opening
    page = 1
    while True:
        part = statement_for(
            customers=customers,
            start=start,
            end=end,
            currency="USD",
            zone=zone,
            page=page,
            page_size=page_size,
        )
        assert part.page == page and part.line_count == len(whole.lines)
        assert (part.opening, part.closing) == (whole.opening, whole.closing)
        assert (part.charges, part.credits) == (whole.charges, whole.credits)
        assert part.ageing == whole.ageing
        assert part.page_opening == carried
        assert len(part.lines) <= page_size
        running = part.page_opening
        for line in part.lines:
            running += line.amount
            assert line.balance == running
        assert part.page_closing == running
        carried = part.page_closing
        pages.extend(part.lines)
        if part.last_page:
            break
        page += 1
    assert page == max(math.ceil(len(whole.lines) / page_size), 1)
    assert [(line.movement, line.balance) for line in pages] == [
        (line.movement, line.balance) for line in whole.lines
    ]
    assert carried == whole.closing
    # A page past the last shows the last.
    beyond = statement_for(
        customers=customers,
        start=start,
        end=end,
        currency="USD",
        zone=zone,
        page=page + 3,
        page_size=page_size,
    )
    assert beyond.page == page and beyond.page_closing == whole.closing


@pytest.mark.django_db
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(operations, min_size=1, max_size=16),
    first=st.integers(min_value=0, max_value=450),
    page_size=st.integers(min_value=1, max_value=4),
)
def test_statement_pages_random_family_history_carry_balances_across_pages(
    organization, history, first, page_size
):
    """Paged, each ledger (the parent's with money crossing to its branch, the branch's, the
    consolidated one) shows on page n what the whole statement shows on those lines."""
    today = billing_today()
    zone = Organization.load().zone
    parent = CustomerFactory()
    branch = CustomerFactory(parent=parent)
    build_history([parent, branch], history, today)
    start = today - datetime.timedelta(days=first)
    family = [(parent.pk, "parent"), (branch.pk, "branch")]

    for customers in ([family[0]], [family[1]], family):
        assert_pages_continue(customers, start, today, zone, page_size)


# ----------------------------------------------------------------------------- ledger facts


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization, clock):
    return CustomerFactory(display_name="Globex", company_name="Globex Corporation")


@pytest.fixture
def history(customer):
    """Before March: 300 invoiced, 100 paid → opening 200. In March: the rest."""
    old = InvoiceFactory(
        customer=customer, number="INV-OLD", issue_date=day(1, 10), subtotal=D("300.00")
    )
    paid = PaymentFactory(
        customer=customer, receipt_number="RCPT-OLD", amount=D("100.00"), received_on=day(2, 1)
    )
    PaymentAllocationFactory(payment=paid, invoice=old, amount=D("100.00"))
    march = InvoiceFactory(
        customer=customer, number="INV-MAR", issue_date=day(3, 2), subtotal=D("80.00")
    )
    voided = InvoiceFactory(
        customer=customer,
        number="INV-VOID",
        issue_date=day(2, 20),
        subtotal=D("40.00"),
        status=InvoiceStatus.VOID,
        voided_at=noon(day(3, 5)),
    )
    CreditNoteFactory(customer=customer, number="CN-1", amount=D("25.00"), issue_date=day(3, 8))
    over = PaymentFactory(
        customer=customer, receipt_number="RCPT-MAR", amount=D("60.00"), received_on=day(3, 10)
    )
    refund = RefundFactory(payment=over, amount=D("15.00"), status=RefundStatus.SUCCEEDED)
    set_created(RefundModel, refund.pk, noon(day(3, 12)))
    InvoiceFactory(customer=customer, draft=True, subtotal=D("777.00"))
    PaymentFactory(customer=customer, failed=True, amount=D("999.00"), received_on=day(3, 11))
    return {"old": old, "march": march, "voided": voided}


@pytest.mark.django_db
def test_statement_this_month_shows_opening_movements_and_running_balance(
    client, history, customer
):
    sign_in(client, customer)

    response = client.get(URL)

    assert response.status_code == 200
    # Opening: 300 + 40 (void invoice, issued in Feb) − 100 = 240 at the end of Feb 28.
    assert re.search(r'data-testid="opening">USD 240.00<', response.text)
    assert "at the end of Feb 28, 2026" in response.text
    assert rows(response) == [
        ["Feb 28, 2026", "", "Opening balance", "", "240.00"],
        ["Mar 2, 2026", "INV-MAR", "Invoice · One-time charge", "80.00", "320.00"],
        ["Mar 5, 2026", "INV-VOID", "Invoice voided", "-40.00", "280.00"],
        ["Mar 8, 2026", "CN-1", "Credit note · Goodwill", "-25.00", "255.00"],
        ["Mar 10, 2026", "RCPT-MAR", "Payment received · Card", "-60.00", "195.00"],
        ["Mar 12, 2026", "RCPT-MAR", "Refund", "15.00", "210.00"],
        ["Mar 20, 2026", "", "Closing balance", "", "210.00"],
    ]
    assert re.search(r'data-testid="closing">USD 210.00<', response.text)
    assert "777.00" not in response.text and "999.00" not in response.text
    # It agrees with the balance the merchant sees.
    assert customer_balance(customer) == D("210.00")


@pytest.mark.django_db
def test_statement_ageing_buckets_open_invoices_by_days_past_due_at_end(client, customer):
    # Due dates relative to the end date Mar 20: not due, 10, 45, 75 and 120 days late.
    for due, amount in [
        (day(3, 25), "1.00"),
        (day(3, 10), "2.00"),
        (day(2, 3), "4.00"),
        (day(1, 4), "8.00"),
        (day(11, 20, 2025), "16.00"),
    ]:
        InvoiceFactory(
            customer=customer,
            issue_date=min(due, day(3, 1)),
            due_date=due,
            subtotal=D(amount),
        )
    paid = InvoiceFactory(customer=customer, issue_date=day(1, 1), subtotal=D("32.00"))
    PaymentAllocationFactory(payment__customer=customer, invoice=paid, amount=D("32.00"))
    sign_in(client, customer)

    response = client.get(URL)

    ageing = re.search(
        r'<table class="table[^"]*statement-ageing">(.*?)</table>', response.text, re.S
    )
    cells = re.findall(r'<td class="amount[^"]*"[^>]*>([^<]+)</td>', ageing.group(1))
    assert cells == ["USD 1.00", "USD 2.00", "USD 4.00", "USD 8.00", "USD 16.00", "USD 31.00"]


@pytest.mark.django_db
def test_statement_past_range_ages_invoices_as_they_stood_at_the_end_date(customer):
    invoice = InvoiceFactory(
        customer=customer, issue_date=day(1, 5), due_date=day(1, 19), subtotal=D("50.00")
    )
    late = PaymentFactory(customer=customer, amount=D("50.00"), received_on=day(3, 3))
    allocation = PaymentAllocationFactory(payment=late, invoice=invoice, amount=D("50.00"))
    set_created(PaymentAllocation, allocation.pk, noon(day(3, 3)))
    zone = Organization.load().zone
    ids = [(customer.pk, customer.display_name)]

    january = statement_for(
        customers=ids, start=day(1, 1), end=day(1, 31), currency="USD", zone=zone
    )
    march = statement_for(customers=ids, start=day(3, 1), end=day(3, 20), currency="USD", zone=zone)

    assert january.closing == D("50.00") and january.ageing.days_1_30 == D("50.00")
    assert march.opening == D("50.00") and march.closing == ZERO and march.ageing.total == ZERO


@pytest.mark.django_db
def test_statement_payment_recorded_late_counts_from_the_day_it_was_received(customer):
    invoice = InvoiceFactory(
        customer=customer, issue_date=day(1, 5), due_date=day(1, 19), subtotal=D("50.00")
    )
    cheque = PaymentFactory(customer=customer, amount=D("50.00"), received_on=day(1, 20))
    # Typed in on Mar 3, for a cheque that arrived on Jan 20.
    allocation = PaymentAllocationFactory(payment=cheque, invoice=invoice, amount=D("50.00"))
    set_created(PaymentAllocation, allocation.pk, noon(day(3, 3)))
    zone = Organization.load().zone
    ids = [(customer.pk, customer.display_name)]

    january = statement_for(
        customers=ids, start=day(1, 1), end=day(1, 31), currency="USD", zone=zone
    )
    mid_january = statement_for(
        customers=ids, start=day(1, 1), end=day(1, 19), currency="USD", zone=zone
    )

    assert january.closing == ZERO and january.ageing.total == ZERO
    assert mid_january.closing == D("50.00") and mid_january.ageing.current == D("50.00")


@pytest.mark.django_db
def test_statement_void_date_is_the_organizations_calendar_day(customer):
    organization = Organization.load()
    organization.time_zone = "America/New_York"
    organization.save()
    # 03:00 UTC on Mar 1 is still Feb 28 in New York.
    InvoiceFactory(
        customer=customer,
        issue_date=day(2, 10),
        subtotal=D("70.00"),
        status=InvoiceStatus.VOID,
        voided_at=datetime.datetime(2026, 3, 1, 3, 0, tzinfo=datetime.UTC),
    )
    ids = [(customer.pk, customer.display_name)]

    march = statement_for(
        customers=ids, start=day(3, 1), end=day(3, 20), currency="USD", zone=organization.zone
    )

    assert march.opening == ZERO and march.lines == []


# ----------------------------------------------------------------------------- the form


@pytest.mark.django_db
def test_statement_presets_and_custom_dates_choose_the_range(client, history, customer):
    sign_in(client, customer)

    year = client.get(URL, {"period": "this_year"})
    quarter = client.get(URL, {"period": "last_quarter"})
    custom = client.get(URL, {"period": "custom", "start": "2026-03-06", "end": "2026-03-09"})

    assert "Jan 1, 2026 – Mar 20, 2026" in year.text
    assert re.search(r'data-testid="opening">USD 0.00<', year.text)
    assert [row[1] for row in rows(year)][1:3] == ["INV-OLD", "RCPT-OLD"]
    assert 'value="2026-01-01"' in year.text  # the preset's dates fill the date fields
    assert "Oct 1, 2025 – Dec 31, 2025" in quarter.text
    assert "Nothing happened in this period." in quarter.text
    assert [row[1] for row in rows(custom)] == ["", "CN-1", ""]
    assert re.search(r'data-testid="opening">USD 280.00<', custom.text)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"period": "custom", "start": "2026-31-12", "end": "2026-03-01"},
            "start",
            "Enter a date such as 2026-01-31.",
        ),
        (
            {"period": "custom", "start": "2026-03-01", "end": "soon"},
            "end",
            "Enter a date such as 2026-01-31.",
        ),
        (
            {"period": "custom", "start": "2026-03-10", "end": "2026-03-01"},
            "start",
            "The start date is after the end date.",
        ),
        (
            {"period": "custom", "start": "2026-03-01", "end": "2026-04-01"},
            "end",
            "The statement cannot end after today (Mar 20, 2026).",
        ),
        (
            {"period": "custom", "end": "2026-03-01"},
            "start",
            "Enter the first day of the statement.",
        ),
        (
            {"start": "2026-03-10", "end": "2026-03-01"},
            "start",
            "The start date is after the end date.",
        ),
    ],
)
def test_statement_bad_dates_show_the_error_next_to_the_field(
    client, customer, params, field, message
):
    sign_in(client, customer)

    response = client.get(URL, params)

    assert response.status_code == 200
    assert field_error(response, field) == message
    assert f'id="id_{field}"' in response.text and 'aria-invalid="true"' in response.text
    assert "statement-table" not in response.text
    assert "Correct the dates above" in response.text


@pytest.mark.django_db
def test_statement_bad_dates_print_and_pdf_refuse_with_the_form(client, customer):
    sign_in(client, customer)
    bad = {"period": "custom", "start": "2026-03-10", "end": "2026-03-01"}

    for url in (PRINT_URL, PDF_URL):
        response = client.get(url, bad)
        assert response.status_code == 400
        assert response["Content-Type"].startswith("text/html")
        assert field_error(response, "start") == "The start date is after the end date."


@pytest.mark.django_db
def test_statement_htmx_request_returns_only_the_statement_partial(client, history, customer):
    sign_in(client, customer)

    response = client.get(URL, {"period": "this_month"}, headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="statement">')
    assert "<html" not in response.text and 'id="sidebar"' not in response.text
    assert "INV-MAR" in response.text


def page_links(response) -> dict[str, str]:
    """The statement's page links by their text ("First", "← Earlier", ...)."""
    nav = re.search(r'<nav[^>]*aria-label="Statement pages">(.*?)</nav>', response.text, re.S)
    assert nav, "no page links"
    return {
        html.unescape(re.sub(r"<[^>]+>", "", text)).strip(): html.unescape(href)
        for href, text in re.findall(r'<a class="page-link" href="([^"]+)"[^>]*>(.*?)</a>', nav[1])
    }


@pytest.mark.django_db
def test_statement_long_range_pages_carry_the_balance_forward(client, customer):
    # 120 invoices of 1.00 on the first days of the year, after an opening balance of 5.00.
    InvoiceFactory(
        customer=customer, number="INV-OPEN", issue_date=day(12, 1, 2025), subtotal=D("5")
    )
    for n in range(120):
        InvoiceFactory(
            customer=customer,
            number=f"INV-{n:03d}",
            issue_date=day(1, 1) + datetime.timedelta(days=n // 2),
            subtotal=D("1.00"),
        )
    sign_in(client, customer)

    first = client.get(URL, {"period": "this_year"})
    second = client.get(URL, {"period": "this_year", "page": "2"})
    last = client.get(URL, {"period": "this_year", "page": "3"})
    beyond = client.get(URL, {"period": "this_year", "page": "99"})
    junk = client.get(URL, {"period": "this_year", "page": "two"})

    one, two, three = rows(first), rows(second), rows(last)
    assert one[0][2:] == ["Opening balance", "", "5.00"]
    assert one[1][1] == "INV-000" and one[PAGE_SIZE][1] == f"INV-{PAGE_SIZE - 1:03d}"
    assert one[-1][2:] == ["Carried forward to page 2", "", f"{5 + PAGE_SIZE}.00"]
    assert two[0][2:] == ["Brought forward from page 1", "", f"{5 + PAGE_SIZE}.00"]
    assert two[1][1] == f"INV-{PAGE_SIZE:03d}" and two[1][-1] == f"{6 + PAGE_SIZE}.00"
    assert two[-1][2:] == ["Carried forward to page 3", "", f"{5 + 2 * PAGE_SIZE}.00"]
    assert three[0][-1] == f"{5 + 2 * PAGE_SIZE}.00"
    assert three[-1][2:] == ["Closing balance", "", "125.00"]
    assert len(three) == 120 - 2 * PAGE_SIZE + 2
    # The summary is the whole range's on every page.
    for response in (first, second, last):
        assert re.search(r'data-testid="opening">USD 5.00<', response.text)
        assert re.search(r'data-testid="closing">USD 125.00<', response.text)
    assert "Lines 1–50 of 120 · page 1 of 3" in first.text
    assert "Lines 101–120 of 120 · page 3 of 3" in last.text
    assert rows(beyond) == three and rows(junk) == one
    links = page_links(second)
    assert links["First"] == f"{URL}?period=this_year&page=1"
    assert links["← Earlier"] == f"{URL}?period=this_year&page=1"
    assert links["Later →"] == f"{URL}?period=this_year&page=3"
    assert links["Last"] == f"{URL}?period=this_year&page=3"
    assert set(page_links(first)) == {"Later →", "Last"}
    assert set(page_links(last)) == {"First", "← Earlier"}
    # The print view and the PDF link keep the selection, not the page, and show every line.
    assert f'href="{PRINT_URL}?period=this_year"' in second.text
    printed = client.get(PRINT_URL, {"period": "this_year", "page": "2"}).text
    assert all(f"INV-{n:03d}" in printed for n in range(120))


@pytest.mark.django_db
def test_statement_page_link_with_htmx_returns_the_statement_partial(client, customer):
    for _n in range(PAGE_SIZE + 1):
        InvoiceFactory(customer=customer, issue_date=day(1, 5), subtotal=D("2.00"))
    sign_in(client, customer)

    response = client.get(URL, {"period": "this_year", "page": "2"}, headers={"HX-Request": "true"})

    assert response.text.lstrip().startswith('<div id="statement">')
    assert rows(response)[0][2:] == ["Brought forward from page 1", "", f"{2 * PAGE_SIZE}.00"]
    assert 'hx-get="/portal/statement/?period=this_year&amp;page=1"' in response.text


# ----------------------------------------------------------------------------- scope


@pytest.fixture
def family(organization, clock):
    """A parent with a visible branch, a hidden branch, and an unrelated company."""
    parent = CustomerFactory(display_name="Acme Group")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    hidden = CustomerFactory(display_name="Acme Secret", parent=parent, hidden_from_parent=True)
    other = CustomerFactory(display_name="Initech")
    for customer, number in [(parent, "P-1"), (berlin, "B-1"), (hidden, "H-1"), (other, "O-1")]:
        InvoiceFactory(customer=customer, number=number, issue_date=day(3, 3), subtotal=D("10.00"))
    return parent, berlin, hidden, other


@pytest.mark.django_db
def test_statement_parent_consolidated_includes_visible_branches_only(client, family):
    parent, _berlin, _hidden, _other = family
    sign_in(client, parent)

    own = client.get(URL)
    consolidated = client.get(URL, {"period": "this_month", "include_branches": "on"})

    assert [row[1] for row in rows(own)] == ["", "P-1", ""]
    table = rows(consolidated)
    assert [(row[1], row[3]) for row in table[1:-1]] == [
        ("P-1", "Acme Group"),
        ("B-1", "Acme Berlin"),
    ]
    assert table[-1][-1] == "20.00"
    assert "H-1" not in consolidated.text and "O-1" not in consolidated.text
    assert "Acme Secret" not in consolidated.text
    assert "Acme Group and branches" in consolidated.text


@pytest.mark.django_db
def test_statement_parent_chooses_visible_branch_by_public_id(client, family):
    parent, berlin, _hidden, _other = family
    sign_in(client, parent)

    response = client.get(URL, {"customer": str(berlin.public_id), "include_branches": "on"})

    assert response.status_code == 200
    assert [row[1] for row in rows(response)] == ["", "B-1", ""]
    assert "Acme Berlin · Mar 1, 2026" in response.text


@pytest.mark.django_db
def test_statement_parent_paying_branch_moves_money_between_ledgers(client, family):
    parent, berlin, _hidden, _other = family
    branch_invoice = Invoice.objects.get(number="B-1")
    payment = PaymentFactory(
        customer=parent, receipt_number="RCPT-P", amount=D("25.00"), received_on=day(3, 4)
    )
    allocation = PaymentAllocationFactory(
        payment=payment, invoice=branch_invoice, amount=D("10.00")
    )
    set_created(PaymentAllocation, allocation.pk, noon(day(3, 4)))
    sign_in(client, parent)

    own = rows(client.get(URL))
    branch = rows(client.get(URL, {"customer": str(berlin.public_id)}))
    consolidated = rows(client.get(URL, {"include_branches": "on"}))
    Invoice.objects.filter(pk=branch_invoice.pk).update(
        status=InvoiceStatus.VOID, voided_at=noon(day(3, 6))
    )
    books_changed([berlin.pk])  # a raw UPDATE: say what a service would have
    own_after_void = rows(client.get(URL))
    branch_after_void = rows(client.get(URL, {"customer": str(berlin.public_id)}))

    assert own[1:-1] == [
        ["Mar 3, 2026", "P-1", "Invoice · One-time charge", "10.00", "10.00"],
        ["Mar 4, 2026", "RCPT-P", "Payment received · Card", "-25.00", "-15.00"],
        ["Mar 4, 2026", "B-1", "Payment applied to Acme Berlin's invoice", "10.00", "-5.00"],
    ]
    assert branch[1:] == [
        ["Mar 3, 2026", "B-1", "Invoice · One-time charge", "10.00", "10.00"],
        ["Mar 4, 2026", "B-1", "Paid by Acme Group", "-10.00", "0.00"],
        ["Mar 20, 2026", "", "Closing balance", "", "0.00"],
    ]
    # Inside one statement the transfer cancels out: the family's balance is 20 − 25.
    assert [row[2] for row in consolidated[1:-1]] == [
        "Invoice · One-time charge",
        "Invoice · One-time charge",
        "Payment received · Card",
    ]
    assert consolidated[-1][-1] == "-5.00"
    # Voiding the branch's invoice hands the 10.00 back to the parent as credit.
    assert own_after_void[-2][1:] == [
        "B-1",
        "Payment returned: Acme Berlin's invoice voided",
        "-10.00",
        "-15.00",
    ]
    assert branch_after_void[-1][-1] == "0.00"
    # −15.00 = the open P-1 (10.00) less the whole payment, unused again (25.00).
    assert customer_credit_balance(parent) == D("25.00")


@pytest.mark.django_db
@pytest.mark.parametrize("url", [URL, PRINT_URL, PDF_URL])
def test_statement_hidden_branch_or_other_customer_is_404(client, family, url):
    parent, _berlin, hidden, other = family
    sign_in(client, parent)

    for target in (hidden.public_id, other.public_id, "not-a-uuid"):
        assert client.get(url, {"customer": str(target)}).status_code == 404


@pytest.mark.django_db
def test_statement_branch_contact_cannot_see_parent_statement(client, family):
    parent, berlin, _hidden, _other = family
    sign_in(client, berlin)

    assert client.get(URL, {"customer": str(parent.public_id)}).status_code == 404
    response = client.get(URL, {"include_branches": "on"})
    assert [row[1] for row in rows(response)] == ["", "B-1", ""]
    assert 'name="include_branches"' not in response.text


@pytest.mark.django_db
@pytest.mark.parametrize("url", [URL, PRINT_URL, PDF_URL])
def test_statement_preference_off_hides_nav_and_returns_404(client, customer, url):
    sign_in(client, customer)
    assert f'href="{URL}"' in client.get(reverse("portal:dashboard")).text
    set_preferences(show_statements=False)

    assert client.get(url).status_code == 404
    assert f'href="{URL}"' not in client.get(reverse("portal:dashboard")).text


@pytest.mark.django_db
def test_statement_signed_out_visitor_is_sent_to_login(client, customer):
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# ----------------------------------------------------------------------------- print and PDF


@pytest.mark.django_db
def test_statement_print_view_uses_print_stylesheet_without_sidebar(client, history, customer):
    sign_in(client, customer)

    response = client.get(PRINT_URL, {"period": "this_month"})

    assert response.status_code == 200
    assert "/static/css/print.css" in response.text
    assert 'id="sidebar"' not in response.text and "<script" not in response.text
    assert "style=" not in response.text
    assert "Statement of account" in response.text and "Globex" in response.text
    assert "USD 240.00" in response.text and "USD 210.00" in response.text
    assert f'href="{URL}?period=this_month"' in response.text


@pytest.mark.django_db
def test_statement_pdf_contains_opening_and_closing_balance(client, history, customer):
    from pypdf import PdfReader

    sign_in(client, customer)

    response = client.get(PDF_URL, {"period": "this_month"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Disposition"] == (
        'attachment; filename="statement-globex-2026-03-01-2026-03-20.pdf"'
    )
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    text = re.sub(r"\s+", " ", text)
    assert "Statement of account" in text and "Globex" in text
    assert "Opening balance USD 240.00" in text
    assert "Closing balance USD 210.00" in text
    assert "INV-MAR" in text and "CN-1" in text
    assert "Northwind Cloud" in text


# ----------------------------------------------------------------------------- queries


def bulk_history(customer, count: int) -> None:
    """``count`` invoices and ``count`` payments in this month and before it."""
    Invoice.objects.bulk_create(
        Invoice(
            customer=customer,
            number=f"BULK-{customer.pk}-{n:05d}",
            status=InvoiceStatus.OPEN,
            kind="one_time",
            currency="USD",
            issue_date=day(3, 1) - datetime.timedelta(days=n % 60),
            due_date=day(3, 15),
            subtotal=D("10.00"),
            total=D("10.00"),
        )
        for n in range(count)
    )
    Payment.objects.bulk_create(
        Payment(
            customer=customer,
            amount=D("3.00"),
            currency="USD",
            status=PaymentStatus.SUCCEEDED,
            idempotency_key=f"bulk-{customer.pk}-{n}",
            received_on=day(3, 1) + datetime.timedelta(days=n % 19),
        )
        for n in range(count)
    )
    books_changed([customer.pk])  # bulk_create bypasses services and signals: say so


@pytest.mark.django_db
def test_statement_query_count_is_bounded_and_constant(client, organization, clock):
    small, large = CustomerFactory(), CustomerFactory()
    bulk_history(small, 1)
    bulk_history(large, 500)
    query = f"{URL}?period=this_year"

    sign_in(client, small)
    few = count_queries(client, query)
    client.logout()
    sign_in(client, large)
    many = count_queries(client, query)
    print_many = count_queries(client, f"{PRINT_URL}?period=this_year")

    assert few == many == print_many
    assert many <= 10
    # A page of lines between the opening (or brought forward) and closing (or carried forward)
    # rows; the print view has them all.
    assert len(rows(client.get(query))) == PAGE_SIZE + 2
    assert client.get(f"{PRINT_URL}?period=this_year").text.count("BULK-") == 500


@pytest.mark.django_db
def test_statement_consolidated_query_count_is_bounded_and_constant(client, family):
    parent, berlin, _hidden, _other = family
    sign_in(client, parent)
    query = f"{URL}?period=this_year&include_branches=on"
    few = count_queries(client, query)
    bulk_history(berlin, 500)

    many = count_queries(client, query)

    assert few == many <= 10
