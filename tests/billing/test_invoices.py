"""Invoice services: gapless numbering, snapshots, due dates, totals, credit at finalize, void,
uncollectible, and one-time charges.

Every test runs against real PostgreSQL with time frozen, so dates are exact.
"""

import datetime
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection, transaction

from billing.enums import (
    DocumentKind,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
)
from billing.errors import BillingError, InvalidTransition, PaymentInProgress, ValidationFailed
from billing.models import (
    DocumentSequence,
    Event,
    Invoice,
    InvoiceLine,
    Organization,
    Payment,
    PaymentAttempt,
)
from billing.pricing import LineDraft, PriceBook, totals
from billing.selectors import customer_balance, customer_credit_balance, invoice_balance
from billing.services.credits import credit_note_issue, credits_apply_to_invoice
from billing.services.invoices import (
    invoice_create_draft,
    invoice_create_one_time,
    invoice_finalize,
    invoice_issue,
    invoice_mark_uncollectible,
    invoice_void,
    one_time_charges,
)
from billing.services.payment_methods import payment_method_add
from billing.services.payments import (
    new_idempotency_key,
    payment_begin,
    payment_collect,
    payment_record_offline,
)
from tests.factories import (
    CustomerFactory,
    CustomerGroupFactory,
    OrganizationFactory,
    PaymentAttemptFactory,
)

NOW = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=datetime.UTC)
TODAY = datetime.date(2026, 1, 15)
VISA = "4242424242424242"


@pytest.fixture(autouse=True)
def frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Acme Corp", company_name="Acme Corporation")


def configure_organization(**changes) -> Organization:
    """Change the merchant's settings through save(), which also refreshes the cached row."""
    organization = Organization.objects.get(pk=1)
    for name, value in changes.items():
        setattr(organization, name, value)
    organization.save()
    return organization


def issue(customer, amount: str, description: str = "Consulting") -> Invoice:
    return invoice_create_one_time(
        customer=customer, description=description, unit_price=Decimal(amount)
    )


def add_card(customer, number: str = VISA):
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2031, cvc="319"
    )


def line(
    amount: str, *, quantity: str = "1", unit_price: str | None = None, kind=None
) -> LineDraft:
    return LineDraft(
        kind=kind or InvoiceLineKind.ONE_TIME,
        description=f"Line {amount}",
        quantity=Decimal(quantity),
        unit_price=Decimal(unit_price or amount),
        amount=Decimal(amount),
    )


# ----------------------------------------------------------------------------- numbering
def test_invoice_issue_successive_invoices_numbered_gaplessly(customer):
    numbers = [issue(customer, "10.00").number for _ in range(3)]

    assert numbers == ["INV-000001", "INV-000002", "INV-000003"]
    assert DocumentSequence.objects.get(kind=DocumentKind.INVOICE).next_number == 4


def test_invoice_issue_rolled_back_issue_number_reused_no_gap(customer):
    issue(customer, "10.00")

    def issue_then_fail() -> None:
        with transaction.atomic():
            issue(customer, "20.00")
            raise RuntimeError("the caller failed after issuing")

    with pytest.raises(RuntimeError):
        issue_then_fail()

    assert issue(customer, "30.00").number == "INV-000002"
    assert list(Invoice.objects.order_by("number").values_list("number", "total")) == [
        ("INV-000001", Decimal("10.00")),
        ("INV-000002", Decimal("30.00")),
    ]


def test_invoice_issue_draft_has_no_number_until_finalized(customer):
    draft = invoice_create_draft(
        customer=customer,
        charges=one_time_charges(customer=customer, description="Setup", unit_price=Decimal(5)),
        kind=InvoiceKind.ONE_TIME,
    )

    assert (draft.status, draft.number, draft.issue_date) == (InvoiceStatus.DRAFT, None, None)
    assert not DocumentSequence.objects.filter(kind=DocumentKind.INVOICE).exists()

    finalized = invoice_finalize(invoice=draft)

    assert (finalized.status, finalized.number) == (InvoiceStatus.OPEN, "INV-000001")
    assert finalized.finalized_at == NOW


def test_invoice_finalize_twice_refused_number_kept(customer):
    draft = invoice_create_draft(
        customer=customer,
        charges=one_time_charges(customer=customer, description="Setup", unit_price=Decimal(5)),
        kind=InvoiceKind.ONE_TIME,
    )
    invoice_finalize(invoice=draft)

    with pytest.raises(InvalidTransition, match="already finalized"):
        invoice_finalize(invoice=draft)

    draft.refresh_from_db()
    assert draft.number == "INV-000001"
    assert DocumentSequence.objects.get(kind=DocumentKind.INVOICE).next_number == 2
    assert Event.objects.filter(kind="invoice.issued", invoice=draft).count() == 1


