"""The sandbox gateway: outcomes per test card, card checks, idempotency, refunds, concurrency.

These run against real PostgreSQL: the exactly-once guarantees rest on its unique constraints
and row locks, which an in-memory fake would not test.
"""

import datetime
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter
from hypothesis import given
from hypothesis import strategies as st

from billing.enums import DeclineKind, PaymentStatus, RefundStatus
from billing.gateways import (
    CardInvalid,
    CardUnknown,
    ChargeRequest,
    ChargeResult,
    GatewayTimeout,
    IdempotencyConflict,
    PaymentGateway,
    RefundNotPossible,
    get_gateway,
    sandbox,
)
from billing.gateways.base import luhn_valid
from billing.gateways.sandbox import SandboxGateway
from billing.models import SandboxCard, SandboxCharge

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
DECLINE = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
LOST_CARD = "4000000000009987"
CHARGE_FAILS = "4000000000000341"
TIMEOUT = "4000000000000259"
DISCOVER = "6011111111111117"
CVC = "7319"
CLEANSED_SUBSTITUTE = SafeExceptionReporterFilter.cleansed_substitute


@pytest.fixture
def gateway() -> SandboxGateway:
    return SandboxGateway()


def future_year() -> int:
    return timezone.localdate().year + 3


def tokenize(gateway: SandboxGateway, number: str = VISA) -> str:
    return gateway.tokenize_card(number=number, exp_month=12, exp_year=future_year(), cvc=CVC).token


def new_key() -> str:
    return f"test-{uuid.uuid4().hex}"


def charge(gateway: SandboxGateway, token: str, *, amount: str = "25.00", key: str | None = None):
    return gateway.charge(
        token=token, amount=Decimal(amount), currency="USD", idempotency_key=key or new_key()
    )


# ----------------------------------------------------------------------------- outcomes by card
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("number", "brand"), [(VISA, "Visa"), (MASTERCARD, "Mastercard"), (DISCOVER, "Discover")]
)
def test_charge_succeeding_card_succeeds_with_one_ledger_row(gateway, number, brand):
    key = new_key()
    card = gateway.tokenize_card(number=number, exp_month=12, exp_year=future_year(), cvc=CVC)

    result = charge(gateway, card.token, key=key)

    assert card.brand == brand
    assert result.status == PaymentStatus.SUCCEEDED
    assert result.succeeded
    assert result.reference.startswith("ch_sandbox_")
    assert (result.amount, result.currency, result.idempotency_key) == (
        Decimal("25.00"),
        "USD",
        key,
    )
    assert (result.failure_code, result.failure_message, result.decline_kind) == ("", "", "")
    assert gateway.ledger_count(idempotency_key=key) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("number", "code", "kind"),
    [
        (DECLINE, "card_declined", DeclineKind.SOFT),
        (INSUFFICIENT_FUNDS, "insufficient_funds", DeclineKind.SOFT),
        (LOST_CARD, "lost_card", DeclineKind.HARD),
        (CHARGE_FAILS, "card_declined", DeclineKind.SOFT),
    ],
)
def test_charge_declining_card_fails_with_code_and_decline_kind(gateway, number, code, kind):
    key = new_key()

    result = charge(gateway, tokenize(gateway, number), key=key)

    assert result.status == PaymentStatus.FAILED
    assert not result.succeeded
    assert result.failure_code == code
    assert result.decline_kind == kind
    assert result.failure_message
    # A decline is still a charge attempt the provider recorded, under its key.
    assert gateway.ledger_count(idempotency_key=key) == 1


@pytest.mark.django_db
def test_charge_lost_card_message_does_not_reveal_lost(gateway):
    result = charge(gateway, tokenize(gateway, LOST_CARD))

    assert "lost" not in result.failure_message.lower()
    assert "stolen" not in result.failure_message.lower()


