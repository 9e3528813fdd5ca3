"""Credit notes and applying credit: numbering, limits, oldest-first application across credit
notes and unapplied payments, the parent/child hierarchy, voiding."""

import datetime
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from billing.enums import CreditNoteStatus, InvoiceStatus, PaymentMode, PaymentStatus
from billing.errors import (
    BillingError,
    InvalidTransition,
    NotAllowed,
    PaymentInProgress,
    ValidationFailed,
)
from billing.models import (
    CreditAllocation,
    CreditNote,
    Event,
    Invoice,
    Organization,
    PaymentAllocation,
)
from billing.selectors import (
    credit_notes_with_remaining,
    customer_balance,
    customer_credit_balance,
    invoice_balance,
)
from billing.services.credits import (
    credit_note_issue,
    credit_note_void,
    credits_apply_to_invoice,
    credits_apply_to_open_invoices,
)
from billing.services.invoices import invoice_create_one_time, invoice_void
from billing.services.payment_methods import payment_method_add
from billing.services.payments import new_idempotency_key, payment_begin, payment_record_offline
from tests.factories import CustomerFactory, OrganizationFactory

NOW = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory()


def configure_organization(**changes) -> Organization:
    """Change the merchant's settings through save(), which also refreshes the cached row."""
    organization = Organization.objects.get(pk=1)
    for name, value in changes.items():
        setattr(organization, name, value)
    organization.save()
    return organization


def issue(customer, amount: str):
    return invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal(amount)
    )


def note(customer, amount: str, **kwargs) -> CreditNote:
    return credit_note_issue(
        customer=customer, amount=Decimal(amount), reason=kwargs.pop("reason", "goodwill"), **kwargs
    )


def unapplied_payment(customer, amount: str):
    """Money received and kept as credit (paying no invoice)."""
    return payment_record_offline(
        customer=customer, amount=Decimal(amount), mode=PaymentMode.BANK_TRANSFER, invoices=[]
    )


def remaining(credit_note: CreditNote) -> Decimal:
    return credit_notes_with_remaining(CreditNote.objects.filter(pk=credit_note.pk)).get().remaining


# ----------------------------------------------------------------------------- issue
def test_credit_note_issue_successive_notes_numbered_gaplessly_with_event(customer):
    first = note(customer, "10.00")
    second = note(customer, "12.345", reason="billing_error", memo="Wrong rate")

    assert (first.number, second.number) == ("CN-000001", "CN-000002")
    assert second.amount == Decimal("12.35")  # rounded half-up to the cent
    assert (second.status, second.issue_date, second.currency) == (
        CreditNoteStatus.ISSUED,
        datetime.date(2026, 1, 15),
        "USD",
    )
    event = Event.objects.get(kind="credit_note.issued", credit_note=second)
    assert event.customer == customer
    assert event.data == {"after": {"amount": "12.35", "reason": "billing_error"}}
    assert customer_credit_balance(customer) == Decimal("22.35")
    assert customer_balance(customer) == Decimal("-22.35")


def test_credit_note_issue_amount_equal_to_invoice_total_accepted(customer):
    invoice = issue(customer, "40.00")

    credit = note(customer, "40.00", invoice=invoice, reason="billing_error")

    assert (credit.invoice, credit.amount) == (invoice, Decimal("40.00"))


def test_credit_note_issue_amount_above_invoice_total_refused(customer):
    invoice = issue(customer, "40.00")

    with pytest.raises(ValidationFailed, match=r"40\.00") as raised:
        note(customer, "40.01", invoice=invoice)

    assert raised.value.field == "amount"
    assert not CreditNote.objects.exists()


def test_credit_note_issue_notes_together_above_invoice_total_refused(customer):
    invoice = issue(customer, "40.00")
    note(customer, "30.00", invoice=invoice)

    with pytest.raises(ValidationFailed) as raised:
        note(customer, "10.01", invoice=invoice)

    assert raised.value.field == "amount"
    assert "10.00" in raised.value.message
    assert CreditNote.objects.count() == 1
    assert note(customer, "10.00", invoice=invoice).amount == Decimal("10.00")


def test_credit_note_issue_void_note_frees_its_share_of_invoice_total(customer):
    invoice = issue(customer, "40.00")
    credit_note_void(credit_note=note(customer, "40.00", invoice=invoice))

    assert note(customer, "40.00", invoice=invoice).amount == Decimal("40.00")


