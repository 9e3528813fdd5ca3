"""The batch jobs' set-based writes (billing/bulk.py) store exactly what the ORM would: every
column, decimals and timestamps to the digit, JSON as JSON, ids in the objects' order."""

import datetime
from decimal import Decimal

import pytest
from django.db import DataError, transaction
from django.utils import timezone

from billing.bulk import bulk_insert, bulk_update_rows
from billing.enums import InvoiceLineKind, PaymentMode, PaymentStatus
from billing.models import Event, Invoice, InvoiceLine, Payment, SandboxCharge
from tests.factories import CustomerFactory, InvoiceFactory, PaymentFactory

pytestmark = pytest.mark.django_db

COLUMNS_SET_BY_THE_DATABASE = {"id"}


def _row(obj) -> dict:
    """Every column of the stored row, as the ORM reads it back."""
    fresh = type(obj).objects.get(pk=obj.pk)
    return {
        f.attname: getattr(fresh, f.attname)
        for f in fresh._meta.concrete_fields
        if f.attname not in COLUMNS_SET_BY_THE_DATABASE
    }


def _payment(customer, key: str) -> Payment:
    return Payment(
        customer=customer,
        amount=Decimal("12.34"),
        currency="EUR",
        mode=PaymentMode.CARD,
        method_label='Visa •••• 4242 «ünïcode» "quoted" \\ back',
        gateway="sandbox",
        idempotency_key=key,
    )


def test_bulk_insert_rows_equal_bulk_create_rows():
    customer = CustomerFactory()
    ours, theirs = _payment(customer, "key-ours"), _payment(customer, "key-theirs")
    bulk_insert([ours])
    Payment.objects.bulk_create([theirs])
    assert ours.pk is not None and not ours._state.adding
    mine, django = _row(ours), _row(theirs)
    for volatile in ("public_id", "idempotency_key", "created_at", "updated_at"):
        assert mine.pop(volatile) is not None
        django.pop(volatile)
    assert mine == django
    assert _row(ours)["public_id"] == ours.public_id


def test_bulk_insert_sets_ids_in_order_and_timestamps_once():
    customer = CustomerFactory()
    payments = [_payment(customer, f"key-{n}") for n in range(5)]
    before = timezone.now()
    inserted = bulk_insert(payments)
    assert inserted == payments
    assert [p.pk for p in payments] == sorted(p.pk for p in payments)
    assert [p.idempotency_key for p in Payment.objects.order_by("pk")] == [
        f"key-{n}" for n in range(5)
    ]
    stamps = {p.created_at for p in payments} | {p.updated_at for p in payments}
    assert len(stamps) == 1 and stamps.pop() >= before
    assert {p.created_at for p in Payment.objects.all()} == {payments[0].created_at}


def test_bulk_insert_takes_the_id_of_a_related_row_saved_after_assignment():
    invoice = InvoiceFactory.build(customer=CustomerFactory(), number="BULK-1")
    line = InvoiceLine(
        invoice=invoice,
        kind=InvoiceLineKind.ONE_TIME,
        description="Set-based",
        quantity=Decimal("3"),
        unit_price=Decimal("1.2345"),
        amount=Decimal("3.70"),
    )
    bulk_insert([invoice])
    bulk_insert([line])
    stored = InvoiceLine.objects.get(pk=line.pk)
    assert stored.invoice_id == invoice.pk == Invoice.objects.get(number="BULK-1").pk
    assert (stored.quantity, stored.unit_price, stored.amount) == (
        Decimal("3"),
        Decimal("1.2345"),
        Decimal("3.70"),
    )


def test_bulk_insert_refuses_an_unsaved_related_row():
    invoice = InvoiceFactory.build(customer=CustomerFactory())
    line = InvoiceLine(
        invoice=invoice, kind=InvoiceLineKind.ONE_TIME, description="x", amount=Decimal("1")
    )
    with pytest.raises(ValueError, match="not saved"):
        bulk_insert([line])


def test_bulk_insert_keeps_json_and_nulls():
    customer = CustomerFactory()
    data = {"before": {"status": "open"}, "after": {"status": "paid", "n": [1, 2.5, None]}}
    event = Event(kind="invoice.paid", description="Paid", customer=customer, data=data)
    bulk_insert([event])
    stored = Event.objects.get(pk=event.pk)
    assert stored.data == data
    assert stored.invoice_id is None and stored.actor_user_id is None
    assert stored.created_at == event.created_at


def test_bulk_insert_ignoring_conflicts_returns_only_the_rows_inserted():
    def charge(key: str, reference: str) -> SandboxCharge:
        return SandboxCharge(
            idempotency_key=key,
            token="tok",
            amount=Decimal("5.00"),
            currency="USD",
            outcome="succeeded",
            reference=reference,
        )

    bulk_insert([charge("taken", "ref-first")])
    ours = [charge("taken", "ref-second"), charge("free", "ref-third")]
    inserted = bulk_insert(ours, ignore_conflicts=True, match="idempotency_key")
    assert [c.idempotency_key for c in inserted] == ["free"]
    assert ours[0].pk is None
    assert SandboxCharge.objects.get(idempotency_key="taken").reference == "ref-first"


def test_bulk_update_rows_writes_only_the_fields_named():
    payments = PaymentFactory.create_batch(3, pending=True)
    processed = timezone.now() - datetime.timedelta(minutes=3)
    for n, payment in enumerate(payments):
        payment.status = PaymentStatus.FAILED
        payment.failure_code = f"code-{n}"
        payment.processed_at = processed
        payment.amount = Decimal("999.99")  # not named: stays as stored
    assert bulk_update_rows(payments, ["status", "failure_code", "processed_at"]) == 3
    for n, payment in enumerate(payments):
        stored = Payment.objects.get(pk=payment.pk)
        assert (stored.status, stored.failure_code, stored.processed_at) == (
            PaymentStatus.FAILED,
            f"code-{n}",
            processed,
        )
        assert stored.amount == Decimal("100.00")


def test_bulk_update_rows_sets_and_clears_foreign_keys():
    payment, other = PaymentFactory(), PaymentFactory()
    event = Event.objects.create(kind="k", description="d", payment=payment)
    event_id = event.pk
    # Events are append-only for the ORM; the helper is how a batch would move a column.
    event.payment = other
    bulk_update_rows([event], ["payment"])
    assert Event.objects.get(pk=event_id).payment_id == other.pk
    event.payment = None
    bulk_update_rows([event], ["payment"])
    assert Event.objects.get(pk=event_id).payment_id is None


def test_bulk_insert_of_nothing_writes_nothing():
    assert bulk_insert([]) == []
    assert bulk_update_rows([], ["status"]) == 0


def test_bulk_insert_refuses_a_value_too_long_for_its_column_as_the_orm_does():
    with pytest.raises(DataError), transaction.atomic():
        bulk_insert([Event(kind="x" * 61, description="d")])
