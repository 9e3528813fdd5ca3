"""Payments: card collection in three steps with the sandbox gateway, declines, bulk payment
across a hierarchy, idempotency, unknown outcomes and reconciliation, offline payments, refunds,
and real concurrency on one invoice.

The sandbox ledger (``SandboxGateway().ledger_count``) is the proof that money moved once.
"""

import datetime
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from billing.enums import (
    DeclineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    RefundStatus,
)
from billing.errors import (
    BillingError,
    InvalidTransition,
    NotAllowed,
    PaymentFailed,
    PaymentInProgress,
    ValidationFailed,
)
from billing.gateways.sandbox import SandboxGateway
from billing.models import (
    Event,
    Invoice,
    InvoicePaymentLock,
    Payment,
    PaymentAllocation,
    Refund,
    SandboxCharge,
)
from billing.selectors import (
    customer_balance,
    customer_credit_balance,
    invoice_balance,
    payments_with_unapplied,
)
from billing.services.credits import credit_note_issue, credit_note_void
from billing.services.dunning import dunning_start
from billing.services.invoices import invoice_create_one_time, invoice_mark_uncollectible
from billing.services.payment_methods import payment_method_add
from billing.services.payments import (
    new_idempotency_key,
    payment_begin,
    payment_collect,
    payment_quote,
    payment_quote_outstanding,
    payment_raise_if_failed,
    payment_reconcile,
    payment_record_offline,
    payment_refund,
)
from tests.factories import CustomerFactory, OrganizationFactory

NOW = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=datetime.UTC)
TODAY = datetime.date(2026, 1, 15)

VISA = "4242424242424242"
DECLINE = "4000000000000002"
LOST_CARD = "4000000000009987"
CHARGE_FAILS = "4000000000000341"
TIMEOUT = "4000000000000259"


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory()


@pytest.fixture
def gateway() -> SandboxGateway:
    return SandboxGateway()


def issue(customer, amount: str) -> Invoice:
    return invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal(amount)
    )


def add_card(customer, number: str = VISA):
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2031, cvc="319"
    )


def collect(payer, invoices, method, key: str | None = None) -> Payment:
    return payment_collect(
        payer=payer,
        invoices=invoices,
        method=method,
        idempotency_key=key or new_idempotency_key(),
    )


def status_of(invoice: Invoice) -> str:
    return Invoice.objects.values_list("status", flat=True).get(pk=invoice.pk)


def unapplied(payment: Payment) -> Decimal:
    return payments_with_unapplied(Payment.objects.filter(pk=payment.pk)).get().unapplied


# ----------------------------------------------------------------------------- card: success
def test_payment_collect_good_card_succeeds_with_receipt_and_pays_invoice(
    customer, gateway, frozen
):
    invoice = issue(customer, "49.99")
    card = add_card(customer)
    key = new_idempotency_key()

    payment = collect(customer, [invoice], card, key)

    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.receipt_number == "RCPT-000001"
    assert (payment.amount, payment.currency, payment.mode) == (
        Decimal("49.99"),
        "USD",
        PaymentMode.CARD,
    )
    assert payment.received_on == TODAY
    assert payment.method_label == "Visa •••• 4242"
    assert payment.gateway_reference.startswith("ch_sandbox_")
    assert status_of(invoice) == InvoiceStatus.PAID
    assert invoice_balance(invoice) == (Decimal("49.99"), Decimal("0.00"), Decimal("0.00"))
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert SandboxCharge.objects.get(idempotency_key=key).amount == Decimal("49.99")
    assert not InvoicePaymentLock.objects.exists()
    assert list(
        Event.objects.filter(payment=payment).order_by("id").values_list("kind", flat=True)
    ) == ["payment.started", "payment.succeeded"]
    assert customer_balance(customer) == Decimal("0.00")


