"""Saved cards: add (tokenized, never stored in clear), default card, remove, replace, and what
happens to the subscriptions that pay with them."""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection, models
from django.views.debug import ExceptionReporter

from billing.enums import SubscriptionStatus
from billing.errors import NotAllowed, PaymentInProgress
from billing.gateways import CardInvalid
from billing.models import Customer, Event, Payment, PaymentMethod, SandboxCard, Subscription
from billing.services.invoices import invoice_create_one_time
from billing.services.payment_methods import (
    payment_method_add,
    payment_method_remove,
    payment_method_replace,
    payment_method_set_default,
)
from billing.services.payments import (
    new_idempotency_key,
    payment_begin,
    payment_collect,
    payment_reconcile,
)
from tests.factories import CustomerFactory, OrganizationFactory, SubscriptionFactory

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
TIMEOUT = "4000000000000259"
CVC = "7319"


@pytest.fixture
def customer(organization):
    return CustomerFactory()


def add_card(customer, number: str = VISA, **kwargs) -> PaymentMethod:
    return payment_method_add(
        customer=customer, number=number, exp_month=11, exp_year=2031, cvc=CVC, **kwargs
    )


def default_card_ids(customer) -> list[int]:
    return list(
        PaymentMethod.objects.filter(customer=customer, is_default=True).values_list(
            "pk", flat=True
        )
    )


def subscription_card(subscription: Subscription) -> int | None:
    return Subscription.objects.values_list("payment_method_id", flat=True).get(pk=subscription.pk)


# ----------------------------------------------------------------------------- add
def test_payment_method_add_first_card_becomes_default_second_does_not(customer):
    first = add_card(customer, cardholder_name="  Ada Lovelace ")
    second = add_card(customer, MASTERCARD)

    assert (first.brand, first.last4, first.exp_month, first.exp_year) == ("Visa", "4242", 11, 2031)
    assert first.cardholder_name == "Ada Lovelace"
    assert (first.gateway, first.token.startswith("tok_sandbox_")) == ("sandbox", True)
    assert (second.brand, second.last4) == ("Mastercard", "4444")
    assert default_card_ids(customer) == [first.pk]
    added = Event.objects.filter(kind="payment_method.added", customer=customer).order_by("id")
    assert [e.description for e in added] == [
        "Card Visa •••• 4242 (11/2031) added as default",
        "Card Mastercard •••• 4444 (11/2031) added",
    ]


def test_payment_method_add_make_default_takes_over_default(customer):
    first = add_card(customer)

    second = add_card(customer, MASTERCARD, make_default=True)

    assert default_card_ids(customer) == [second.pk]
    first.refresh_from_db()
    assert not first.is_default


def test_payment_method_add_invalid_number_refused_nothing_stored(customer):
    with pytest.raises(CardInvalid) as raised:
        add_card(customer, "4242424242424241")  # fails the Luhn check

    assert raised.value.field == "number"
    assert not PaymentMethod.objects.exists()
    assert not SandboxCard.objects.exists()
    assert not Event.objects.exists()


def test_payment_method_add_use_for_subscriptions_moves_chargeable_ones_only(customer):
    old = add_card(customer)
    live = SubscriptionFactory(customer=customer, payment_method=old)
    paused = SubscriptionFactory(customer=customer, payment_method=old, paused=True)
    cancelled = SubscriptionFactory(customer=customer, payment_method=old, cancelled=True)
    someone_elses = SubscriptionFactory(payment_method=None)

    new = add_card(customer, MASTERCARD, use_for_subscriptions=True)

    assert subscription_card(live) == new.pk
    assert subscription_card(paused) == new.pk
    assert subscription_card(cancelled) == old.pk
    assert subscription_card(someone_elses) is None
    assert Event.objects.filter(kind="subscription.payment_method_changed").count() == 2


def test_payment_method_add_no_card_number_or_cvc_stored_anywhere(customer):
    method = add_card(customer, VISA, make_default=True)
    payment_method_set_default(method=method)
    invoice = invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal("10.00")
    )
    payment_collect(
        payer=customer, invoices=[invoice], method=method, idempotency_key=new_idempotency_key()
    )

    number_forms = {VISA, "4242 4242 4242 4242", "4242-4242-4242-4242"}
    # Random machine identifiers could contain the CVC's digits by chance; they cannot hold
    # what the customer typed, so only the other text is searched for the CVC.
    random_ids = {"token", "idempotency_key", "reference", "gateway_reference"}
    for model in (PaymentMethod, SandboxCard, Event, Payment):
        assert model.objects.exists(), model
        for row in model.objects.all():
            for field in row._meta.concrete_fields:
                value = getattr(row, field.attname)
                text = json.dumps(value) if isinstance(field, models.JSONField) else str(value)
                assert not any(form in text for form in number_forms), (model, field.name)
                typed = isinstance(field, models.CharField | models.TextField | models.JSONField)
                if typed and field.name not in random_ids:
                    assert CVC not in text, (model, field.name)