# ----------------------------------------------------------------------------- snapshots and dates
def test_invoice_issue_snapshots_customer_and_merchant_later_edits_not_copied(customer):
    organization = Organization.load()
    organization.legal_name = "Northwind Cloud LLC"
    organization.address_line1 = "500 Market Street"
    organization.city = "San Francisco"
    organization.state = "CA"
    organization.postal_code = "94105"
    organization.country = "United States"
    organization.tax_id = "US-99-1234567"
    organization.save()
    customer.tax_id = "DE123456789"
    customer.save()
    customer_address = customer.billing_address_lines
    merchant_address = organization.address_lines

    invoice = issue(customer, "10.00")
    customer.display_name = "Renamed Inc"
    customer.billing_line1 = "9 Other Road"
    customer.save()
    organization.name = "Renamed Merchant"
    organization.save()
    invoice.refresh_from_db()

    assert invoice.billing_details == {
        "name": "Acme Corp",
        "company": "Acme Corporation",
        "email": customer.email,
        "address_lines": customer_address,
        "tax_id": "DE123456789",
    }
    assert customer_address[:2] == ["Acme Corporation", "1 Main Street"]
    assert invoice.merchant_details["name"] == "Northwind Cloud"
    assert invoice.merchant_details["legal_name"] == "Northwind Cloud LLC"
    assert invoice.merchant_details["address_lines"] == merchant_address
    assert merchant_address[0] == "500 Market Street"
    assert invoice.merchant_details["tax_id"] == "US-99-1234567"


def test_invoice_issue_customer_terms_set_due_date_from_customer(customer):
    group = CustomerGroupFactory(payment_terms_days=45)
    customer.group = group
    customer.payment_terms_days = 7
    customer.save()

    invoice = issue(customer, "10.00")

    assert (invoice.issue_date, invoice.due_date) == (TODAY, datetime.date(2026, 1, 22))


def test_invoice_issue_customer_without_terms_due_date_from_group(customer):
    customer.group = CustomerGroupFactory(payment_terms_days=45)
    customer.save()

    invoice = issue(customer, "10.00")

    assert invoice.due_date == datetime.date(2026, 3, 1)


def test_invoice_issue_no_customer_or_group_terms_due_date_from_organization(customer):
    configure_organization(payment_terms_days=30)
    customer.group = CustomerGroupFactory(payment_terms_days=None)
    customer.save()

    invoice = issue(customer, "10.00")

    assert invoice.due_date == datetime.date(2026, 2, 14)


def test_invoice_issue_customer_terms_zero_due_on_issue_date(customer):
    customer.group = CustomerGroupFactory(payment_terms_days=45)
    customer.payment_terms_days = 0
    customer.save()

    invoice = issue(customer, "10.00")

    assert invoice.due_date == invoice.issue_date == TODAY


def test_invoice_issue_late_utc_evening_dated_in_organization_time_zone(customer, time_machine):
    configure_organization(time_zone="Pacific/Auckland", payment_terms_days=14)
    time_machine.move_to(datetime.datetime(2026, 1, 15, 23, 30, tzinfo=datetime.UTC), tick=False)

    invoice = issue(customer, "10.00")

    # 23:30 UTC is 12:30 on January 16 in Auckland (UTC+13 in summer).
    assert (invoice.issue_date, invoice.due_date) == (
        datetime.date(2026, 1, 16),
        datetime.date(2026, 1, 30),
    )


def test_invoice_issue_explicit_issue_date_used_for_due_date(customer):
    charges = one_time_charges(customer=customer, description="Backdated", unit_price=Decimal(8))

    invoice = invoice_issue(
        customer=customer,
        charges=charges,
        kind=InvoiceKind.ONE_TIME,
        issue_date=datetime.date(2026, 1, 1),
    )

    assert (invoice.issue_date, invoice.due_date) == (
        datetime.date(2026, 1, 1),
        datetime.date(2026, 1, 15),
    )