def test_payment_collect_after_success_same_invoice_refused_not_open(customer, gateway):
    invoice = issue(customer, "10.00")
    card = add_card(customer)
    collect(customer, [invoice], card)

    with pytest.raises(InvalidTransition, match="not open for payment"):
        collect(customer, [invoice], card)

    assert gateway.ledger_count() == 1
    assert Payment.objects.count() == 1


def test_payment_collect_partially_credited_invoice_charges_balance_only(customer, gateway):
    invoice = issue(customer, "100.00")
    credit_note_issue(customer=customer, amount=Decimal("30.00"), reason="goodwill")
    from billing.services.credits import credits_apply_to_invoice

    credits_apply_to_invoice(invoice=invoice)
    key = new_idempotency_key()

    payment = collect(customer, [invoice], add_card(customer), key)

    assert payment.amount == Decimal("70.00")
    assert SandboxCharge.objects.get(idempotency_key=key).amount == Decimal("70.00")
    assert status_of(invoice) == InvoiceStatus.PAID


# ----------------------------------------------------------------------------- card: declines
def test_payment_collect_declined_card_fails_soft_invoice_open_lock_released(customer, gateway):
    invoice = issue(customer, "25.00")
    declining = add_card(customer, DECLINE)

    payment = collect(customer, [invoice], declining)

    assert payment.status == PaymentStatus.FAILED
    assert (payment.failure_code, payment.decline_kind) == ("card_declined", DeclineKind.SOFT)
    assert payment.failure_message == (
        "Your card was declined. Please use a different card or contact your bank."
    )
    assert payment.receipt_number is None
    assert status_of(invoice) == InvoiceStatus.OPEN
    assert invoice_balance(invoice)[2] == Decimal("25.00")
    assert not InvoicePaymentLock.objects.exists()
    with pytest.raises(PaymentFailed, match="Your card was declined"):
        payment_raise_if_failed(payment)

    # The lock is gone: another card can pay the invoice right away.
    second = collect(customer, [invoice], add_card(customer))
    assert second.status == PaymentStatus.SUCCEEDED
    assert status_of(invoice) == InvoiceStatus.PAID
    assert customer_balance(customer) == Decimal("0.00")


def test_payment_collect_lost_card_hard_decline_no_dunning_retries(customer):
    invoice = issue(customer, "25.00")

    payment = collect(customer, [invoice], add_card(customer, LOST_CARD))

    assert payment.status == PaymentStatus.FAILED
    assert (payment.failure_code, payment.decline_kind) == ("lost_card", DeclineKind.HARD)
    # The customer is not told the card was reported lost.
    assert "lost" not in payment.failure_message.lower()
    attempts = dunning_start(invoice=invoice, payment=payment)
    assert [(a.attempt_number, a.status) for a in attempts] == [(0, PaymentAttemptStatus.FAILED)]


def test_payment_collect_soft_decline_dunning_schedules_policy_retries(customer, frozen):
    invoice = issue(customer, "25.00")

    payment = collect(customer, [invoice], add_card(customer, DECLINE))
    attempts = dunning_start(invoice=invoice, payment=payment)

    assert [(a.attempt_number, a.status) for a in attempts] == [
        (0, PaymentAttemptStatus.FAILED),
        (1, PaymentAttemptStatus.SCHEDULED),
        (2, PaymentAttemptStatus.SCHEDULED),
        (3, PaymentAttemptStatus.SCHEDULED),
        (4, PaymentAttemptStatus.SCHEDULED),
    ]
    assert [a.scheduled_for.date() for a in attempts[1:]] == [
        datetime.date(2026, 1, 16),
        datetime.date(2026, 1, 18),
        datetime.date(2026, 1, 20),
        datetime.date(2026, 1, 22),
    ]


def test_payment_collect_card_saved_but_charges_fail_declined(customer, gateway):
    invoice = issue(customer, "25.00")
    card = add_card(customer, CHARGE_FAILS)  # saving the card works
    key = new_idempotency_key()

    payment = collect(customer, [invoice], card, key)

    assert card.last4 == "0341"
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_code == "card_declined"
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert status_of(invoice) == InvoiceStatus.OPEN


