"""Billing-period date math. Pure functions over ``datetime.date``; no database, no clock.

Periods are counted from the anchor, never from the previous period's end (DESIGN rule 3): the
n-th boundary of a monthly plan anchored on Jan 31 is the 31st clamped to the month's last day —
Jan 31 → Feb 28 (29) → Mar 31 → Apr 30 — so a short month never drags later dates earlier.
A yearly Feb 29 anchor bills on Feb 28 in other years. Ends are exclusive: a period is
[start, end), and the next period starts on the same day the previous one ends.
"""

import calendar
import datetime
from dataclasses import dataclass

from billing.enums import Interval


@dataclass(frozen=True)
class Period:
    start: datetime.date
    end: datetime.date  # exclusive: the next billing date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def days_left(self, on: datetime.date) -> int:
        """Days of this period from ``on`` (inclusive) to the end; 0 if ``on`` is past it."""
        return max(0, (self.end - max(on, self.start)).days)


def _add_months(anchor: datetime.date, months: int) -> datetime.date:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return datetime.date(year, month, day)


def boundary(anchor: datetime.date, interval: str, count: int, n: int) -> datetime.date:
    """The n-th billing date after ``anchor`` (n = 0 is the anchor itself; n may be negative)."""
    if count < 1:
        raise ValueError("interval count must be at least 1")
    if interval == Interval.WEEK:
        return anchor + datetime.timedelta(weeks=count * n)
    if interval == Interval.MONTH:
        return _add_months(anchor, count * n)
    if interval == Interval.YEAR:
        return _add_months(anchor, 12 * count * n)
    raise ValueError(f"unknown interval {interval!r}")


def period_index(anchor: datetime.date, interval: str, count: int, on: datetime.date) -> int:
    """The index n of the period [boundary(n), boundary(n + 1)) that contains ``on``."""
    if interval == Interval.WEEK:
        n = (on - anchor).days // (7 * count)
    else:
        months = (on.year - anchor.year) * 12 + (on.month - anchor.month)
        n = months // (count * (12 if interval == Interval.YEAR else 1))
    # The estimate is off by at most one around clamped month ends; settle it exactly.
    while boundary(anchor, interval, count, n) > on:
        n -= 1
    while boundary(anchor, interval, count, n + 1) <= on:
        n += 1
    return n


def period_containing(
    anchor: datetime.date, interval: str, count: int, on: datetime.date
) -> Period:
    n = period_index(anchor, interval, count, on)
    return Period(boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1))


def period_starting(
    anchor: datetime.date, interval: str, count: int, start: datetime.date
) -> Period:
    """The period that begins on ``start``; ``start`` must be a billing date of this anchor."""
    period = period_containing(anchor, interval, count, start)
    if period.start != start:
        raise ValueError(f"{start} is not a billing date of a schedule anchored on {anchor}")
    return period


def next_period(anchor: datetime.date, interval: str, count: int, current: Period) -> Period:
    return period_starting(anchor, interval, count, current.end)


def local_date(moment: datetime.datetime, zone: datetime.tzinfo) -> datetime.date:
    """The calendar date of an aware ``moment`` in the organization's time zone."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(zone).date()


def start_of_day(day: datetime.date, zone: datetime.tzinfo) -> datetime.datetime:
    """The aware instant a billing date begins in ``zone`` (23 or 25 hours long across DST)."""
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)