# ----------------------------------------------------------------------------- totals
def test_invoice_issue_totals_sum_of_rounded_lines_minus_discount_plus_tax(customer):
    customer.tax_rate = Decimal("19")
    customer.save()
    book = PriceBook(customer, Organization.load())
    # 3 × 3.335 = 10.005 → 10.01 and 0.125 → 0.13: each line rounded on its own.
    lines = [
        line("10.01", quantity="3", unit_price="3.335"),
        line("0.13", unit_price="0.125"),
        LineDraft(
            kind=InvoiceLineKind.DISCOUNT,
            description="Coupon",
            quantity=Decimal(1),
            unit_price=Decimal("-1.00"),
            amount=Decimal("-1.00"),
        ),
    ]

    invoice = invoice_issue(
        customer=customer, charges=totals(lines, book), kind=InvoiceKind.ONE_TIME
    )

    # Tax 19 % of (10.14 − 1.00) = 1.7366 → 1.74.
    assert (
        invoice.subtotal,
        invoice.discount_total,
        invoice.tax_rate,
        invoice.tax_total,
        invoice.total,
    ) == (Decimal("10.14"), Decimal("1.00"), Decimal("19"), Decimal("1.74"), Decimal("10.88"))
    stored = list(invoice.lines.values_list("position", "quantity", "unit_price", "amount"))
    assert stored == [
        (0, Decimal("3"), Decimal("3.3350"), Decimal("10.01")),
        (1, Decimal("1"), Decimal("0.1250"), Decimal("0.13")),
        (2, Decimal("1"), Decimal("-1.0000"), Decimal("-1.00")),
    ]
    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("0.00"), Decimal("10.88"))


def test_one_time_charges_quantity_and_organization_tax_rounded_half_up(customer):
    configure_organization(tax_rate=Decimal("7.25"))

    charges = one_time_charges(
        customer=customer,
        description="  Training hours  ",
        unit_price=Decimal("12.345"),
        quantity=Decimal("3"),
    )
    invoice = invoice_issue(customer=customer, charges=charges, kind=InvoiceKind.ONE_TIME)

    # 3 × 12.345 = 37.035 → 37.04; 7.25 % of 37.04 = 2.6854 → 2.69.
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (
        Decimal("37.04"),
        Decimal("2.69"),
        Decimal("39.73"),
    )
    only = invoice.lines.get()
    assert (only.kind, only.description, only.amount) == (
        InvoiceLineKind.ONE_TIME,
        "Training hours",
        Decimal("37.04"),
    )


def test_one_time_charges_tax_exempt_customer_no_tax(customer):
    configure_organization(tax_rate=Decimal("20"))
    customer.tax_exempt = True
    customer.tax_rate = Decimal("10")
    customer.save()

    invoice = issue(customer, "50.00")

    assert (invoice.tax_rate, invoice.tax_total, invoice.total) == (
        Decimal("0"),
        Decimal("0.00"),
        Decimal("50.00"),
    )


def test_invoice_issue_zero_total_paid_at_once(customer):
    book = PriceBook(customer, Organization.load())
    lines = [
        line("25.00"),
        LineDraft(
            kind=InvoiceLineKind.DISCOUNT,
            description="100 % off",
            quantity=Decimal(1),
            unit_price=Decimal("-25.00"),
            amount=Decimal("-25.00"),
        ),
    ]

    invoice = invoice_issue(
        customer=customer, charges=totals(lines, book), kind=InvoiceKind.ONE_TIME
    )

    assert invoice.total == Decimal("0.00")
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.paid_at == NOW
    assert invoice.number == "INV-000001"
    assert list(
        Event.objects.filter(invoice=invoice).order_by("id").values_list("kind", flat=True)
    ) == [
        "invoice.issued",
        "invoice.paid",
    ]


# ----------------------------------------------------------------------------- credit at finalize
def test_invoice_issue_customer_credit_partly_covers_credit_applied_balance_left(customer):
    note = credit_note_issue(customer=customer, amount=Decimal("30.00"), reason="goodwill")

    invoice = issue(customer, "100.00")

    assert invoice.status == InvoiceStatus.OPEN
    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("30.00"), Decimal("70.00"))
    assert note.allocations.get().amount == Decimal("30.00")
    assert customer_credit_balance(customer) == Decimal("0.00")
    assert customer_balance(customer) == Decimal("70.00")


def test_invoice_issue_customer_credit_exceeds_total_paid_and_rest_kept(customer):
    credit_note_issue(customer=customer, amount=Decimal("150.00"), reason="goodwill")

    invoice = issue(customer, "100.00")

    assert invoice.status == InvoiceStatus.PAID
    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("100.00"), Decimal("0.00"))
    assert customer_credit_balance(customer) == Decimal("50.00")
    assert customer_balance(customer) == Decimal("-50.00")


def test_invoice_issue_other_customers_credit_not_applied(customer):
    credit_note_issue(customer=CustomerFactory(), amount=Decimal("50.00"), reason="goodwill")

    invoice = issue(customer, "100.00")

    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("0.00"), Decimal("100.00"))