# ----------------------------------------------------------------------------- hierarchy
def test_payment_collect_parent_pays_visible_children_one_payment_allocated_per_invoice(
    customer, gateway
):
    first_child = CustomerFactory(parent=customer)
    second_child = CustomerFactory(parent=customer)
    own = issue(customer, "10.00")
    first = issue(first_child, "20.00")
    second = issue(second_child, "30.50")
    key = new_idempotency_key()

    payment = collect(customer, [second, own, first], add_card(customer), key)

    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.customer == customer
    assert payment.amount == Decimal("60.50")
    assert sorted(
        PaymentAllocation.objects.filter(payment=payment).values_list("invoice__number", "amount")
    ) == [
        (own.number, Decimal("10.00")),
        (first.number, Decimal("20.00")),
        (second.number, Decimal("30.50")),
    ]
    assert {status_of(i) for i in (own, first, second)} == {InvoiceStatus.PAID}
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert gateway.ledger_count() == 1


def test_payment_quote_outstanding_parent_sees_visible_children_only(customer):
    visible = CustomerFactory(parent=customer)
    hidden = CustomerFactory(parent=customer, hidden_from_parent=True)
    own = issue(customer, "10.00")
    child = issue(visible, "20.00")
    issue(hidden, "40.00")

    quote = payment_quote_outstanding(payer=customer)

    assert {invoice.pk for invoice, _ in quote.invoices} == {own.pk, child.pk}
    assert quote.total == Decimal("30.00")


def test_payment_quote_outstanding_invoice_with_payment_in_flight_left_out(customer):
    settling = issue(customer, "10.00")
    waiting = issue(customer, "20.00")
    collect(customer, [settling], add_card(customer, TIMEOUT))  # unknown until reconciled

    quote = payment_quote_outstanding(payer=customer)
    payment = collect(customer, [invoice for invoice, _ in quote.invoices], add_card(customer))

    assert [invoice.pk for invoice, _ in quote.invoices] == [waiting.pk]
    assert payment.amount == quote.total == Decimal("20.00")
    assert payment.status == PaymentStatus.SUCCEEDED


def test_payment_quote_outstanding_nothing_owed_none(customer):
    issue(customer, "10.00")
    payment_record_offline(customer=customer, amount=Decimal("10.00"), mode=PaymentMode.CASH)

    assert payment_quote_outstanding(payer=customer) is None


def test_payment_collect_hidden_child_invoice_not_allowed_nothing_charged(customer, gateway):
    hidden = CustomerFactory(parent=customer, hidden_from_parent=True)
    invoice = issue(hidden, "20.00")

    with pytest.raises(NotAllowed):
        collect(customer, [invoice], add_card(customer))

    assert not Payment.objects.exists()
    assert gateway.ledger_count() == 0
    assert status_of(invoice) == InvoiceStatus.OPEN


def test_payment_collect_unrelated_customer_invoice_not_allowed(customer, gateway):
    invoice = issue(CustomerFactory(), "20.00")

    with pytest.raises(NotAllowed):
        collect(customer, [invoice], add_card(customer))

    assert not Payment.objects.exists()
    assert gateway.ledger_count() == 0


def test_payment_collect_other_customers_card_not_allowed(customer, gateway):
    invoice = issue(customer, "20.00")
    stranger_card = add_card(CustomerFactory())

    with pytest.raises(NotAllowed):
        collect(customer, [invoice], stranger_card)

    assert not Payment.objects.exists()
    assert gateway.ledger_count() == 0


def test_payment_quote_draft_or_paid_invoice_refused(customer):
    invoice = issue(customer, "20.00")
    payment_record_offline(customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH)

    with pytest.raises(InvalidTransition):
        payment_quote(payer=customer, invoices=[invoice])
    with pytest.raises(ValidationFailed):
        payment_quote(payer=customer, invoices=[])


