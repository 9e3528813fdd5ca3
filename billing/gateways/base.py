"""The payment gateway interface every adapter implements, its result types and its errors.

Callers follow DESIGN rule 7: commit a pending ``Payment`` with its idempotency key, call
``charge`` with that key outside any database transaction, then record the ``ChargeResult``. A
payment left pending or unknown (a crash, a ``GatewayTimeout``) is reconciled with
``lookup(idempotency_key=...)``, never charged again under a new key.

Card numbers and CVCs pass through ``tokenize_card`` and nowhere else: no result type holds them,
and no error message, log line or ``repr`` may contain them.
"""

import abc
import datetime
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal

from django.views.decorators.debug import sensitive_variables

from billing.enums import DeclineKind, PaymentStatus, RefundStatus
from billing.errors import BillingError

# The largest amount a DecimalField(14, 2) holds: anything above is a bug, not a payment.
MAX_AMOUNT = Decimal("999999999999.99")
# Payment.idempotency_key and SandboxCharge.idempotency_key are both 100 characters.
MAX_IDEMPOTENCY_KEY_LENGTH = 100


# ----------------------------------------------------------------------------- errors
class GatewayError(BillingError):
    """The payment provider refused or could not process a request. Nothing was charged."""

    default_message = "The payment provider could not process this request. Please try again."


class CardInvalid(GatewayError):
    """The card details are wrong; ``field`` is ``"number"``, ``"exp"`` or ``"cvc"``."""

    default_message = "The card details are not valid."


class CardUnknown(GatewayError):
    """The token names no card the gateway knows (removed, or from another gateway)."""

    default_message = "This card is no longer available. Please add it again."


class GatewayTimeout(GatewayError):
    """The provider did not answer in time: the charge may or may not have happened.

    The caller marks the payment unknown and reconciles it later with ``lookup``; it never
    charges again under a new key.
    """

    default_message = (
        "The payment provider did not answer in time. We are checking whether the payment "
        "went through; you will not be charged twice."
    )


class IdempotencyConflict(GatewayError):
    """An idempotency key was reused for a different request (another amount, card or charge)."""

    default_message = "This payment request does not match an earlier one with the same reference."


class RefundNotPossible(GatewayError):
    """The refund names no refundable charge, or would return more than was charged."""

    default_message = "This payment cannot be refunded for that amount."


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True, kw_only=True)
class CardToken:
    """A tokenized card: what a PaymentMethod stores. Never the number or the CVC."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    cardholder_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeResult:
    """What the provider says happened to one charge (one idempotency key).

    ``status`` is ``PaymentStatus.SUCCEEDED``, ``FAILED`` or ``UNKNOWN`` (a provider still
    processing it), so it can be assigned to ``Payment.status`` as is. On failure,
    ``failure_message`` is fit to show the customer and ``decline_kind`` says whether a retry can
    help (soft) or never will (hard); both are ``""`` otherwise, as on ``Payment``.
    """

    status: PaymentStatus
    reference: str
    idempotency_key: str
    amount: Decimal
    currency: str
    failure_code: str = ""
    failure_message: str = ""
    decline_kind: DeclineKind | Literal[""] = ""

    @property
    def succeeded(self) -> bool:
        return self.status == PaymentStatus.SUCCEEDED


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundResult:
    """A refund the provider accepted: ``amount`` of the charge ``charge_reference`` returned."""

    status: RefundStatus
    reference: str
    charge_reference: str
    idempotency_key: str
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """One charge of a batch (``charge_many``): the arguments ``charge`` takes."""

    token: str
    amount: Decimal
    currency: str
    idempotency_key: str


# ----------------------------------------------------------------------------- interface
class PaymentGateway(abc.ABC):
    """A payment provider. Every method is keyword-only and safe to call from any process.

    Methods that move money take an ``idempotency_key``: calling again with the same key and
    the same arguments replays the first result and moves no money; the same key with other
    arguments raises ``IdempotencyConflict``. Implementations raise ``ValueError`` for arguments
    no correct caller sends (a float amount, a blank key): those are bugs, not customer errors.
    """

    # Stored on PaymentMethod.gateway and Payment.gateway; get_gateway() looks it up.
    name: ClassVar[str]

    @abc.abstractmethod
    def tokenize_card(
        self,
        *,
        number: str,
        exp_month: int,
        exp_year: int,
        cvc: str,
        cardholder_name: str = "",
    ) -> CardToken:
        """Validate a card and exchange it for a token; raise ``CardInvalid`` (with ``field``)."""

    @abc.abstractmethod
    def charge(
        self, *, token: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge a tokenized card once per key. A decline is a result, not an exception.

        Raises ``GatewayTimeout`` when the outcome is unknown, ``CardUnknown`` for a token the
        provider does not know, ``IdempotencyConflict`` for a reused key.
        """

    def charge_many(
        self, requests: Sequence[ChargeRequest], *, concurrency: int
    ) -> list[ChargeResult | GatewayError]:
        """Charge a batch (a renewal run's cards), each exactly as ``charge`` would.

        Results come back in the order of ``requests``; a ``GatewayError`` a charge raised is
        returned in its place, so one timeout never hides its neighbours' outcomes. This default
        keeps up to ``concurrency`` calls in flight on threads, so the provider's latency
        overlaps; an adapter with a batch API (or, like the sandbox, a ledger in our database,
        which threads must not share) overrides it.
        """

        def one(request: ChargeRequest) -> ChargeResult | GatewayError:
            try:
                return self.charge(
                    token=request.token,
                    amount=request.amount,
                    currency=request.currency,
                    idempotency_key=request.idempotency_key,
                )
            except GatewayError as error:
                return error

        if len(requests) <= 1 or concurrency <= 1:
            return [one(request) for request in requests]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(requests))) as pool:
            return list(pool.map(one, requests))

    @abc.abstractmethod
    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        """What happened to the charge with this key; ``None`` if the provider never saw it."""

    @abc.abstractmethod
    def refund(self, *, reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        """Return part or all of a succeeded charge, once per key, never more than was charged.

        Raises ``RefundNotPossible`` or ``IdempotencyConflict``.
        """


# ----------------------------------------------------------------------------- argument checks
def validate_amount(amount: Decimal) -> Decimal:
    """Return ``amount`` if it is a positive Decimal in whole cents; raise otherwise (a bug)."""
    # A float has already lost cents by the time it gets here: refuse it rather than round it.
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        raise ValueError(f"amount must be between 0.01 and {MAX_AMOUNT}, got {amount}")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"amount must be in whole cents, got {amount}")
    return amount.quantize(Decimal("0.01"))