@pytest.mark.django_db
def test_tokenize_charge_fails_card_attaches_and_every_charge_fails(gateway):
    card = gateway.tokenize_card(number=CHARGE_FAILS, exp_month=12, exp_year=future_year(), cvc=CVC)

    results = [charge(gateway, card.token) for _ in range(3)]

    assert (card.brand, card.last4) == ("Visa", "0341")
    assert [r.failure_code for r in results] == ["card_declined"] * 3


@pytest.mark.django_db
def test_charge_card_expired_since_tokenized_fails_hard(gateway, time_machine):
    time_machine.move_to(datetime.datetime(2026, 1, 15, 12, tzinfo=datetime.UTC), tick=False)
    token = gateway.tokenize_card(number=VISA, exp_month=1, exp_year=2026, cvc=CVC).token
    time_machine.move_to(datetime.datetime(2026, 2, 1, 12, tzinfo=datetime.UTC), tick=False)

    result = charge(gateway, token)

    assert result.status == PaymentStatus.FAILED
    assert (result.failure_code, result.decline_kind) == ("expired_card", DeclineKind.HARD)


@pytest.mark.django_db
def test_charge_unknown_token_raises_card_unknown_and_records_nothing(gateway):
    key = new_key()

    with pytest.raises(CardUnknown):
        charge(gateway, "tok_sandbox_doesnotexist", key=key)

    assert gateway.lookup(idempotency_key=key) is None
    assert gateway.ledger_count() == 0


# ----------------------------------------------------------------------------- tokenizing
@pytest.mark.django_db
def test_tokenize_card_spaced_number_and_short_year_returns_description(gateway):
    year = future_year()

    card = gateway.tokenize_card(
        number="5555 5555-5555 4444",
        exp_month=3,
        exp_year=year % 100,
        cvc="123",
        cardholder_name=" Ada Lovelace ",
    )

    assert card.token.startswith("tok_sandbox_")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (
        "Mastercard",
        "4444",
        3,
        year,
    )
    assert card.cardholder_name == "Ada Lovelace"
    stored = SandboxCard.objects.get(token=card.token)
    assert (stored.brand, stored.last4, stored.behaviour) == ("Mastercard", "4444", "succeed")


@pytest.mark.django_db
def test_tokenize_card_each_call_returns_new_token(gateway):
    assert tokenize(gateway) != tokenize(gateway)


@pytest.mark.django_db
def test_tokenize_card_then_charge_and_refund_stores_no_number_or_cvc(gateway, caplog):
    caplog.set_level("DEBUG")
    spaced = "4000 0000 0000 9995"
    for index, number in enumerate((VISA, MASTERCARD, spaced, TIMEOUT)):
        token = gateway.tokenize_card(
            number=number, exp_month=11, exp_year=future_year(), cvc=CVC
        ).token
        try:
            # Keys without random digits, so any CVC found in them would be a real leak.
            result = charge(gateway, token, key=f"scan-charge-{index}")
        except GatewayTimeout:
            continue
        if result.succeeded:
            gateway.refund(
                reference=result.reference,
                amount=Decimal("5.00"),
                idempotency_key=f"scan-refund-{index}",
            )

    numbers = {VISA, MASTERCARD, spaced, spaced.replace(" ", ""), TIMEOUT}
    rows = [*SandboxCard.objects.values(), *SandboxCharge.objects.values()]
    assert len(rows) == 4 + 4 + 2
    for row in rows:
        for field, value in row.items():
            assert not any(number in str(value) for number in numbers), field
            # Tokens, references and timestamps are random digits; the CVC may occur there by
            # chance, so it is looked for in every other column.
            if field not in {"token", "reference", "created_at"}:
                assert CVC not in str(value), field
    assert not any(number in caplog.text for number in numbers)
    assert CVC not in caplog.text