def test_credit_note_issue_other_customers_invoice_refused_nothing_written(customer):
    invoice = issue(CustomerFactory(), "40.00")

    with pytest.raises(ValidationFailed) as raised:
        note(customer, "10.00", invoice=invoice)

    assert raised.value.field == "invoice"
    assert not CreditNote.objects.exists()
    assert not Event.objects.filter(kind="credit_note.issued").exists()


def test_credit_note_issue_void_invoice_refused(customer):
    invoice = issue(customer, "40.00")
    invoice_void(invoice=invoice)

    with pytest.raises(ValidationFailed) as raised:
        note(customer, "10.00", invoice=invoice)

    assert raised.value.field == "invoice"
    assert not CreditNote.objects.exists()


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        ("0", "goodwill", "amount"),
        ("-5.00", "goodwill", "amount"),
        ("0.004", "goodwill", "amount"),  # rounds to zero
        ("5.00", "because", "reason"),
    ],
)
def test_credit_note_issue_bad_input_refused_no_number_taken(customer, amount, reason, field):
    with pytest.raises(ValidationFailed) as raised:
        credit_note_issue(customer=customer, amount=Decimal(amount), reason=reason)

    assert raised.value.field == field
    assert not CreditNote.objects.exists()
    assert note(customer, "1.00").number == "CN-000001"


# ----------------------------------------------------------------------------- apply
def test_credits_apply_to_invoice_oldest_first_across_notes_and_payments(customer, time_machine):
    invoice = issue(customer, "60.00")
    time_machine.move_to(NOW + datetime.timedelta(days=1), tick=False)
    oldest = note(customer, "30.00")
    time_machine.move_to(NOW + datetime.timedelta(days=2), tick=False)
    payment = unapplied_payment(customer, "20.00")
    time_machine.move_to(NOW + datetime.timedelta(days=3), tick=False)
    newest = note(customer, "50.00")

    applied = credits_apply_to_invoice(invoice=invoice)

    assert applied == Decimal("60.00")
    assert list(
        CreditAllocation.objects.filter(invoice=invoice)
        .order_by("id")
        .values_list("credit_note__number", "amount")
    ) == [(oldest.number, Decimal("30.00")), (newest.number, Decimal("10.00"))]
    assert PaymentAllocation.objects.get(invoice=invoice).payment == payment
    assert PaymentAllocation.objects.get(invoice=invoice).amount == Decimal("20.00")
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice_balance(invoice) == (Decimal("20.00"), Decimal("40.00"), Decimal("0.00"))
    assert (remaining(oldest), remaining(newest)) == (Decimal("0.00"), Decimal("40.00"))
    assert customer_credit_balance(customer) == Decimal("40.00")
    assert [
        e.data["after"]["amount"]
        for e in Event.objects.filter(kind="credit.applied").order_by("id")
    ] == ["30.00", "20.00", "10.00"]


def test_credits_apply_to_invoice_payment_before_note_on_same_local_day_oldest_first(
    customer, time_machine
):
    configure_organization(time_zone="Pacific/Auckland")
    invoice = issue(customer, "10.00")
    # Both are January 16 in Auckland; the credit note came first (01:00 vs 09:00 local), but
    # the payment's UTC date is still January 15.
    time_machine.move_to(datetime.datetime(2026, 1, 15, 12, 0, tzinfo=datetime.UTC), tick=False)
    older = note(customer, "10.00")
    time_machine.move_to(datetime.datetime(2026, 1, 15, 20, 0, tzinfo=datetime.UTC), tick=False)
    unapplied_payment(customer, "10.00")

    credits_apply_to_invoice(invoice=invoice)

    assert CreditAllocation.objects.get(invoice=invoice).credit_note == older
    assert not PaymentAllocation.objects.filter(invoice=invoice).exists()


def test_credits_apply_to_invoice_partial_credit_leaves_invoice_open(customer):
    invoice = issue(customer, "100.00")
    credit = note(customer, "35.50")

    applied = credits_apply_to_invoice(invoice=invoice)

    invoice.refresh_from_db()
    assert applied == Decimal("35.50")
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice_balance(invoice) == (Decimal("0.00"), Decimal("35.50"), Decimal("64.50"))
    assert remaining(credit) == Decimal("0.00")
    assert customer_balance(customer) == Decimal("64.50")


