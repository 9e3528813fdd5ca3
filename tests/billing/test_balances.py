"""Balances are sums of rows: whatever happens to a customer, the ledger adds up.

customer_balance = invoiced − paid − credited + refunded
                 = Σ balance due of open invoices − customer credit,
and no invoice is ever paid beyond its total, no credit note or payment spent beyond its amount.
"""

from decimal import Decimal

import pytest
from django.db.models import OuterRef, Subquery, Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.enums import CreditNoteStatus, InvoiceStatus, PaymentMode, PaymentStatus, RefundStatus
from billing.errors import BillingError
from billing.models import CreditNote, Customer, Invoice, Payment, Refund
from billing.money import ZERO
from billing.selectors import (
    credit_notes_with_remaining,
    customer_balance,
    customer_credit_balance,
    invoice_paid_expression,
    invoices_with_amounts,
    open_invoices,
    payments_with_unapplied,
)
from billing.services.credits import (
    credit_note_issue,
    credit_note_void,
    credits_apply_to_invoice,
    credits_apply_to_open_invoices,
)
from billing.services.invoices import invoice_create_one_time, invoice_void
from billing.services.payments import payment_record_offline, payment_refund
from tests.factories import CustomerFactory

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500.00"), places=2)
picks = st.integers(min_value=0, max_value=20)

operations = st.one_of(
    st.tuples(st.just("invoice"), amounts),
    st.tuples(st.just("offline_payment"), amounts),
    st.tuples(st.just("credit_note"), amounts, st.booleans(), picks),
    st.tuples(st.just("void_invoice"), picks),
    st.tuples(st.just("void_credit_note"), picks),
    st.tuples(st.just("apply_credits")),
    st.tuples(st.just("apply_credit_to_one"), picks),
    st.tuples(st.just("refund_unapplied"), amounts, picks),
    st.tuples(st.just("refund_credit_note"), amounts, picks, picks),
)


def _sum(values) -> Decimal:
    return sum(values, ZERO)


def _pick(rows: list, index: int):
    return rows[index % len(rows)] if rows else None


def run(customer, operation: tuple) -> None:
    """Apply one operation; a refusal (BillingError) is a legitimate outcome that writes nothing."""
    kind, *args = operation
    invoices = list(Invoice.objects.filter(customer=customer).order_by("pk"))
    payments = list(Payment.objects.filter(customer=customer).order_by("pk"))
    notes = list(CreditNote.objects.filter(customer=customer).order_by("pk"))
    try:
        if kind == "invoice":
            invoice_create_one_time(customer=customer, description="Work", unit_price=args[0])
        elif kind == "offline_payment":
            payment_record_offline(customer=customer, amount=args[0], mode=PaymentMode.CHECK)
        elif kind == "credit_note":
            amount, on_invoice, index = args
            origin = _pick(invoices, index) if on_invoice else None
            credit_note_issue(customer=customer, amount=amount, reason="goodwill", invoice=origin)
        elif kind == "void_invoice":
            target = _pick([i for i in invoices if i.status == InvoiceStatus.OPEN], args[0])
            if target is not None:
                invoice_void(invoice=target)
        elif kind == "void_credit_note":
            if (target := _pick(notes, args[0])) is not None:
                credit_note_void(credit_note=target)
        elif kind == "apply_credits":
            credits_apply_to_open_invoices(customer=customer)
        elif kind == "apply_credit_to_one":
            if (target := _pick(invoices, args[0])) is not None:
                credits_apply_to_invoice(invoice=target)
        elif kind == "refund_unapplied":
            amount, index = args
            if (payment := _pick(payments, index)) is not None:
                payment_refund(payment=payment, amount=amount)
        elif kind == "refund_credit_note":
            amount, payment_index, note_index = args
            payment, note = _pick(payments, payment_index), _pick(notes, note_index)
            if payment is not None and note is not None:
                payment_refund(payment=payment, amount=amount, credit_note=note)
    except BillingError:
        pass