@pytest.mark.django_db
def test_card_token_repr_holds_no_number_or_cvc(gateway):
    card = gateway.tokenize_card(number=VISA, exp_month=12, exp_year=future_year(), cvc=CVC)

    assert VISA not in repr(card)
    assert CVC not in repr(card)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "number",
    [
        "4242424242424241",  # one digit off: Luhn catches it
        "4242 4242 4242 4243",
        "42424242",  # too short
        "42424242424242424242",  # too long
        "4242x24242424242",
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",  # Arabic-Indic digits are digits to str.isdigit(), not to a card
        "",
    ],
)
def test_tokenize_card_invalid_number_raises_card_invalid_on_number(gateway, number):
    with pytest.raises(CardInvalid) as excinfo:
        gateway.tokenize_card(number=number, exp_month=12, exp_year=future_year(), cvc=CVC)

    assert excinfo.value.field == "number"
    assert excinfo.value.message
    assert SandboxCard.objects.count() == 0
    if number:
        rendered = "".join(traceback.format_exception(excinfo.value))
        assert number not in rendered
        assert number not in repr(excinfo.value)


@pytest.mark.django_db
def test_tokenize_card_error_report_hides_number_and_cvc(gateway):
    # A CVC error is raised after the number was parsed, so the frames hold both.
    with pytest.raises(CardInvalid) as excinfo:
        gateway.tokenize_card(number=VISA, exp_month=12, exp_year=future_year(), cvc="98")

    report = ExceptionReporter(None, excinfo.type, excinfo.value, excinfo.tb)
    frames = {
        frame["function"]: dict(frame["vars"]) for frame in report.get_traceback_data()["frames"]
    }
    # The report lists the frames' variables (what Sentry-like reporters capture too)...
    assert frames["tokenize_card"]["digits"] == repr(CLEANSED_SUBSTITUTE)
    assert frames["card_cvc_check"]["cvc"] == repr(CLEANSED_SUBSTITUTE)
    # ...and nowhere the card's values.
    assert VISA not in repr(frames)
    assert "'98'" not in repr(frames)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("exp_month", "exp_year"),
    [(12, 2025), (1, 2025), (13, 2027), (0, 2027), (6, 2099), (-1, 2027), (6, -5), ("06", 2027)],
)
def test_tokenize_card_bad_or_past_expiry_raises_card_invalid_on_exp(
    gateway, time_machine, exp_month, exp_year
):
    time_machine.move_to(datetime.datetime(2026, 1, 15, 12, tzinfo=datetime.UTC), tick=False)

    with pytest.raises(CardInvalid) as excinfo:
        gateway.tokenize_card(number=VISA, exp_month=exp_month, exp_year=exp_year, cvc=CVC)

    assert excinfo.value.field == "exp"
    assert SandboxCard.objects.count() == 0


@pytest.mark.django_db
def test_tokenize_card_expiring_this_month_is_accepted(gateway, time_machine):
    time_machine.move_to(datetime.datetime(2026, 1, 31, 23, tzinfo=datetime.UTC), tick=False)

    card = gateway.tokenize_card(number=VISA, exp_month=1, exp_year=26, cvc=CVC)

    assert (card.exp_month, card.exp_year) == (1, 2026)


@pytest.mark.django_db
@pytest.mark.parametrize("cvc", ["", "12", "12345", "12a", "١٢٣", 123, None])
def test_tokenize_card_bad_cvc_raises_card_invalid_on_cvc(gateway, cvc):
    with pytest.raises(CardInvalid) as excinfo:
        gateway.tokenize_card(number=VISA, exp_month=12, exp_year=future_year(), cvc=cvc)

    assert excinfo.value.field == "cvc"
    assert SandboxCard.objects.count() == 0


@given(st.text(alphabet="0123456789", min_size=11, max_size=18), st.integers(1, 9))
def test_luhn_valid_changing_check_digit_invalidates_number(payload, offset):
    # Exactly one check digit completes a payload; every other one is rejected.
    valid = [digit for digit in "0123456789" if luhn_valid(payload + digit)]
    assert len(valid) == 1
    wrong = str((int(valid[0]) + offset) % 10)
    assert not luhn_valid(payload + wrong)


