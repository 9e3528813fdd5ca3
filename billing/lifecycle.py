"""Every allowed status transition, in one table. Pure Python; services call ``assert_transition``.

Anything not listed is refused. The reason a transition happens (trial ended, dunning, a
customer's click) is the service's business; this table only says which moves exist at all.
"""

from billing.enums import InvoiceStatus as I
from billing.enums import PaymentStatus as P
from billing.enums import SubscriptionStatus as S
from billing.errors import InvalidTransition

TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "subscription": {
        S.FUTURE: frozenset({S.IN_TRIAL, S.LIVE, S.CANCELLED}),
        # In trial: converted or paid at trial end → live; unpaid trial end → expired.
        S.IN_TRIAL: frozenset({S.LIVE, S.EXPIRED, S.CANCELLED}),
        S.LIVE: frozenset({S.NON_RENEWING, S.PAUSED, S.PAST_DUE, S.CANCELLED}),
        # Non-renewing: undo the scheduled cancellation → live; term end → cancelled.
        S.NON_RENEWING: frozenset({S.LIVE, S.PAST_DUE, S.CANCELLED}),
        S.PAUSED: frozenset({S.LIVE, S.CANCELLED}),
        # Past due: paid by any route → live; the dunning policy's final action → the rest.
        S.PAST_DUE: frozenset({S.LIVE, S.UNPAID, S.CANCELLED}),
        S.UNPAID: frozenset({S.LIVE, S.CANCELLED}),
        # Expired after trial: extended → in trial again; reactivated → live.
        S.EXPIRED: frozenset({S.IN_TRIAL, S.LIVE, S.CANCELLED}),
        S.CANCELLED: frozenset({S.LIVE}),
    },
    "invoice": {
        I.DRAFT: frozenset({I.OPEN, I.PAID}),  # a zero or fully credited invoice is paid at once
        I.OPEN: frozenset({I.PAID, I.VOID, I.UNCOLLECTIBLE}),
        I.UNCOLLECTIBLE: frozenset({I.PAID, I.VOID}),
        I.PAID: frozenset(),
        I.VOID: frozenset(),
    },
    "payment": {
        P.PENDING: frozenset({P.SUCCEEDED, P.FAILED, P.UNKNOWN}),
        # Unknown (gateway timeout) is settled by asking the gateway about the same key.
        P.UNKNOWN: frozenset({P.SUCCEEDED, P.FAILED}),
        P.SUCCEEDED: frozenset({P.REFUNDED}),
        P.FAILED: frozenset(),
        P.REFUNDED: frozenset(),
    },
}


def can_transition(machine: str, old: str, new: str) -> bool:
    return new in TRANSITIONS[machine].get(old, frozenset())


def assert_transition(machine: str, old: str, new: str, message: str | None = None) -> None:
    """Raise ``InvalidTransition`` (with a customer-fit message) unless old → new is allowed."""
    if not can_transition(machine, old, new):
        raise InvalidTransition(message or f"A {machine} cannot go from {old} to {new}.")