def test_payment_method_add_failure_report_hides_card_number_and_cvc(customer):
    """A failure after the card reached the service (here: the customer was deleted meanwhile)
    reports the service's frame without the number or CVC it was given."""
    Customer.objects.filter(pk=customer.pk).delete()
    try:
        add_card(customer, VISA)
    except Customer.DoesNotExist:
        reporter = ExceptionReporter(None, *sys.exc_info())
    else:
        pytest.fail("the card was saved for a deleted customer")

    frames = reporter.get_traceback_data()["frames"]
    service = next(f for f in frames if f["function"] == "payment_method_add")
    shown = dict(service["vars"])
    assert shown["number"] == shown["cvc"] == "'********************'"
    assert shown["exp_year"] == "2031"  # the frame's other values are still shown
    # Nor does any other frame of the application (the test's own helper holds the number).
    ours = [
        f
        for f in frames
        if "/tests/" not in f["filename"] and "/site-packages/" not in f["filename"]
    ]
    assert service in ours
    assert not [f["function"] for f in ours for _, value in f["vars"] if VISA in value]


# ----------------------------------------------------------------------------- default
def test_payment_method_set_default_swaps_the_one_default(customer):
    first = add_card(customer)
    second = add_card(customer, MASTERCARD)

    result = payment_method_set_default(method=second)

    assert result.is_default
    assert default_card_ids(customer) == [second.pk]
    assert Event.objects.filter(kind="payment_method.default").count() == 1

    payment_method_set_default(method=first)
    assert default_card_ids(customer) == [first.pk]


def test_payment_method_set_default_other_customers_default_untouched(customer):
    mine = add_card(customer)
    other_customer = CustomerFactory()
    theirs = add_card(other_customer)
    second = add_card(customer, MASTERCARD)

    payment_method_set_default(method=second)

    assert default_card_ids(other_customer) == [theirs.pk]
    assert default_card_ids(customer) == [second.pk]
    assert mine.pk not in default_card_ids(customer)


# ----------------------------------------------------------------------------- remove
def test_payment_method_remove_only_card_of_auto_charged_live_subscription_refused(customer):
    card = add_card(customer)
    subscription = SubscriptionFactory(customer=customer, payment_method=card, auto_charge=True)

    with pytest.raises(NotAllowed, match="Add another card first, or turn auto-charge off"):
        payment_method_remove(method=card)

    assert PaymentMethod.objects.filter(pk=card.pk).exists()
    assert subscription_card(subscription) == card.pk
    assert not Event.objects.filter(kind="payment_method.removed").exists()


@pytest.mark.parametrize("status", [SubscriptionStatus.PAST_DUE, SubscriptionStatus.IN_TRIAL])
def test_payment_method_remove_only_card_of_chargeable_subscription_refused(customer, status):
    card = add_card(customer)
    SubscriptionFactory(customer=customer, payment_method=card, auto_charge=True, status=status)

    with pytest.raises(NotAllowed):
        payment_method_remove(method=card)

    assert PaymentMethod.objects.filter(pk=card.pk).exists()


def test_payment_method_remove_only_card_without_auto_charge_allowed(customer):
    card = add_card(customer)
    manual = SubscriptionFactory(customer=customer, payment_method=card, auto_charge=False)
    ended = SubscriptionFactory(customer=customer, payment_method=card, cancelled=True)

    payment_method_remove(method=card)

    assert not PaymentMethod.objects.exists()
    assert subscription_card(manual) is None
    assert subscription_card(ended) is None
    assert Event.objects.get(kind="payment_method.removed").customer == customer


def test_payment_method_remove_with_other_card_moves_subscriptions_and_default(customer):
    card = add_card(customer)  # default
    older = add_card(customer, MASTERCARD)
    newer = add_card(customer, "378282246310005")
    first = SubscriptionFactory(customer=customer, payment_method=card, auto_charge=True)
    second = SubscriptionFactory(customer=customer, payment_method=card, auto_charge=True)

    payment_method_remove(method=card)

    assert not PaymentMethod.objects.filter(pk=card.pk).exists()
    # No default remains among the others, so the newest card takes over.
    assert subscription_card(first) == subscription_card(second) == newer.pk
    assert default_card_ids(customer) == [newer.pk]
    assert PaymentMethod.objects.filter(pk=older.pk, is_default=False).exists()
    changed = Event.objects.filter(kind="subscription.payment_method_changed")
    assert {e.subscription_id for e in changed} == {first.pk, second.pk}
    assert all(e.data["after"] == {"payment_method": newer.pk} for e in changed)


