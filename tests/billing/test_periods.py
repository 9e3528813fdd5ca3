import datetime
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.enums import Interval
from billing.periods import (
    Period,
    boundary,
    local_date,
    next_period,
    period_containing,
    period_starting,
    start_of_day,
)

d = datetime.date


def test_monthly_anchor_on_31st_clamps_to_month_end_and_recovers():
    dates = [boundary(d(2026, 1, 31), Interval.MONTH, 1, n) for n in range(6)]
    assert dates == [
        d(2026, 1, 31),
        d(2026, 2, 28),
        d(2026, 3, 31),
        d(2026, 4, 30),
        d(2026, 5, 31),
        d(2026, 6, 30),
    ]


def test_monthly_anchor_on_31st_in_leap_year_bills_feb_29():
    assert boundary(d(2028, 1, 31), Interval.MONTH, 1, 1) == d(2028, 2, 29)
    assert boundary(d(2028, 1, 31), Interval.MONTH, 1, 2) == d(2028, 3, 31)


def test_yearly_anchor_on_feb_29_bills_feb_28_in_common_years():
    dates = [boundary(d(2028, 2, 29), Interval.YEAR, 1, n) for n in range(5)]
    assert dates == [d(2028, 2, 29), d(2029, 2, 28), d(2030, 2, 28), d(2031, 2, 28), d(2032, 2, 29)]


def test_weekly_and_multi_month_intervals():
    assert boundary(d(2026, 1, 1), Interval.WEEK, 2, 3) == d(2026, 2, 12)
    assert boundary(d(2026, 1, 31), Interval.MONTH, 3, 1) == d(2026, 4, 30)
    assert boundary(d(2026, 1, 31), Interval.MONTH, 3, -1) == d(2025, 10, 31)


def test_period_containing_a_clamped_boundary_day():
    anchor = d(2026, 1, 31)
    assert period_containing(anchor, Interval.MONTH, 1, d(2026, 2, 27)) == Period(
        d(2026, 1, 31), d(2026, 2, 28)
    )
    assert period_containing(anchor, Interval.MONTH, 1, d(2026, 2, 28)) == Period(
        d(2026, 2, 28), d(2026, 3, 31)
    )
    assert period_containing(anchor, Interval.MONTH, 1, d(2026, 3, 30)).start == d(2026, 2, 28)


def test_period_starting_refuses_a_day_that_is_not_a_billing_date():
    with pytest.raises(ValueError, match="not a billing date"):
        period_starting(d(2026, 1, 31), Interval.MONTH, 1, d(2026, 3, 1))


def test_period_days_left_counts_from_the_change_day():
    term = Period(d(2026, 4, 5), d(2026, 5, 5))
    assert term.days == 30
    assert term.days_left(d(2026, 4, 15)) == 20
    assert term.days_left(d(2026, 5, 5)) == 0
    assert term.days_left(d(2026, 3, 1)) == 30


def test_billing_date_across_dst_follows_the_organization_time_zone():
    new_york = zoneinfo.ZoneInfo("America/New_York")
    # 03:30 UTC on Mar 8 2026 is still Mar 7 in New York (EST, UTC-5), hours before DST starts.
    assert local_date(datetime.datetime(2026, 3, 8, 3, 30, tzinfo=datetime.UTC), new_york) == d(
        2026, 3, 7
    )
    # After the switch (EDT, UTC-4) the local day begins at 04:00 UTC, not 05:00.
    assert start_of_day(d(2026, 3, 9), new_york).astimezone(datetime.UTC).hour == 4
    assert start_of_day(d(2026, 3, 7), new_york).astimezone(datetime.UTC).hour == 5
    # Aware datetimes subtract by wall clock within one zone; compare real elapsed time in UTC.
    day_of_switch = start_of_day(d(2026, 3, 9), new_york).astimezone(datetime.UTC) - start_of_day(
        d(2026, 3, 8), new_york
    ).astimezone(datetime.UTC)
    assert day_of_switch == datetime.timedelta(hours=23)


def test_local_date_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="aware"):
        local_date(datetime.datetime(2026, 1, 1), datetime.UTC)


anchors = st.dates(min_value=d(2000, 1, 1), max_value=d(2090, 12, 31))
intervals = st.sampled_from([Interval.WEEK, Interval.MONTH, Interval.YEAR])
counts = st.integers(min_value=1, max_value=12)


@given(anchor=anchors, interval=intervals, count=counts, steps=st.integers(1, 40))
def test_periods_tile_time_without_gap_or_overlap(anchor, interval, count, steps):
    period = period_starting(anchor, interval, count, anchor)
    for _ in range(steps):
        following = next_period(anchor, interval, count, period)
        assert following.start == period.end  # no gap, no overlap
        assert following.end > following.start
        period = following


@given(anchor=anchors, interval=intervals, count=counts, offset=st.integers(-2000, 4000))
def test_every_day_lies_in_exactly_the_period_that_contains_it(anchor, interval, count, offset):
    day = anchor + datetime.timedelta(days=offset)
    if not d(1990, 1, 1) <= day <= d(2099, 1, 1):
        return
    period = period_containing(anchor, interval, count, day)
    assert period.start <= day < period.end
    # Boundaries keep the anchor's day of month, clamped to shorter months.
    if interval != Interval.WEEK:
        assert period.start.day == min(anchor.day, _month_length(period.start))


def _month_length(day: datetime.date) -> int:
    import calendar

    return calendar.monthrange(day.year, day.month)[1]