# ----------------------------------------------------------------------------- idempotency
def test_payment_collect_same_key_twice_same_payment_one_charge(customer, gateway):
    invoice = issue(customer, "15.00")
    card = add_card(customer)
    key = new_idempotency_key()

    first = collect(customer, [invoice], card, key)
    second = collect(customer, [invoice], card, key)

    assert second.pk == first.pk
    assert second.status == PaymentStatus.SUCCEEDED
    assert second.receipt_number == first.receipt_number
    assert Payment.objects.count() == 1
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert Event.objects.filter(kind="payment.succeeded").count() == 1


def test_payment_begin_known_key_of_another_customer_refused(customer):
    invoice = issue(customer, "15.00")
    key = new_idempotency_key()
    collect(customer, [invoice], add_card(customer), key)
    stranger = CustomerFactory()
    stranger_invoice = issue(stranger, "15.00")

    with pytest.raises(NotAllowed):
        payment_begin(
            payer=stranger,
            invoices=[stranger_invoice],
            method=add_card(stranger),
            idempotency_key=key,
        )

    assert status_of(stranger_invoice) == InvoiceStatus.OPEN


# ----------------------------------------------------------------------------- unknown outcomes
def test_payment_collect_timeout_card_unknown_keeps_lock_then_reconciled_once(customer, gateway):
    invoice = issue(customer, "33.00")
    card = add_card(customer, TIMEOUT)
    key = new_idempotency_key()

    payment = collect(customer, [invoice], card, key)

    assert payment.status == PaymentStatus.UNKNOWN
    assert payment.receipt_number is None
    assert status_of(invoice) == InvoiceStatus.OPEN
    assert InvoicePaymentLock.objects.get(invoice=invoice).payment == payment
    with pytest.raises(PaymentInProgress):
        payment_begin(
            payer=customer,
            invoices=[invoice],
            method=add_card(customer),
            idempotency_key=new_idempotency_key(),
        )
    assert Payment.objects.count() == 1

    reconciled = payment_reconcile(payment=payment)

    assert reconciled.pk == payment.pk
    assert reconciled.status == PaymentStatus.SUCCEEDED
    assert reconciled.idempotency_key == key
    assert reconciled.receipt_number == "RCPT-000001"
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert gateway.ledger_count() == 1
    assert status_of(invoice) == InvoiceStatus.PAID
    assert not InvoicePaymentLock.objects.exists()
    assert list(
        Event.objects.filter(payment=payment).order_by("id").values_list("kind", flat=True)
    ) == ["payment.started", "payment.unknown", "payment.succeeded"]


def test_payment_collect_timeout_card_resubmitted_same_key_reconciles_not_recharged(
    customer, gateway
):
    invoice = issue(customer, "33.00")
    card = add_card(customer, TIMEOUT)
    key = new_idempotency_key()
    collect(customer, [invoice], card, key)

    again = collect(customer, [invoice], card, key)

    assert again.status == PaymentStatus.SUCCEEDED
    assert gateway.ledger_count() == 1
    assert status_of(invoice) == InvoiceStatus.PAID


def test_payment_reconcile_worker_died_after_charge_records_success_without_second_charge(
    customer, gateway
):
    invoice = issue(customer, "41.00")
    card = add_card(customer)
    payment, created = payment_begin(
        payer=customer, invoices=[invoice], method=card, idempotency_key=new_idempotency_key()
    )
    assert created
    # The worker charged the card, then died before recording the result.
    gateway.charge(
        token=card.token,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=payment.idempotency_key,
    )
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.PENDING

    reconciled = payment_reconcile(payment=payment)

    assert reconciled.status == PaymentStatus.SUCCEEDED
    assert gateway.ledger_count() == 1
    assert gateway.ledger_count(idempotency_key=payment.idempotency_key) == 1
    assert status_of(invoice) == InvoiceStatus.PAID
    assert not InvoicePaymentLock.objects.exists()