# ----------------------------------------------------------------------------- idempotency
@pytest.mark.django_db
@pytest.mark.parametrize("number", [VISA, INSUFFICIENT_FUNDS])
def test_charge_same_key_twice_replays_result_without_new_row(gateway, number):
    token, key = tokenize(gateway, number), new_key()

    first = charge(gateway, token, key=key)
    second = charge(gateway, token, key=key)

    assert second == first
    assert gateway.ledger_count(idempotency_key=key) == 1
    assert gateway.ledger_count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("changed", ["amount", "currency", "token"])
def test_charge_same_key_different_request_raises_idempotency_conflict(gateway, changed):
    token, key = tokenize(gateway), new_key()
    charge(gateway, token, key=key)
    request = {"token": token, "amount": Decimal("25.00"), "currency": "USD"}
    other = {"token": tokenize(gateway, MASTERCARD), "amount": Decimal("25.01"), "currency": "EUR"}

    with pytest.raises(IdempotencyConflict):
        gateway.charge(**{**request, changed: other[changed]}, idempotency_key=key)

    assert gateway.ledger_count() == 1


@pytest.mark.django_db
def test_charge_same_amount_written_differently_replays(gateway):
    token, key = tokenize(gateway), new_key()

    first = gateway.charge(
        token=token, amount=Decimal("25.00"), currency="usd", idempotency_key=key
    )
    second = gateway.charge(token=token, amount=Decimal("25"), currency="USD", idempotency_key=key)

    assert second == first
    assert first.currency == "USD"


@pytest.mark.django_db
def test_charge_inside_caller_transaction_lost_race_keeps_transaction_usable(gateway, monkeypatch):
    token, key = tokenize(gateway), new_key()
    first = charge(gateway, token, key=key)
    # Replay the race a second process loses: its first look finds no row, its insert collides.
    real_ledger_row = SandboxGateway._ledger_row
    misses = iter([True])

    def ledger_row_missing_once(self, *, idempotency_key):
        if next(misses, False):
            return None
        return real_ledger_row(self, idempotency_key=idempotency_key)

    monkeypatch.setattr(SandboxGateway, "_ledger_row", ledger_row_missing_once)

    with transaction.atomic():
        second = charge(gateway, token, key=key)
        # Without a savepoint around the insert this query would fail: transaction aborted.
        rows = SandboxCharge.objects.filter(idempotency_key=key).count()

    assert second == first
    assert rows == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (25.0, TypeError),
        ("25.00", TypeError),
        (Decimal("0.00"), ValueError),
        (Decimal("-5.00"), ValueError),
        (Decimal("25.005"), ValueError),
        (Decimal("NaN"), ValueError),
        (Decimal("1000000000000.00"), ValueError),
    ],
)
def test_charge_malformed_amount_raises_and_records_nothing(gateway, amount, error):
    token = tokenize(gateway)

    with pytest.raises(error):
        gateway.charge(token=token, amount=amount, currency="USD", idempotency_key=new_key())

    assert gateway.ledger_count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("currency", "key"),
    [("US", "k1"), ("U$D", "k2"), ("USD", ""), ("USD", "   "), ("USD", "k" * 101)],
)
def test_charge_malformed_currency_or_key_raises_value_error(gateway, currency, key):
    token = tokenize(gateway)

    with pytest.raises(ValueError):  # noqa: PT011 (several messages; the type is the contract)
        gateway.charge(token=token, amount=Decimal("1.00"), currency=currency, idempotency_key=key)

    assert gateway.ledger_count() == 0


# ----------------------------------------------------------------------------- timeout, lookup
@pytest.mark.django_db
def test_charge_timeout_card_raises_timeout_but_lookup_reports_succeeded(gateway):
    token, key = tokenize(gateway, TIMEOUT), new_key()

    with pytest.raises(GatewayTimeout):
        charge(gateway, token, key=key)
    found = gateway.lookup(idempotency_key=key)

    assert found is not None
    assert found.status == PaymentStatus.SUCCEEDED
    assert (found.amount, found.idempotency_key) == (Decimal("25.00"), key)
    assert gateway.ledger_count(idempotency_key=key) == 1


