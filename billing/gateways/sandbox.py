"""The sandbox gateway: a deterministic payment provider for the demo, tests and benchmarks.

It keeps its books in our database (``SandboxCard``, ``SandboxCharge``) so every web process,
worker and test sees one ledger, as they would see one provider. Each test card number selects
a behaviour when it is tokenized; only that behaviour, the brand, the last four digits and the
expiry are kept, never the number or the CVC.

| card number          | brand      | tokenize | charge                                                  |
|----------------------|------------|----------|---------------------------------------------------------|
| 4242 4242 4242 4242  | Visa       | ok       | succeeds                                                |
| 5555 5555 5555 4444  | Mastercard | ok       | succeeds                                                |
| 4000 0000 0000 0002  | Visa       | ok       | fails: `card_declined`, soft decline                    |
| 4000 0000 0000 9995  | Visa       | ok       | fails: `insufficient_funds`, soft decline               |
| 4000 0000 0000 9987  | Visa       | ok       | fails: `lost_card`, hard decline (never retried)        |
| 4000 0000 0000 0341  | Visa       | ok       | every charge fails: `card_declined`, soft decline       |
| 4000 0000 0000 0259  | Visa       | ok       | succeeds in the ledger, but the call raises             |
|                      |            |          | `GatewayTimeout`; `lookup(key)` then reports succeeded  |
| any other Luhn-valid | by prefix  | ok       | succeeds                                                |
| Luhn-invalid         |            | refused  | (no token: `CardInvalid`, field `number`)               |

Any card whose expiry month has passed since it was tokenized fails with `expired_card`, a
hard decline. Tokenizing also refuses an expiry in the past (`CardInvalid`, field `exp`) and a
CVC that is not 3 or 4 digits (field `cvc`); any expiry date in the future and any CVC of the
right length work with every test card.

Idempotency: one ``SandboxCharge`` row per key, guarded by its unique constraint. A second
``charge`` with the same key replays the row (same reference, no new row; for the timeout card
it returns the recorded success instead of timing out again, as a provider that is reachable
again would). Refunds are rows in the same ledger with outcome ``refund``, under their own key;
for them the ``token`` column holds the reference of the charge they return money from.

``settings.SANDBOX_GATEWAY_LATENCY_MS`` makes every call sleep that long first, like a network
round trip (benchmarks use it; default 0).
"""

import logging
import math
import secrets
import time
from collections.abc import Sequence
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from billing.bulk import bulk_insert
from billing.enums import DeclineKind, PaymentStatus, RefundStatus
from billing.gateways.base import (
    CardToken,
    CardUnknown,
    ChargeRequest,
    ChargeResult,
    GatewayError,
    GatewayTimeout,
    IdempotencyConflict,
    PaymentGateway,
    RefundNotPossible,
    RefundResult,
    card_brand,
    card_cvc_check,
    card_expired,
    card_expiry,
    card_number_digits,
    validate_amount,
    validate_currency,
    validate_idempotency_key,
)
from billing.models import SandboxCard, SandboxCharge

logger = logging.getLogger(__name__)

# What a tokenized card does when charged (SandboxCard.behaviour).
SUCCEED = "succeed"
DECLINE = "decline"
INSUFFICIENT_FUNDS = "insufficient_funds"
LOST_CARD = "lost_card"
CHARGE_FAILS = "charge_fails"
TIMEOUT = "timeout"

TEST_CARD_BEHAVIOURS: dict[str, str] = {
    "4242424242424242": SUCCEED,
    "5555555555554444": SUCCEED,
    "4000000000000002": DECLINE,
    "4000000000009995": INSUFFICIENT_FUNDS,
    "4000000000009987": LOST_CARD,
    "4000000000000341": CHARGE_FAILS,
    "4000000000000259": TIMEOUT,
}

# SandboxCharge.outcome values.
OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"
OUTCOME_REFUND = "refund"