def test_payment_reconcile_worker_died_before_charge_charges_once_with_same_key(customer, gateway):
    invoice = issue(customer, "41.00")
    payment, _ = payment_begin(
        payer=customer,
        invoices=[invoice],
        method=add_card(customer),
        idempotency_key=new_idempotency_key(),
    )

    first = payment_reconcile(payment=payment)
    second = payment_reconcile(payment=payment)

    assert first.status == second.status == PaymentStatus.SUCCEEDED
    assert gateway.ledger_count() == 1
    assert gateway.ledger_count(idempotency_key=payment.idempotency_key) == 1


def test_payment_reconcile_worker_died_after_decline_records_failure_and_unlocks(customer, gateway):
    invoice = issue(customer, "41.00")
    card = add_card(customer, DECLINE)
    payment, _ = payment_begin(
        payer=customer, invoices=[invoice], method=card, idempotency_key=new_idempotency_key()
    )
    gateway.charge(
        token=card.token,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=payment.idempotency_key,
    )

    reconciled = payment_reconcile(payment=payment)

    assert reconciled.status == PaymentStatus.FAILED
    assert reconciled.failure_code == "card_declined"
    assert gateway.ledger_count() == 1
    assert not InvoicePaymentLock.objects.exists()
    assert status_of(invoice) == InvoiceStatus.OPEN


# ----------------------------------------------------------------------------- offline
def test_payment_record_offline_pays_oldest_invoices_first_excess_becomes_credit(
    customer, time_machine
):
    time_machine.move_to(NOW, tick=False)
    oldest = issue(customer, "30.00")
    time_machine.move_to(NOW + datetime.timedelta(days=3), tick=False)
    middle = issue(customer, "50.00")
    time_machine.move_to(NOW + datetime.timedelta(days=6), tick=False)
    newest = issue(customer, "40.00")

    payment = payment_record_offline(
        customer=customer,
        amount=Decimal("130.00"),
        mode=PaymentMode.BANK_TRANSFER,
        reference="TRX-991",
        received_on=datetime.date(2026, 1, 20),
    )

    assert (payment.status, payment.mode, payment.reference) == (
        PaymentStatus.SUCCEEDED,
        PaymentMode.BANK_TRANSFER,
        "TRX-991",
    )
    assert payment.receipt_number == "RCPT-000001"
    assert payment.received_on == datetime.date(2026, 1, 20)
    assert payment.method_label == "Bank transfer"
    assert [status_of(i) for i in (oldest, middle, newest)] == [InvoiceStatus.PAID] * 3
    assert unapplied(payment) == Decimal("10.00")
    assert customer_credit_balance(customer) == Decimal("10.00")
    assert customer_balance(customer) == Decimal("-10.00")


def test_payment_record_offline_short_payment_leaves_newest_partly_paid(customer, time_machine):
    time_machine.move_to(NOW, tick=False)
    oldest = issue(customer, "30.00")
    time_machine.move_to(NOW + datetime.timedelta(days=3), tick=False)
    newest = issue(customer, "50.00")

    payment_record_offline(customer=customer, amount=Decimal("45.00"), mode=PaymentMode.CHECK)

    assert status_of(oldest) == InvoiceStatus.PAID
    assert status_of(newest) == InvoiceStatus.OPEN
    assert invoice_balance(newest) == (Decimal("15.00"), Decimal("0.00"), Decimal("35.00"))
    assert customer_balance(customer) == Decimal("35.00")


def test_payment_record_offline_skips_invoice_with_pending_card_payment(customer, gateway):
    locked = issue(customer, "30.00")
    payment, _ = payment_begin(
        payer=customer,
        invoices=[locked],
        method=add_card(customer),
        idempotency_key=new_idempotency_key(),
    )
    other = issue(customer, "20.00")

    offline = payment_record_offline(
        customer=customer, amount=Decimal("50.00"), mode=PaymentMode.BANK_TRANSFER
    )
    card = payment_reconcile(payment=payment)

    assert card.status == PaymentStatus.SUCCEEDED
    assert status_of(locked) == status_of(other) == InvoiceStatus.PAID
    assert invoice_balance(locked) == (Decimal("30.00"), Decimal("0.00"), Decimal("0.00"))
    assert unapplied(offline) == Decimal("30.00")
    assert customer_credit_balance(customer) == Decimal("30.00")