@pytest.mark.django_db
def test_charge_timeout_card_retried_same_key_returns_recorded_success(gateway):
    token, key = tokenize(gateway, TIMEOUT), new_key()
    with pytest.raises(GatewayTimeout):
        charge(gateway, token, key=key)

    retried = charge(gateway, token, key=key)

    assert retried.succeeded
    assert retried == gateway.lookup(idempotency_key=key)
    assert gateway.ledger_count(idempotency_key=key) == 1


@pytest.mark.django_db
def test_lookup_unknown_key_returns_none(gateway):
    charge(gateway, tokenize(gateway))

    assert gateway.lookup(idempotency_key=new_key()) is None


@pytest.mark.django_db
@pytest.mark.parametrize("number", [VISA, LOST_CARD])
def test_lookup_charged_key_returns_the_charge_result(gateway, number):
    key = new_key()
    result = charge(gateway, tokenize(gateway, number), key=key)

    assert gateway.lookup(idempotency_key=key) == result


# ----------------------------------------------------------------------------- refunds
@pytest.mark.django_db
def test_refund_partial_then_rest_succeeds_and_tracks_refunded_amount(gateway):
    paid = charge(gateway, tokenize(gateway), amount="100.00")

    first = gateway.refund(reference=paid.reference, amount=Decimal("30.00"), idempotency_key="r1")
    rest = gateway.refund(reference=paid.reference, amount=Decimal("70.00"), idempotency_key="r2")

    assert first.status == rest.status == RefundStatus.SUCCEEDED
    assert first.reference != rest.reference
    assert first.reference.startswith("re_sandbox_")
    assert (first.charge_reference, first.amount, first.currency) == (
        paid.reference,
        Decimal("30.00"),
        "USD",
    )
    assert SandboxCharge.objects.get(reference=paid.reference).refunded_amount == Decimal("100.00")
    # Refunds are not charges: the charge count is unchanged.
    assert gateway.ledger_count() == 1


@pytest.mark.django_db
def test_refund_same_key_twice_replays_without_refunding_again(gateway):
    paid = charge(gateway, tokenize(gateway), amount="100.00")

    first = gateway.refund(reference=paid.reference, amount=Decimal("40.00"), idempotency_key="r1")
    second = gateway.refund(reference=paid.reference, amount=Decimal("40.00"), idempotency_key="r1")

    assert second == first
    assert SandboxCharge.objects.get(reference=paid.reference).refunded_amount == Decimal("40.00")


@pytest.mark.django_db
def test_refund_beyond_remaining_amount_raises_refund_not_possible(gateway):
    paid = charge(gateway, tokenize(gateway), amount="100.00")
    gateway.refund(reference=paid.reference, amount=Decimal("60.00"), idempotency_key="r1")

    with pytest.raises(RefundNotPossible) as excinfo:
        gateway.refund(reference=paid.reference, amount=Decimal("40.01"), idempotency_key="r2")

    assert "40.00" in excinfo.value.message
    assert SandboxCharge.objects.get(reference=paid.reference).refunded_amount == Decimal("60.00")
    assert not SandboxCharge.objects.filter(idempotency_key="r2").exists()


@pytest.mark.django_db
def test_refund_same_key_different_amount_raises_idempotency_conflict(gateway):
    paid = charge(gateway, tokenize(gateway), amount="100.00")
    gateway.refund(reference=paid.reference, amount=Decimal("10.00"), idempotency_key="r1")

    with pytest.raises(IdempotencyConflict):
        gateway.refund(reference=paid.reference, amount=Decimal("20.00"), idempotency_key="r1")

    assert SandboxCharge.objects.get(reference=paid.reference).refunded_amount == Decimal("10.00")


@pytest.mark.django_db
def test_refund_of_failed_charge_raises_refund_not_possible(gateway):
    declined = charge(gateway, tokenize(gateway, DECLINE))

    with pytest.raises(RefundNotPossible):
        gateway.refund(reference=declined.reference, amount=Decimal("1.00"), idempotency_key="r1")