# ----------------------------------------------------------------------------- void
def test_invoice_void_open_invoice_releases_payment_and_credit_as_customer_credit(customer):
    invoice = issue(customer, "100.00")
    payment_record_offline(customer=customer, amount=Decimal("40.00"), mode=PaymentMode.CHECK)
    credit_note_issue(customer=customer, amount=Decimal("25.00"), reason="goodwill")
    credits_apply_to_invoice(invoice=invoice)
    assert invoice_balance(invoice) == (Decimal("40.00"), Decimal("25.00"), Decimal("35.00"))
    assert customer_credit_balance(customer) == Decimal("0.00")

    voided = invoice_void(invoice=invoice, reason="billed in error")

    assert voided.status == InvoiceStatus.VOID
    assert voided.voided_at == NOW
    assert customer_credit_balance(customer) == Decimal("65.00")
    assert customer_balance(customer) == Decimal("-65.00")
    event = Event.objects.get(kind="invoice.voided", invoice=invoice)
    assert event.description == "Invoice INV-000001 voided: billed in error"
    assert event.data == {"before": {"status": "open"}, "after": {"status": "void"}}


def test_invoice_void_released_credit_pays_next_invoice(customer):
    first = issue(customer, "80.00")
    payment_record_offline(customer=customer, amount=Decimal("80.00"), mode=PaymentMode.CASH)
    first.refresh_from_db()
    assert first.status == InvoiceStatus.PAID

    second = issue(customer, "50.00")
    invoice_void(invoice=second)
    third = issue(customer, "30.00")

    # Nothing was released by voiding the unpaid second invoice; the third stays unpaid.
    assert invoice_balance(third)[2] == Decimal("30.00")
    assert customer_credit_balance(customer) == Decimal("0.00")


def test_invoice_void_paid_invoice_refused(customer):
    invoice = issue(customer, "20.00")
    payment_record_offline(customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH)

    with pytest.raises(InvalidTransition, match="Only an unpaid invoice can be voided"):
        invoice_void(invoice=invoice)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert customer_credit_balance(customer) == Decimal("0.00")
    assert not Event.objects.filter(kind="invoice.voided").exists()


def test_invoice_void_already_void_refused(customer):
    invoice = issue(customer, "20.00")
    invoice_void(invoice=invoice)

    with pytest.raises(InvalidTransition):
        invoice_void(invoice=invoice)

    assert Event.objects.filter(kind="invoice.voided").count() == 1


def test_invoice_void_pending_card_payment_refused_payment_in_progress(customer):
    invoice = issue(customer, "20.00")
    payment, created = payment_begin(
        payer=customer,
        invoices=[invoice],
        method=add_card(customer),
        idempotency_key=new_idempotency_key(),
    )
    assert created and payment.status == PaymentStatus.PENDING

    with pytest.raises(PaymentInProgress):
        invoice_void(invoice=invoice)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.voided_at is None


def test_invoice_void_scheduled_dunning_retries_skipped(customer):
    invoice = issue(customer, "20.00")
    attempt = PaymentAttemptFactory(invoice=invoice, attempt_number=1)

    invoice_void(invoice=invoice)

    attempt.refresh_from_db()
    assert attempt.status == PaymentAttemptStatus.SKIPPED


# ----------------------------------------------------------------------------- uncollectible
def test_invoice_mark_uncollectible_later_offline_payment_settles_paid(customer):
    invoice = issue(customer, "60.00")
    attempt = PaymentAttemptFactory(invoice=invoice, attempt_number=2)

    invoice = invoice_mark_uncollectible(invoice=invoice)
    assert invoice.status == InvoiceStatus.UNCOLLECTIBLE
    attempt.refresh_from_db()
    assert attempt.status == PaymentAttemptStatus.SKIPPED

    payment_record_offline(
        customer=customer, amount=Decimal("60.00"), mode=PaymentMode.BANK_TRANSFER
    )

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.paid_at == NOW
    assert invoice_balance(invoice) == (Decimal("60.00"), Decimal("0.00"), Decimal("0.00"))
    paid = Event.objects.get(kind="invoice.paid", invoice=invoice)
    assert paid.data == {"before": {"status": "uncollectible"}, "after": {"status": "paid"}}


def test_invoice_mark_uncollectible_later_card_payment_settles_paid(customer):
    invoice = invoice_mark_uncollectible(invoice=issue(customer, "60.00"))

    payment = payment_collect(
        payer=customer,
        invoices=[invoice],
        method=add_card(customer),
        idempotency_key=new_idempotency_key(),
    )

    invoice.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert invoice.status == InvoiceStatus.PAID


def test_invoice_mark_uncollectible_paid_invoice_refused(customer):
    invoice = issue(customer, "20.00")
    payment_record_offline(customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH)

    with pytest.raises(InvalidTransition, match="Only an open invoice"):
        invoice_mark_uncollectible(invoice=invoice)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