def test_payment_record_offline_other_customers_invoice_not_allowed_nothing_written(customer):
    own = issue(customer, "10.00")
    foreign = issue(CustomerFactory(), "10.00")

    with pytest.raises(NotAllowed):
        payment_record_offline(
            customer=customer,
            amount=Decimal("5.00"),
            mode=PaymentMode.CASH,
            invoices=[own, foreign],
        )

    assert not Payment.objects.exists()
    assert status_of(own) == InvoiceStatus.OPEN


@pytest.mark.parametrize(
    ("amount", "mode", "field"),
    [
        ("0", PaymentMode.CASH, "amount"),
        ("-10.00", PaymentMode.CASH, "amount"),
        ("10.00", PaymentMode.CARD, "mode"),
        ("10.00", "barter", "mode"),
    ],
)
def test_payment_record_offline_bad_input_refused(customer, amount, mode, field):
    issue(customer, "10.00")

    with pytest.raises(ValidationFailed) as raised:
        payment_record_offline(customer=customer, amount=Decimal(amount), mode=mode)

    assert raised.value.field == field
    assert not Payment.objects.exists()


def test_payment_record_offline_uncollectible_invoice_paid(customer):
    invoice = invoice_mark_uncollectible(invoice=issue(customer, "10.00"))

    payment_record_offline(customer=customer, amount=Decimal("10.00"), mode=PaymentMode.CASH)

    assert status_of(invoice) == InvoiceStatus.PAID


# ----------------------------------------------------------------------------- refunds
def test_payment_refund_overpayment_refunds_up_to_unapplied(customer):
    issue(customer, "70.00")
    payment = payment_record_offline(
        customer=customer, amount=Decimal("100.00"), mode=PaymentMode.BANK_TRANSFER
    )

    with pytest.raises(ValidationFailed, match=r"Only USD 30\.00") as raised:
        payment_refund(payment=payment, amount=Decimal("30.01"))
    assert raised.value.field == "amount"

    refund = payment_refund(payment=payment, amount=Decimal("30.00"), reason="overpaid")

    assert refund.status == RefundStatus.SUCCEEDED
    assert unapplied(payment) == Decimal("0.00")
    assert customer_credit_balance(customer) == Decimal("0.00")
    assert customer_balance(customer) == Decimal("0.00")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    with pytest.raises(ValidationFailed):
        payment_refund(payment=payment, amount=Decimal("0.01"))


def test_payment_refund_paid_card_invoice_via_credit_note_refunded_at_gateway(customer, gateway):
    invoice = issue(customer, "80.00")
    payment = collect(customer, [invoice], add_card(customer))
    note = credit_note_issue(
        customer=customer, amount=Decimal("80.00"), reason="refund", invoice=invoice
    )

    with pytest.raises(ValidationFailed):
        payment_refund(payment=payment, amount=Decimal("80.00"))  # nothing unapplied
    with pytest.raises(ValidationFailed, match=r"At most USD 80\.00"):
        payment_refund(payment=payment, amount=Decimal("80.01"), credit_note=note)

    refund = payment_refund(payment=payment, amount=Decimal("80.00"), credit_note=note)

    assert refund.status == RefundStatus.SUCCEEDED
    assert refund.gateway_reference.startswith("re_sandbox_")
    charge = SandboxCharge.objects.get(idempotency_key=payment.idempotency_key)
    assert charge.refunded_amount == Decimal("80.00")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    assert status_of(invoice) == InvoiceStatus.PAID  # the invoice stays paid; the note corrects it
    assert customer_credit_balance(customer) == Decimal("0.00")
    assert customer_balance(customer) == Decimal("0.00")
    assert gateway.ledger_count() == 1  # refunds are not charges