@pytest.mark.django_db
def test_refund_unknown_reference_raises_refund_not_possible(gateway):
    with pytest.raises(RefundNotPossible):
        gateway.refund(reference="ch_sandbox_nope", amount=Decimal("1.00"), idempotency_key="r1")


@pytest.mark.django_db
def test_refund_of_a_refund_raises_refund_not_possible(gateway):
    paid = charge(gateway, tokenize(gateway), amount="100.00")
    refund = gateway.refund(reference=paid.reference, amount=Decimal("10.00"), idempotency_key="r1")

    with pytest.raises(RefundNotPossible):
        gateway.refund(reference=refund.reference, amount=Decimal("1.00"), idempotency_key="r2")


@pytest.mark.django_db
def test_refund_and_charge_sharing_a_key_raise_idempotency_conflict(gateway):
    token = tokenize(gateway)
    paid = charge(gateway, token, amount="100.00", key="shared")
    gateway.refund(reference=paid.reference, amount=Decimal("10.00"), idempotency_key="refund-key")

    with pytest.raises(IdempotencyConflict):
        gateway.refund(reference=paid.reference, amount=Decimal("100.00"), idempotency_key="shared")
    with pytest.raises(IdempotencyConflict):
        charge(gateway, token, amount="10.00", key="refund-key")
    assert gateway.lookup(idempotency_key="refund-key") is None


# ----------------------------------------------------------------------------- concurrency
@pytest.mark.django_db(transaction=True)
def test_charge_same_key_from_eight_threads_creates_one_ledger_row():
    gateway = SandboxGateway()
    token, key = tokenize(gateway), new_key()
    start = threading.Barrier(8)

    def charge_in_thread(_: int):
        try:
            start.wait(timeout=10)  # all threads read "no row yet" before any insert
            return charge(gateway, token, key=key)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(charge_in_thread, range(8)))

    assert gateway.ledger_count(idempotency_key=key) == 1
    assert {result.reference for result in results} == {
        SandboxCharge.objects.get(idempotency_key=key).reference
    }
    assert all(result.succeeded for result in results)


@pytest.mark.django_db(transaction=True)
def test_refund_distinct_keys_from_eight_threads_never_exceed_the_charge():
    gateway = SandboxGateway()
    paid = charge(gateway, tokenize(gateway), amount="100.00")
    start = threading.Barrier(8)

    def refund_in_thread(index: int) -> str:
        try:
            start.wait(timeout=10)
            gateway.refund(
                reference=paid.reference, amount=Decimal("30.00"), idempotency_key=f"r{index}"
            )
        except RefundNotPossible:
            return "refused"
        finally:
            connection.close()
        return "refunded"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(refund_in_thread, range(8)))

    assert sorted(outcomes) == ["refunded"] * 3 + ["refused"] * 5
    assert SandboxCharge.objects.get(reference=paid.reference).refunded_amount == Decimal("90.00")
    assert SandboxCharge.objects.filter(outcome="refund").count() == 3


# ----------------------------------------------------------------------------- configuration
@pytest.mark.django_db
def test_charge_with_latency_setting_sleeps_first(gateway, settings):
    token = tokenize(gateway)
    settings.SANDBOX_GATEWAY_LATENCY_MS = 80

    started = time.perf_counter()
    charge(gateway, token)

    assert time.perf_counter() - started >= 0.08


@pytest.mark.parametrize("configured", ["sandbox", ""])
def test_get_gateway_sandbox_or_unset_setting_returns_sandbox(settings, configured):
    settings.PAYMENT_GATEWAY = configured

    gateway = get_gateway()

    assert isinstance(gateway, SandboxGateway)
    assert gateway.name == "sandbox"


def test_get_gateway_by_name_ignores_setting(settings):
    settings.PAYMENT_GATEWAY = "nonexistent"

    assert isinstance(get_gateway("sandbox"), SandboxGateway)


