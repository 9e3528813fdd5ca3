"""Today's billing date: the calendar date in the organization's time zone.

``billing_run --at`` runs due work as of another moment (backfills, the demo, tests): inside
``as_of(moment)`` every billing date is computed from that moment instead of the real clock.
"""

import contextlib
import datetime
from collections.abc import Iterator
from contextvars import ContextVar

from django.utils import timezone

from billing.models import Organization
from billing.periods import local_date

_as_of: ContextVar[datetime.datetime | None] = ContextVar("billing_as_of", default=None)


def now() -> datetime.datetime:
    return _as_of.get() or timezone.now()


@contextlib.contextmanager
def as_of(moment: datetime.datetime) -> Iterator[None]:
    if timezone.is_naive(moment):
        raise ValueError("an aware datetime is required")
    token = _as_of.set(moment)
    try:
        yield
    finally:
        _as_of.reset(token)


def billing_today(organization: Organization | None = None) -> datetime.date:
    organization = organization or Organization.load()
    return local_date(now(), organization.zone)