def test_credits_apply_to_invoice_limit_applies_no_more_than_limit(customer):
    invoice = issue(customer, "100.00")
    credit = note(customer, "80.00")

    applied = credits_apply_to_invoice(invoice=invoice, limit=Decimal("25.00"))

    assert applied == Decimal("25.00")
    assert remaining(credit) == Decimal("55.00")
    assert invoice_balance(invoice)[2] == Decimal("75.00")


def test_credits_apply_to_invoice_no_credit_applies_nothing(customer):
    invoice = issue(customer, "100.00")

    assert credits_apply_to_invoice(invoice=invoice) == Decimal("0.00")
    assert not Event.objects.filter(kind="credit.applied").exists()


def test_credits_apply_to_invoice_paid_invoice_refused(customer):
    invoice = issue(customer, "10.00")
    payment_record_offline(customer=customer, amount=Decimal("10.00"), mode=PaymentMode.CASH)
    credit = note(customer, "10.00")

    with pytest.raises(InvalidTransition):
        credits_apply_to_invoice(invoice=invoice)

    assert remaining(credit) == Decimal("10.00")


def test_credits_apply_to_invoice_pending_card_payment_refused_no_double_payment(customer):
    invoice = issue(customer, "50.00")
    method = payment_method_add(
        customer=customer, number="4242424242424242", exp_month=12, exp_year=2031, cvc="319"
    )
    payment, _ = payment_begin(
        payer=customer, invoices=[invoice], method=method, idempotency_key=new_idempotency_key()
    )
    assert payment.status == PaymentStatus.PENDING
    credit = note(customer, "50.00")

    with pytest.raises(PaymentInProgress):
        credits_apply_to_invoice(invoice=invoice)

    assert remaining(credit) == Decimal("50.00")
    assert not CreditAllocation.objects.exists()


def test_credits_apply_to_open_invoices_skips_invoice_with_pending_payment(customer):
    locked = issue(customer, "50.00")
    method = payment_method_add(
        customer=customer, number="4242424242424242", exp_month=12, exp_year=2031, cvc="319"
    )
    payment_begin(
        payer=customer, invoices=[locked], method=method, idempotency_key=new_idempotency_key()
    )
    other = issue(customer, "30.00")
    note(customer, "100.00")

    applied = credits_apply_to_open_invoices(customer=customer)

    assert applied == Decimal("30.00")
    other.refresh_from_db()
    assert other.status == InvoiceStatus.PAID
    assert invoice_balance(locked)[1] == Decimal("0.00")
    assert customer_credit_balance(customer) == Decimal("70.00")


def test_credits_apply_to_open_invoices_oldest_due_first(customer, time_machine):
    first = issue(customer, "40.00")
    time_machine.move_to(NOW + datetime.timedelta(days=5), tick=False)
    second = issue(customer, "40.00")
    note(customer, "50.00")

    applied = credits_apply_to_open_invoices(customer=customer)

    first.refresh_from_db()
    second.refresh_from_db()
    assert applied == Decimal("50.00")
    assert first.status == InvoiceStatus.PAID
    assert (second.status, invoice_balance(second)[2]) == (InvoiceStatus.OPEN, Decimal("30.00"))


def test_credits_apply_to_invoice_voided_invoice_credit_returns_and_applies_again(customer):
    first = issue(customer, "30.00")
    credit = note(customer, "20.00")
    credits_apply_to_invoice(invoice=first)
    assert invoice_balance(first) == (Decimal("0.00"), Decimal("20.00"), Decimal("10.00"))
    invoice_void(invoice=first)
    assert remaining(credit) == Decimal("20.00")

    second = issue(customer, "20.00")

    second.refresh_from_db()
    assert second.status == InvoiceStatus.PAID
    assert remaining(credit) == Decimal("0.00")


# ----------------------------------------------------------------------------- hierarchy
def test_credits_apply_parent_credit_to_visible_child_invoice_paid(customer):
    child = CustomerFactory(parent=customer)
    invoice = issue(child, "45.00")
    credit = note(customer, "60.00")

    applied = credits_apply_to_invoice(invoice=invoice, owner=customer)

    invoice.refresh_from_db()
    assert applied == Decimal("45.00")
    assert invoice.status == InvoiceStatus.PAID
    assert remaining(credit) == Decimal("15.00")
    assert customer_credit_balance(customer) == Decimal("15.00")
    assert Event.objects.get(kind="credit.applied").customer == child