def test_payment_method_remove_non_default_card_moves_subscriptions_to_default(customer):
    default = add_card(customer)
    card = add_card(customer, MASTERCARD)
    add_card(customer, "378282246310005")
    subscription = SubscriptionFactory(customer=customer, payment_method=card, auto_charge=True)

    payment_method_remove(method=card)

    assert subscription_card(subscription) == default.pk
    assert default_card_ids(customer) == [default.pk]


def test_payment_method_remove_card_with_payment_in_flight_refused(customer):
    card = add_card(customer, TIMEOUT)
    add_card(customer)
    invoice = invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal("10.00")
    )
    payment = payment_collect(
        payer=customer, invoices=[invoice], method=card, idempotency_key=new_idempotency_key()
    )
    assert payment.status == "unknown"

    with pytest.raises(PaymentInProgress):
        payment_method_remove(method=card)

    assert PaymentMethod.objects.filter(pk=card.pk).exists()
    assert payment_reconcile(payment=payment).status == "succeeded"
    payment_method_remove(method=card)
    assert not PaymentMethod.objects.filter(pk=card.pk).exists()
    # The receipt still names the card after it is gone.
    payment.refresh_from_db()
    assert (payment.method_id, payment.method_label) == (None, "Visa •••• 0259")


def test_payment_method_remove_pending_payment_blocks_until_recorded(customer):
    card = add_card(customer)
    add_card(customer, MASTERCARD)
    invoice = invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal("10.00")
    )
    payment, _ = payment_begin(
        payer=customer, invoices=[invoice], method=card, idempotency_key=new_idempotency_key()
    )

    with pytest.raises(PaymentInProgress):
        payment_method_replace(old=card, new=PaymentMethod.objects.exclude(pk=card.pk).get())

    assert payment_reconcile(payment=payment).status == "succeeded"


# ----------------------------------------------------------------------------- replace
def test_payment_method_replace_moves_every_subscription_and_deletes_old(customer):
    old = add_card(customer)
    new = add_card(customer, MASTERCARD)
    auto = SubscriptionFactory(customer=customer, payment_method=old, auto_charge=True)
    manual = SubscriptionFactory(customer=customer, payment_method=old, auto_charge=False)
    untouched = SubscriptionFactory(customer=customer, payment_method=new)

    moved = payment_method_replace(old=old, new=new)

    assert moved == 2
    assert subscription_card(auto) == subscription_card(manual) == new.pk
    assert subscription_card(untouched) == new.pk
    assert not PaymentMethod.objects.filter(pk=old.pk).exists()
    assert default_card_ids(customer) == [new.pk]
    assert Event.objects.filter(kind="payment_method.removed").count() == 1


def test_payment_method_replace_stale_default_flag_keeps_current_default(customer):
    old = add_card(customer)  # default in this (soon stale) copy
    new = add_card(customer, MASTERCARD)
    third = add_card(customer, "378282246310005")
    payment_method_set_default(method=third)

    payment_method_replace(old=old, new=new)

    assert default_card_ids(customer) == [third.pk]
    assert not PaymentMethod.objects.filter(pk=old.pk).exists()


def test_payment_method_replace_card_of_other_customer_not_allowed(customer):
    old = add_card(customer)
    theirs = add_card(CustomerFactory())

    with pytest.raises(NotAllowed):
        payment_method_replace(old=old, new=theirs)
    with pytest.raises(NotAllowed):
        payment_method_replace(old=old, new=old)

    assert PaymentMethod.objects.filter(pk=old.pk).exists()


# ----------------------------------------------------------------------------- concurrency
@pytest.mark.django_db(transaction=True)
def test_payment_method_add_concurrent_first_cards_exactly_one_default():
    OrganizationFactory()
    customer = CustomerFactory()
    barrier = threading.Barrier(6)

    def add(_index: int) -> int:
        try:
            barrier.wait()
            return add_card(customer).pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(add, range(6)))

    assert PaymentMethod.objects.filter(customer=customer).count() == 6
    assert len(default_card_ids(customer)) == 1
    assert default_card_ids(customer)[0] in ids
