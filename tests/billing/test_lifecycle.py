import itertools

import pytest

from billing.enums import InvoiceStatus, PaymentStatus, SubscriptionStatus
from billing.errors import InvalidTransition
from billing.lifecycle import TRANSITIONS, assert_transition, can_transition

S, I, P = SubscriptionStatus, InvoiceStatus, PaymentStatus  # noqa: E741

# The table restated by hand, so a careless edit of lifecycle.py fails here.
ALLOWED = {
    ("subscription", S.FUTURE, S.IN_TRIAL), ("subscription", S.FUTURE, S.LIVE),
    ("subscription", S.FUTURE, S.CANCELLED),
    ("subscription", S.IN_TRIAL, S.LIVE), ("subscription", S.IN_TRIAL, S.EXPIRED),
    ("subscription", S.IN_TRIAL, S.CANCELLED),
    ("subscription", S.LIVE, S.NON_RENEWING), ("subscription", S.LIVE, S.PAUSED),
    ("subscription", S.LIVE, S.PAST_DUE), ("subscription", S.LIVE, S.CANCELLED),
    ("subscription", S.NON_RENEWING, S.LIVE), ("subscription", S.NON_RENEWING, S.PAST_DUE),
    ("subscription", S.NON_RENEWING, S.CANCELLED),
    ("subscription", S.PAUSED, S.LIVE), ("subscription", S.PAUSED, S.CANCELLED),
    ("subscription", S.PAST_DUE, S.LIVE), ("subscription", S.PAST_DUE, S.UNPAID),
    ("subscription", S.PAST_DUE, S.CANCELLED),
    ("subscription", S.UNPAID, S.LIVE), ("subscription", S.UNPAID, S.CANCELLED),
    ("subscription", S.EXPIRED, S.IN_TRIAL), ("subscription", S.EXPIRED, S.LIVE),
    ("subscription", S.EXPIRED, S.CANCELLED),
    ("subscription", S.CANCELLED, S.LIVE),
    ("invoice", I.DRAFT, I.OPEN), ("invoice", I.DRAFT, I.PAID),
    ("invoice", I.OPEN, I.PAID), ("invoice", I.OPEN, I.VOID), ("invoice", I.OPEN, I.UNCOLLECTIBLE),
    ("invoice", I.UNCOLLECTIBLE, I.PAID), ("invoice", I.UNCOLLECTIBLE, I.VOID),
    ("payment", P.PENDING, P.SUCCEEDED), ("payment", P.PENDING, P.FAILED),
    ("payment", P.PENDING, P.UNKNOWN),
    ("payment", P.UNKNOWN, P.SUCCEEDED), ("payment", P.UNKNOWN, P.FAILED),
    ("payment", P.SUCCEEDED, P.REFUNDED),
}  # fmt: skip

STATES = {"subscription": S, "invoice": I, "payment": P}
ALL_PAIRS = [
    (machine, old, new)
    for machine, enum in STATES.items()
    for old, new in itertools.product(enum.values, repeat=2)
]


@pytest.mark.parametrize(("machine", "old", "new"), sorted(ALLOWED))
def test_transition_allowed(machine, old, new):
    assert can_transition(machine, old, new)
    assert_transition(machine, old, new)


@pytest.mark.parametrize(
    ("machine", "old", "new"), [pair for pair in ALL_PAIRS if pair not in ALLOWED]
)
def test_transition_forbidden_raises(machine, old, new):
    assert not can_transition(machine, old, new)
    with pytest.raises(InvalidTransition):
        assert_transition(machine, old, new)


def test_every_status_has_a_row():
    for machine, enum in STATES.items():
        assert set(TRANSITIONS[machine]) == set(enum.values)