def test_credits_apply_parent_credit_to_hidden_child_invoice_not_allowed(customer):
    child = CustomerFactory(parent=customer, hidden_from_parent=True)
    invoice = issue(child, "45.00")
    credit = note(customer, "60.00")

    with pytest.raises(NotAllowed):
        credits_apply_to_invoice(invoice=invoice, owner=customer)

    assert remaining(credit) == Decimal("60.00")
    assert invoice_balance(invoice)[2] == Decimal("45.00")


def test_credits_apply_unrelated_customer_credit_not_allowed(customer):
    invoice = issue(CustomerFactory(), "45.00")
    credit = note(customer, "60.00")

    with pytest.raises(NotAllowed):
        credits_apply_to_invoice(invoice=invoice, owner=customer)

    assert remaining(credit) == Decimal("60.00")
    assert not CreditAllocation.objects.exists()


def test_credits_apply_child_credit_to_parent_invoice_not_allowed(customer):
    child = CustomerFactory(parent=customer)
    invoice = issue(customer, "45.00")
    note(child, "60.00")

    with pytest.raises(NotAllowed):
        credits_apply_to_invoice(invoice=invoice, owner=child)


# ----------------------------------------------------------------------------- void
def test_credit_note_void_unused_note_void_and_no_longer_credit(customer):
    credit = note(customer, "25.00")

    voided = credit_note_void(credit_note=credit)

    assert voided.status == CreditNoteStatus.VOID
    assert customer_credit_balance(customer) == Decimal("0.00")
    assert customer_balance(customer) == Decimal("0.00")
    assert Event.objects.filter(kind="credit_note.voided", credit_note=credit).count() == 1
    later = issue(customer, "25.00")
    assert invoice_balance(later)[1] == Decimal("0.00")


def test_credit_note_void_partly_used_refused(customer):
    credit = note(customer, "25.00")
    issue(customer, "10.00")  # takes 10.00 of the note at finalize

    with pytest.raises(InvalidTransition, match="has been used"):
        credit_note_void(credit_note=credit)

    credit.refresh_from_db()
    assert credit.status == CreditNoteStatus.ISSUED
    assert remaining(credit) == Decimal("15.00")


def test_credit_note_void_already_void_refused(customer):
    credit = credit_note_void(credit_note=note(customer, "25.00"))

    with pytest.raises(InvalidTransition, match="already void"):
        credit_note_void(credit_note=credit)


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
def test_credits_apply_to_invoice_concurrent_invoices_share_one_credit_never_overspent():
    OrganizationFactory()
    customer = CustomerFactory()
    invoices = [issue(customer, "25.00") for _ in range(6)]
    credit = note(customer, "60.00")

    applied = _in_threads(6, lambda i: credits_apply_to_invoice(invoice=invoices[i]))

    assert sum(applied, Decimal("0.00")) == Decimal("60.00")
    assert remaining(credit) == Decimal("0.00")
    assert CreditAllocation.objects.aggregate(total=Sum("amount"))["total"] == Decimal("60.00")
    statuses = sorted(Invoice.objects.values_list("status", flat=True))
    assert statuses.count(InvoiceStatus.PAID) == 2
    assert customer_balance(customer) == Decimal("90.00")


@pytest.mark.django_db(transaction=True)
def test_credit_note_issue_concurrent_notes_on_one_invoice_never_exceed_total():
    OrganizationFactory()
    customer = CustomerFactory()
    invoice = issue(customer, "100.00")

    outcomes = _in_threads(6, lambda _i: note(customer, "30.00", invoice=invoice))

    issued = [o for o in outcomes if isinstance(o, CreditNote)]
    refused = [o for o in outcomes if isinstance(o, BillingError)]
    assert len(issued) == 3
    assert all(isinstance(e, ValidationFailed) and e.field == "amount" for e in refused)
    assert CreditNote.objects.aggregate(total=Sum("amount"))["total"] == Decimal("90.00")
    # Gapless: the refused ones took no number.
    assert sorted(n.number for n in issued) == ["CN-000001", "CN-000002", "CN-000003"]