def assert_ledger_adds_up(customer) -> None:
    invoices = list(invoices_with_amounts(Invoice.objects.filter(customer=customer)))
    payments = list(payments_with_unapplied(Payment.objects.filter(customer=customer)))
    notes = list(credit_notes_with_remaining(CreditNote.objects.filter(customer=customer)))

    invoiced = _sum(
        i.total for i in invoices if i.status not in (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
    )
    paid = _sum(
        p.amount for p in payments if p.status in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)
    )
    credited = _sum(n.amount for n in notes if n.status == CreditNoteStatus.ISSUED)
    refunded = _sum(
        Refund.objects.filter(
            payment__customer=customer, status=RefundStatus.SUCCEEDED
        ).values_list("amount", flat=True)
    )
    balance = customer_balance(customer)
    assert balance == invoiced - paid - credited + refunded

    outstanding = _sum(i.balance_due for i in open_invoices([customer]))
    assert balance == outstanding - customer_credit_balance(customer)

    for invoice in invoices:
        assert invoice.amount_paid + invoice.credits_applied <= invoice.total, invoice
        if invoice.status == InvoiceStatus.PAID:
            assert invoice.balance_due == ZERO, invoice
        if invoice.status == InvoiceStatus.OPEN:
            assert invoice.balance_due > ZERO, invoice
    for note in notes:
        assert note.remaining >= ZERO, note
        if note.invoice_id is not None:
            on_invoice = _sum(
                n.amount
                for n in notes
                if n.invoice_id == note.invoice_id and n.status == CreditNoteStatus.ISSUED
            )
            assert on_invoice <= note.invoice.total
    for payment in payments:
        assert payment.unapplied >= ZERO, payment
        refunds = _sum(
            payment.refunds.exclude(status=RefundStatus.FAILED).values_list("amount", flat=True)
        )
        assert refunds <= payment.amount, payment


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(operations, min_size=1, max_size=12))
def test_customer_balance_any_sequence_of_operations_ledger_adds_up(organization, steps):
    customer = CustomerFactory()  # a fresh customer per example keeps examples independent

    for step in steps:
        run(customer, step)
        assert_ledger_adds_up(customer)


def two_invoices_paid_150():
    """A customer with invoices of 120.00 and 80.00 and a 150.00 bank transfer applied to them."""
    customer = CustomerFactory()
    first = invoice_create_one_time(
        customer=customer, description="Work", unit_price=Decimal("120.00")
    )
    second = invoice_create_one_time(
        customer=customer, description="Work", unit_price=Decimal("80.00")
    )
    payment = payment_record_offline(
        customer=customer, amount=Decimal("150.00"), mode=PaymentMode.BANK_TRANSFER
    )
    return customer, first, second, payment


def test_customer_balance_worked_example_every_formula_agrees(organization):
    customer, first, second, payment = two_invoices_paid_150()
    credit_note_issue(
        customer=customer, amount=Decimal("20.00"), reason="billing_error", invoice=second
    )
    credits_apply_to_open_invoices(customer=customer)
    invoice_void(invoice=second)

    first.refresh_from_db()
    assert first.status == InvoiceStatus.PAID
    # Invoiced 120 − paid 150 − credited 20 = −50: the 30 released from the void invoice plus
    # the unused 20 credit note.
    assert customer_balance(customer) == Decimal("-50.00")
    assert customer_credit_balance(customer) == Decimal("50.00")
    refund = payment_refund(payment=payment, amount=Decimal("30.00"))
    assert refund.status == RefundStatus.SUCCEEDED
    assert customer_balance(customer) == Decimal("-20.00")
    assert_ledger_adds_up(customer)


def test_invoice_amounts_stay_right_when_the_query_nests_in_another(organization):
    # Oldest first: 120.00 pays the first, 30.00 goes to the second.
    customer, first, second, _payment = two_invoices_paid_150()

    owing = invoices_with_amounts(Invoice.objects.filter(customer=customer)).filter(
        balance_due__gt=0
    )
    # As a subquery of another invoice query the tables are aliased anew: each invoice's sums
    # must still be its own.
    outer = invoices_with_amounts(Invoice.objects.filter(pk__in=owing.values("pk")))
    assert [(i.pk, i.amount_paid, i.balance_due) for i in outer] == [
        (second.pk, Decimal("30.00"), Decimal("50.00"))
    ]
    # Inside another query over invoices, the subquery's sums are those of its own rows, not of
    # the outer query's.
    second_due = invoices_with_amounts(Invoice.objects.filter(pk=second.pk)).values("balance_due")
    row = Invoice.objects.filter(pk=first.pk).annotate(other_due=Subquery(second_due)).get()
    assert row.other_due == Decimal("50.00")
    owed = (
        invoices_with_amounts(Invoice.objects.filter(customer=OuterRef("pk")))
        .order_by()
        .values("customer")
        .annotate(owed=Sum("balance_due"))
        .values("owed")
    )
    assert Customer.objects.annotate(owed=Subquery(owed)).get(pk=customer.pk).owed == Decimal(
        "50.00"
    )


def test_invoice_amounts_annotate_invoices_only(organization):
    with pytest.raises(TypeError, match="invoice querysets only"):
        list(Payment.objects.annotate(paid=invoice_paid_expression()))