def test_payment_refund_partial_then_rest_payment_refunded(customer):
    invoice = issue(customer, "50.00")
    payment = payment_record_offline(
        customer=customer, amount=Decimal("50.00"), mode=PaymentMode.CASH
    )
    note = credit_note_issue(
        customer=customer, amount=Decimal("50.00"), reason="refund", invoice=invoice
    )

    payment_refund(payment=payment, amount=Decimal("20.00"), credit_note=note)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED

    payment_refund(payment=payment, amount=Decimal("30.00"), credit_note=note)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    assert Refund.objects.filter(payment=payment, status=RefundStatus.SUCCEEDED).count() == 2
    with pytest.raises(InvalidTransition):
        payment_refund(payment=payment, amount=Decimal("1.00"), credit_note=note)
    assert customer_balance(customer) == Decimal("0.00")


def test_payment_refund_more_than_credit_note_remaining_refused(customer):
    invoice = issue(customer, "100.00")
    payment = payment_record_offline(
        customer=customer, amount=Decimal("100.00"), mode=PaymentMode.BANK_TRANSFER
    )
    note = credit_note_issue(
        customer=customer, amount=Decimal("40.00"), reason="billing_error", invoice=invoice
    )

    with pytest.raises(ValidationFailed, match=r"only USD 40\.00 left") as raised:
        payment_refund(payment=payment, amount=Decimal("40.01"), credit_note=note)

    assert raised.value.field == "amount"
    assert not Refund.objects.exists()
    refund = payment_refund(payment=payment, amount=Decimal("40.00"), credit_note=note)
    assert refund.status == RefundStatus.SUCCEEDED
    assert customer_balance(customer) == Decimal("0.00")
    assert customer_credit_balance(customer) == Decimal("0.00")


def test_payment_refund_more_than_payment_refused(customer):
    payment = payment_record_offline(
        customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH
    )
    note = credit_note_issue(customer=customer, amount=Decimal("50.00"), reason="goodwill")

    with pytest.raises(ValidationFailed, match=r"At most USD 20\.00"):
        payment_refund(payment=payment, amount=Decimal("20.01"), credit_note=note)

    assert not Refund.objects.exists()


def test_payment_refund_void_credit_note_refused(customer):
    payment = payment_record_offline(
        customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH, invoices=[]
    )
    note = credit_note_void(
        credit_note=credit_note_issue(customer=customer, amount=Decimal("20.00"), reason="goodwill")
    )

    with pytest.raises(InvalidTransition):
        payment_refund(payment=payment, amount=Decimal("10.00"), credit_note=note)

    assert not Refund.objects.exists()


def test_payment_refund_other_customers_credit_note_not_allowed(customer):
    payment = payment_record_offline(
        customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH, invoices=[]
    )
    note = credit_note_issue(customer=CustomerFactory(), amount=Decimal("20.00"), reason="goodwill")

    with pytest.raises(NotAllowed):
        payment_refund(payment=payment, amount=Decimal("10.00"), credit_note=note)


def test_payment_refund_failed_payment_refused(customer):
    invoice = issue(customer, "20.00")
    payment = collect(customer, [invoice], add_card(customer, DECLINE))

    with pytest.raises(InvalidTransition):
        payment_refund(payment=payment, amount=Decimal("5.00"))


def test_payment_refund_zero_amount_refused(customer):
    payment = payment_record_offline(
        customer=customer, amount=Decimal("20.00"), mode=PaymentMode.CASH
    )

    with pytest.raises(ValidationFailed) as raised:
        payment_refund(payment=payment, amount=Decimal("0"))

    assert raised.value.field == "amount"