# failure_code -> (decline kind, message fit for the customer). A lost card is reported to the
# customer as a plain decline: telling whoever holds it that it was reported lost helps no one.
DECLINES: dict[str, tuple[DeclineKind, str]] = {
    "card_declined": (
        DeclineKind.SOFT,
        "Your card was declined. Please use a different card or contact your bank.",
    ),
    "insufficient_funds": (
        DeclineKind.SOFT,
        "Your card has insufficient funds. Please use a different card or try again later.",
    ),
    "lost_card": (
        DeclineKind.HARD,
        "Your card was declined. Please use a different card.",
    ),
    "expired_card": (
        DeclineKind.HARD,
        "Your card has expired. Please update your card details or use a different card.",
    ),
}

BEHAVIOUR_FAILURE_CODES: dict[str, str] = {
    DECLINE: "card_declined",
    INSUFFICIENT_FUNDS: "insufficient_funds",
    LOST_CARD: "lost_card",
    CHARGE_FAILS: "card_declined",
}


class SandboxGateway(PaymentGateway):
    """The test-card provider described in this module's docstring."""

    name = "sandbox"

    @sensitive_variables("number", "cvc", "digits")
    def tokenize_card(
        self,
        *,
        number: str,
        exp_month: int,
        exp_year: int,
        cvc: str,
        cardholder_name: str = "",
    ) -> CardToken:
        """Validate the card, keep its behaviour and description under a new token; drop the rest."""
        simulate_latency()
        digits = card_number_digits(number)
        exp_month, exp_year = card_expiry(
            exp_month=exp_month, exp_year=exp_year, today=timezone.localdate()
        )
        card_cvc_check(cvc)
        card = SandboxCard.objects.create(
            token=f"tok_sandbox_{secrets.token_hex(16)}",
            behaviour=TEST_CARD_BEHAVIOURS.get(digits, SUCCEED),
            brand=card_brand(digits),
            last4=digits[-4:],
            exp_month=exp_month,
            exp_year=exp_year,
        )
        logger.info("sandbox tokenized %s card ending %s", card.brand, card.last4)
        return CardToken(
            token=card.token,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            cardholder_name=cardholder_name.strip(),
        )

    def charge(
        self, *, token: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge once per key: replay an existing row, else decide by the card and insert one."""
        amount = validate_amount(amount)
        currency = validate_currency(currency)
        idempotency_key = validate_idempotency_key(idempotency_key)
        simulate_latency()

        existing = self._ledger_row(idempotency_key=idempotency_key)
        if existing is not None:
            return charge_replay(existing, token=token, amount=amount, currency=currency)

        card = SandboxCard.objects.filter(token=token).first()
        if card is None:
            raise CardUnknown()
        failure_code = charge_failure_code(card)
        row = SandboxCharge(
            idempotency_key=idempotency_key,
            token=token,
            amount=amount,
            currency=currency,
            outcome=OUTCOME_FAILED if failure_code else OUTCOME_SUCCEEDED,
            failure_code=failure_code,
            reference=f"ch_sandbox_{secrets.token_hex(12)}",
        )
        try:
            # A savepoint when the caller is inside a transaction: a lost race below must not
            # poison the caller's transaction.
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            # Another process inserted this key between our read and our insert; the unique
            # constraint made us wait for it to commit, so its row is there to replay.
            winner = self._ledger_row(idempotency_key=idempotency_key)
            if winner is None:
                raise
            return charge_replay(winner, token=token, amount=amount, currency=currency)

        logger.info(
            "sandbox charge %s key=%s %s %s %s",
            row.reference,
            idempotency_key,
            amount,
            currency,
            row.failure_code or row.outcome,
        )
        if card.behaviour == TIMEOUT:
            # The money moved, but the answer is lost on the way back.
            raise GatewayTimeout()
        return charge_result(row)

    def charge_many(
        self, requests: Sequence[ChargeRequest], *, concurrency: int
    ) -> list[ChargeResult | GatewayError]:
        """``charge`` for a batch, with the ledger read and written in bulk.

        Each request behaves as ``charge`` would (replays, declines, unknown cards, the timeout
        card, a key raced by another process). The latency is that of ``concurrency`` calls in
        flight at once: one round trip per ``concurrency`` requests.
        """
        requests = [
            ChargeRequest(
                token=r.token,
                amount=validate_amount(r.amount),
                currency=validate_currency(r.currency),
                idempotency_key=validate_idempotency_key(r.idempotency_key),
            )
            for r in requests
        ]
        simulate_latency(rounds=math.ceil(len(requests) / max(concurrency, 1)))
        keys = [r.idempotency_key for r in requests]
        existing = {
            row.idempotency_key: row
            for row in SandboxCharge.objects.filter(idempotency_key__in=keys)
        }
        new = [r for r in requests if r.idempotency_key not in existing]
        cards = {c.token: c for c in SandboxCard.objects.filter(token__in={r.token for r in new})}
        rows: dict[str, SandboxCharge] = {}
        for r in new:
            card = cards.get(r.token)
            if card is None or r.idempotency_key in rows:
                continue
            failure_code = charge_failure_code(card)
            rows[r.idempotency_key] = SandboxCharge(
                idempotency_key=r.idempotency_key,
                token=r.token,
                amount=r.amount,
                currency=r.currency,
                outcome=OUTCOME_FAILED if failure_code else OUTCOME_SUCCEEDED,
                failure_code=failure_code,
                reference=f"ch_sandbox_{secrets.token_hex(12)}",
            )
        # A key another process inserted meanwhile keeps its row (ON CONFLICT DO NOTHING): ours
        # is dropped and theirs replayed, as ``charge`` does when it loses the race.
        inserted = bulk_insert(list(rows.values()), ignore_conflicts=True, match="idempotency_key")
        stored = {row.idempotency_key: row for row in inserted}
        lost = [key for key in rows if key not in stored]
        if lost:
            stored.update(
                (row.idempotency_key, row)
                for row in SandboxCharge.objects.filter(idempotency_key__in=lost)
            )
        results: list[ChargeResult | GatewayError] = []
        for r in requests:
            key = r.idempotency_key
            ours = rows.get(key)
            row = existing.get(key) or stored.get(key)
            if row is None:
                results.append(CardUnknown())
            elif ours is not None and row.reference == ours.reference:
                del rows[key]  # a new row answers its first request; repeats replay it
                timed_out = cards[r.token].behaviour == TIMEOUT
                results.append(GatewayTimeout() if timed_out else charge_result(row))
            else:
                try:
                    results.append(
                        charge_replay(row, token=r.token, amount=r.amount, currency=r.currency)
                    )
                except IdempotencyConflict as error:
                    results.append(error)
        logger.info("sandbox charged a batch of %s (%s new)", len(requests), len(inserted))
        return results

    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        """The charge recorded under this key, or ``None`` (refund keys are not charges)."""
        simulate_latency()
        row = self._ledger_row(idempotency_key=idempotency_key)
        if row is None or row.outcome == OUTCOME_REFUND:
            return None
        return charge_result(row)

    def refund(self, *, reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        """Return money from a succeeded charge once per key, never beyond what it charged."""
        amount = validate_amount(amount)
        idempotency_key = validate_idempotency_key(idempotency_key)
        simulate_latency()

        existing = self._ledger_row(idempotency_key=idempotency_key)
        if existing is not None:
            return refund_replay(existing, reference=reference, amount=amount)
        try:
            with transaction.atomic():
                # Locking the charge serializes refunds of it, so two of them can never both
                # fit into the same remaining amount.
                charge = (
                    SandboxCharge.objects.select_for_update()
                    .exclude(outcome=OUTCOME_REFUND)
                    .filter(reference=reference)
                    .first()
                )
                if charge is None:
                    raise RefundNotPossible("This payment was not found, so it cannot be refunded.")
                if charge.outcome != OUTCOME_SUCCEEDED:
                    raise RefundNotPossible("Only a payment that went through can be refunded.")
                # Re-read under the lock: a refund with this key may have committed meanwhile.
                existing = self._ledger_row(idempotency_key=idempotency_key)
                if existing is not None:
                    return refund_replay(existing, reference=reference, amount=amount)
                remaining = charge.amount - charge.refunded_amount
                if amount > remaining:
                    raise RefundNotPossible(
                        f"At most {remaining} {charge.currency} of this payment can still be "
                        "refunded."
                    )
                row = SandboxCharge.objects.create(
                    idempotency_key=idempotency_key,
                    token=charge.reference,
                    amount=amount,
                    currency=charge.currency,
                    outcome=OUTCOME_REFUND,
                    reference=f"re_sandbox_{secrets.token_hex(12)}",
                )
                SandboxCharge.objects.filter(pk=charge.pk).update(
                    refunded_amount=F("refunded_amount") + amount
                )
        except IntegrityError:
            # The same key was used concurrently for a refund of another charge (this charge's
            # lock did not serialize them): whoever committed first owns the key.
            winner = self._ledger_row(idempotency_key=idempotency_key)
            if winner is None:
                raise
            return refund_replay(winner, reference=reference, amount=amount)

        logger.info(
            "sandbox refund %s of %s key=%s %s", row.reference, reference, idempotency_key, amount
        )
        return refund_result(row)

    def ledger_count(self, *, idempotency_key: str | None = None) -> int:
        """How many charges the ledger holds (for one key: 0 or 1); refunds are not counted.

        Tests and ops use it to prove that nothing was charged twice.
        """
        rows = SandboxCharge.objects.exclude(outcome=OUTCOME_REFUND)
        if idempotency_key is not None:
            rows = rows.filter(idempotency_key=idempotency_key)
        return rows.count()

    def _ledger_row(self, *, idempotency_key: str) -> SandboxCharge | None:
        return SandboxCharge.objects.filter(idempotency_key=idempotency_key).first()


def simulate_latency(rounds: int = 1) -> None:
    """Sleep for ``SANDBOX_GATEWAY_LATENCY_MS`` per round trip, standing in for the network."""
    latency_ms = getattr(settings, "SANDBOX_GATEWAY_LATENCY_MS", 0)
    if latency_ms > 0 and rounds > 0:
        time.sleep(latency_ms * rounds / 1000)


def charge_failure_code(card: SandboxCard) -> str:
    """Why a charge of this card fails, or ``""`` when it succeeds."""
    if card_expired(exp_month=card.exp_month, exp_year=card.exp_year, today=timezone.localdate()):
        return "expired_card"
    return BEHAVIOUR_FAILURE_CODES.get(card.behaviour, "")


def charge_result(row: SandboxCharge) -> ChargeResult:
    """The ChargeResult a ledger row stands for; derived, so a replay is identical to the first."""
    if row.outcome == OUTCOME_SUCCEEDED:
        return ChargeResult(
            status=PaymentStatus.SUCCEEDED,
            reference=row.reference,
            idempotency_key=row.idempotency_key,
            amount=row.amount,
            currency=row.currency,
        )
    decline_kind, message = DECLINES.get(row.failure_code, DECLINES["card_declined"])
    return ChargeResult(
        status=PaymentStatus.FAILED,
        reference=row.reference,
        idempotency_key=row.idempotency_key,
        amount=row.amount,
        currency=row.currency,
        failure_code=row.failure_code,
        failure_message=message,
        decline_kind=decline_kind,
    )


def charge_replay(
    row: SandboxCharge, *, token: str, amount: Decimal, currency: str
) -> ChargeResult:
    """The recorded result for a repeated key, if the request repeats the first one exactly."""
    if (
        row.outcome == OUTCOME_REFUND
        or row.token != token
        or row.amount != amount
        or row.currency != currency
    ):
        raise IdempotencyConflict()
    return charge_result(row)


def refund_result(row: SandboxCharge) -> RefundResult:
    return RefundResult(
        status=RefundStatus.SUCCEEDED,
        reference=row.reference,
        charge_reference=row.token,
        idempotency_key=row.idempotency_key,
        amount=row.amount,
        currency=row.currency,
    )


def refund_replay(row: SandboxCharge, *, reference: str, amount: Decimal) -> RefundResult:
    """The recorded refund for a repeated key, if it names the same charge and amount."""
    if row.outcome != OUTCOME_REFUND or row.token != reference or row.amount != amount:
        raise IdempotencyConflict()
    return refund_result(row)