def test_get_gateway_unknown_name_raises_improperly_configured(settings):
    settings.PAYMENT_GATEWAY = "nonexistent"

    with pytest.raises(ImproperlyConfigured, match="nonexistent"):
        get_gateway()


# ----------------------------------------------------------------------------- batches
def request(token: str, *, key: str | None = None, amount: str = "25.00") -> ChargeRequest:
    return ChargeRequest(
        token=token, amount=Decimal(amount), currency="USD", idempotency_key=key or new_key()
    )


@pytest.mark.django_db
def test_charge_many_answers_each_request_as_charge_would_in_order(gateway):
    good, declining, lost, timing_out = (
        tokenize(gateway, n) for n in (VISA, DECLINE, LOST_CARD, TIMEOUT)
    )
    replayed_key, conflicting_key = new_key(), new_key()
    earlier = charge(gateway, good, key=replayed_key)
    charge(gateway, good, key=conflicting_key, amount="10.00")
    repeated, timeout_key = new_key(), new_key()

    results = gateway.charge_many(
        [
            request(good),
            request(declining),
            request(lost),
            request(timing_out, key=timeout_key),
            request("tok_sandbox_unknown"),
            request(good, key=replayed_key),
            request(good, key=conflicting_key, amount="99.00"),
            request(good, key=repeated),
            request(good, key=repeated),
        ],
        concurrency=4,
    )

    assert results[0].status == PaymentStatus.SUCCEEDED
    assert (results[1].status, results[1].failure_code) == (PaymentStatus.FAILED, "card_declined")
    assert results[1].decline_kind == DeclineKind.SOFT
    assert (results[2].failure_code, results[2].decline_kind) == ("lost_card", DeclineKind.HARD)
    assert isinstance(results[3], GatewayTimeout)
    assert isinstance(results[4], CardUnknown)
    assert results[5] == earlier  # replayed: same reference, no new row
    assert isinstance(results[6], IdempotencyConflict)
    assert results[7] == results[8]  # a key twice in one batch: one charge, replayed
    # New rows: the good, declined, lost, timed-out cards' charges and the repeated key's one.
    assert SandboxCharge.objects.count() == 2 + 5
    # The timed-out charge went through; only the answer was lost.
    assert gateway.lookup(idempotency_key=timeout_key).status == PaymentStatus.SUCCEEDED


@pytest.mark.django_db
def test_charge_many_latency_is_one_round_trip_per_concurrency_window(
    gateway, settings, monkeypatch
):
    settings.SANDBOX_GATEWAY_LATENCY_MS = 50
    token = tokenize(gateway)
    slept = []
    monkeypatch.setattr(sandbox.time, "sleep", slept.append)

    gateway.charge_many([request(token) for _ in range(8)], concurrency=4)

    # Two windows of four calls in flight: two round trips, not eight.
    assert slept == [0.1]


class SlowFakeGateway(SandboxGateway):
    """A provider reached over the network: only ``charge``, which sleeps and needs no database."""

    def __init__(self):
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    def charge(self, *, token, amount, currency, idempotency_key):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.02)
            if token == "tok_timeout":
                raise GatewayTimeout()
            return ChargeResult(
                status=PaymentStatus.SUCCEEDED,
                reference=f"ch_{idempotency_key}",
                idempotency_key=idempotency_key,
                amount=amount,
                currency=currency,
            )
        finally:
            with self.lock:
                self.in_flight -= 1


def test_default_charge_many_overlaps_calls_and_keeps_order_and_errors_in_place():
    fake = SlowFakeGateway()
    requests = [request("tok_ok", key=f"k{n}") for n in range(12)]
    requests[5] = request("tok_timeout", key="k5")

    results = PaymentGateway.charge_many(fake, requests, concurrency=4)

    assert [getattr(r, "idempotency_key", None) for r in results] == [
        *(f"k{n}" for n in range(5)),
        None,
        *(f"k{n}" for n in range(6, 12)),
    ]
    assert isinstance(results[5], GatewayTimeout)
    assert fake.most_in_flight == 4