def test_customer_credit_balance_refunded_payment_with_note_backed_refund_consistent(customer):
    """A payment paid out in full through a credit note keeps its own unapplied money as credit."""
    payment = payment_record_offline(
        customer=customer, amount=Decimal("100.00"), mode=PaymentMode.CASH, invoices=[]
    )
    note = credit_note_issue(customer=customer, amount=Decimal("50.00"), reason="goodwill")
    payment_refund(payment=payment, amount=Decimal("50.00"), credit_note=note)
    payment_refund(payment=payment, amount=Decimal("50.00"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED

    # Paid 100, given 50 goodwill, got 100 back: 50 of credit is left.
    assert customer_balance(customer) == Decimal("-50.00")
    assert customer_credit_balance(customer) == Decimal("50.00")
    later = issue(customer, "50.00")
    assert status_of(later) == InvoiceStatus.PAID


# ----------------------------------------------------------------------------- concurrency
def _run_threads(count: int, work) -> list:
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
        # .result() re-raises anything unexpected: a 500 would fail the test here.
        return [future.result() for future in [pool.submit(run, i) for i in range(count)]]


@pytest.mark.django_db(transaction=True)
def test_payment_collect_ten_concurrent_different_keys_one_charge_one_success():
    OrganizationFactory()
    customer = CustomerFactory()
    invoice = issue(customer, "99.00")
    card = add_card(customer)
    keys = [new_idempotency_key() for _ in range(10)]

    outcomes = _run_threads(
        10, lambda i: collect(customer, [Invoice.objects.get(pk=invoice.pk)], card, keys[i])
    )

    succeeded = [o for o in outcomes if isinstance(o, Payment)]
    refused = [o for o in outcomes if isinstance(o, BillingError)]
    assert len(succeeded) == 1
    assert succeeded[0].status == PaymentStatus.SUCCEEDED
    assert len(refused) == 9
    assert all(isinstance(e, PaymentInProgress | InvalidTransition) for e in refused)
    assert SandboxCharge.objects.count() == 1
    assert SandboxCharge.objects.get().amount == Decimal("99.00")
    assert Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count() == 1
    assert Payment.objects.count() == 1
    assert status_of(invoice) == InvoiceStatus.PAID
    assert invoice_balance(invoice) == (Decimal("99.00"), Decimal("0.00"), Decimal("0.00"))
    assert not InvoicePaymentLock.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_payment_collect_ten_concurrent_same_key_one_payment_one_charge():
    OrganizationFactory()
    customer = CustomerFactory()
    invoice = issue(customer, "99.00")
    card = add_card(customer)
    key = new_idempotency_key()

    outcomes = _run_threads(
        10, lambda _i: collect(customer, [Invoice.objects.get(pk=invoice.pk)], card, key)
    )

    assert all(isinstance(o, Payment) for o in outcomes), outcomes
    assert {o.pk for o in outcomes} == {Payment.objects.get().pk}
    assert {o.status for o in outcomes} == {PaymentStatus.SUCCEEDED}
    assert SandboxGateway().ledger_count(idempotency_key=key) == 1
    assert SandboxCharge.objects.count() == 1
    assert status_of(invoice) == InvoiceStatus.PAID
    assert Event.objects.filter(kind="payment.succeeded").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(4))
def test_payment_record_offline_concurrent_with_card_payment_never_pays_twice(round_):
    OrganizationFactory()
    customer = CustomerFactory()
    invoice = issue(customer, "60.00")
    card = add_card(customer)

    def work(index: int):
        if index % 2:
            return collect(customer, [Invoice.objects.get(pk=invoice.pk)], card)
        return payment_record_offline(
            customer=customer, amount=Decimal("60.00"), mode=PaymentMode.BANK_TRANSFER
        )

    # Anything but a clean refusal (a deadlock, an integrity error) fails here.
    _run_threads(8, work)

    paid, credited, balance = invoice_balance(invoice)
    assert (paid + credited, balance) == (Decimal("60.00"), Decimal("0.00"))
    assert status_of(invoice) == InvoiceStatus.PAID
    received = sum(
        Payment.objects.filter(status=PaymentStatus.SUCCEEDED).values_list("amount", flat=True),
        Decimal("0.00"),
    )
    assert customer_credit_balance(customer) == received - Decimal("60.00")
    assert customer_balance(customer) == Decimal("60.00") - received