def validate_currency(currency: str) -> str:
    """Return the ISO 4217 code upper-cased; raise ``ValueError`` if it is not three letters."""
    code = currency.upper() if isinstance(currency, str) else ""
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValueError(f"currency must be a three-letter ISO 4217 code, got {currency!r}")
    return code


def validate_idempotency_key(idempotency_key: str) -> str:
    """Return the key; raise ``ValueError`` if it is blank or longer than the column allows."""
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise ValueError("idempotency_key must be a non-blank string")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return idempotency_key


# ----------------------------------------------------------------------------- card checks
# Messages a customer sees next to the field; they never echo what was typed.
CARD_NUMBER_INVALID = "The card number is not valid. Please check it and try again."
CARD_EXPIRY_INVALID = "The expiry date is not valid. Please check it and try again."
CARD_EXPIRED = "This card has expired. Please use a different card."
CARD_CVC_INVALID = "The security code (CVC) must be the 3 or 4 digits on your card."
# Issuers print expiry years a few years ahead; decades ahead is a typo.
MAX_EXPIRY_YEARS_AHEAD = 20


@sensitive_variables("number", "digits")
def card_number_digits(number: str) -> str:
    """The card number's digits, spaces and dashes removed; ``CardInvalid`` unless Luhn-valid.

    The result is the card number: keep it in a local called ``number`` or ``digits`` (Django's
    error reports hide those), never store, log or put it in a message.
    """
    digits = number.replace(" ", "").replace("-", "") if isinstance(number, str) else ""
    # isascii() first: str.isdigit() accepts other scripts' digits, which no card uses.
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        raise CardInvalid(CARD_NUMBER_INVALID, field="number")
    if not luhn_valid(digits):
        raise CardInvalid(CARD_NUMBER_INVALID, field="number")
    return digits


@sensitive_variables("digits")
def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every card number carries, catching most typos."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - ord("0")
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@sensitive_variables("digits")
def card_brand(digits: str) -> str:
    """The card network, from the number's prefix (IIN ranges); "Card" when none matches."""
    two, four = int(digits[:2]), int(digits[:4])
    if digits.startswith("4"):
        return "Visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "Mastercard"
    if two in (34, 37):
        return "American Express"
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return "Discover"
    if 3528 <= four <= 3589:
        return "JCB"
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return "Diners Club"
    return "Card"


def card_expiry(*, exp_month: int, exp_year: int, today: datetime.date) -> tuple[int, int]:
    """The expiry as (month, four-digit year); ``CardInvalid(field="exp")`` if wrong or past.

    A card is valid through the last day of its expiry month. Two-digit years mean 20YY.
    """
    valid_types = all(type(value) is int for value in (exp_month, exp_year))
    if not valid_types or not 1 <= exp_month <= 12 or exp_year < 0:
        raise CardInvalid(CARD_EXPIRY_INVALID, field="exp")
    year = exp_year + 2000 if 0 <= exp_year <= 99 else exp_year
    if year > today.year + MAX_EXPIRY_YEARS_AHEAD:
        raise CardInvalid(CARD_EXPIRY_INVALID, field="exp")
    if card_expired(exp_month=exp_month, exp_year=year, today=today):
        raise CardInvalid(CARD_EXPIRED, field="exp")
    return exp_month, year


def card_expired(*, exp_month: int, exp_year: int, today: datetime.date) -> bool:
    """Whether ``today`` is after the card's expiry month."""
    return (exp_year, exp_month) < (today.year, today.month)


@sensitive_variables("cvc")
def card_cvc_check(cvc: str) -> None:
    """``CardInvalid(field="cvc")`` unless the CVC is 3 or 4 ASCII digits."""
    if not (isinstance(cvc, str) and cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
        raise CardInvalid(CARD_CVC_INVALID, field="cvc")