def test_invoice_mark_uncollectible_then_void_allowed_and_not_owed(customer):
    invoice = invoice_mark_uncollectible(invoice=issue(customer, "20.00"))

    invoice_void(invoice=invoice)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID
    assert customer_balance(customer) == Decimal("0.00")


# ----------------------------------------------------------------------------- one-time charges
@pytest.mark.parametrize(
    ("description", "unit_price", "quantity", "field"),
    [
        ("", Decimal("10"), Decimal("1"), "description"),
        ("   ", Decimal("10"), Decimal("1"), "description"),
        ("Consulting", Decimal("0"), Decimal("1"), "unit_price"),
        ("Consulting", Decimal("-5.00"), Decimal("1"), "unit_price"),
        ("Consulting", Decimal("10"), Decimal("0"), "quantity"),
        ("Consulting", Decimal("10"), Decimal("-1"), "quantity"),
        # Rounds to a zero line: it would be a "paid" invoice for nothing.
        ("Consulting", Decimal("0.004"), Decimal("1"), "unit_price"),
    ],
)
def test_invoice_create_one_time_bad_input_refused_nothing_written(
    customer, description, unit_price, quantity, field
):
    with pytest.raises(ValidationFailed) as raised:
        invoice_create_one_time(
            customer=customer, description=description, unit_price=unit_price, quantity=quantity
        )

    assert raised.value.field == field
    assert not Invoice.objects.exists()
    assert not InvoiceLine.objects.exists()
    assert not Event.objects.exists()
    assert not DocumentSequence.objects.filter(kind=DocumentKind.INVOICE).exists()


def test_invoice_create_one_time_records_issue_event_with_actor_kind_system(customer):
    invoice = issue(customer, "12.50", description="Data export")

    event = Event.objects.get(kind="invoice.issued")
    assert (event.invoice, event.customer, event.actor_kind) == (invoice, customer, "system")
    assert event.data == {"after": {"number": "INV-000001", "total": "12.50"}}
    assert invoice.kind == InvoiceKind.ONE_TIME


def test_invoice_settle_payment_stops_scheduled_dunning(customer):
    invoice = issue(customer, "20.00")
    scheduled = PaymentAttemptFactory(invoice=invoice, attempt_number=1)
    done = PaymentAttemptFactory(
        invoice=invoice, attempt_number=0, status=PaymentAttemptStatus.FAILED
    )

    payment_record_offline(customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH)

    assert PaymentAttempt.objects.get(pk=scheduled.pk).status == PaymentAttemptStatus.SKIPPED
    assert PaymentAttempt.objects.get(pk=done.pk).status == PaymentAttemptStatus.FAILED


# ----------------------------------------------------------------------------- concurrency
def _in_threads(count: int, work) -> list:
    barrier = threading.Barrier(count)

    def run(index: int):
        try:
            barrier.wait()
            return work(index)
        except BillingError as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [future.result() for future in [pool.submit(run, i) for i in range(count)]]


@pytest.mark.django_db(transaction=True)
def test_invoice_issue_concurrent_issues_numbered_once_each_without_gaps():
    OrganizationFactory()
    customers = [CustomerFactory() for _ in range(2)]

    invoices = _in_threads(10, lambda i: issue(customers[i % 2], f"{10 + i}.00"))

    assert sorted(invoice.number for invoice in invoices) == [f"INV-{n:06d}" for n in range(1, 11)]
    assert Invoice.objects.filter(status=InvoiceStatus.OPEN).count() == 10


@pytest.mark.django_db(transaction=True)
def test_invoice_void_concurrent_with_card_payment_one_of_them_wins():
    OrganizationFactory()
    customer = CustomerFactory()
    card = add_card(customer)
    invoices = [issue(customer, "10.00") for _ in range(5)]

    def work(index: int):
        invoice = invoices[index // 2]
        if index % 2:
            return invoice_void(invoice=invoice)
        return payment_collect(
            payer=customer, invoices=[invoice], method=card, idempotency_key=new_idempotency_key()
        )

    _in_threads(10, work)

    for invoice in invoices:
        invoice.refresh_from_db()
        paid = Payment.objects.filter(
            status=PaymentStatus.SUCCEEDED, allocations__invoice=invoice
        ).exists()
        # Either it was voided before any charge, or it was paid and could not be voided.
        assert (invoice.status, paid) in {
            (InvoiceStatus.VOID, False),
            (InvoiceStatus.PAID, True),
        }
    assert customer_balance(customer) == Decimal("0.00")
