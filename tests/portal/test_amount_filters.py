"""The built-in ``money`` and ``day`` filters print what ``floatformat:"2g"`` and
``date:"M j, Y"`` print, for every amount and date (they replace them on every page)."""

import datetime
import zoneinfo
from decimal import Decimal

from django.template import engines
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import floatformat
from django.test import override_settings
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from portal.templatetags.amounts import day, money

amounts = st.decimals(
    min_value=Decimal("-10000000000"),
    max_value=Decimal("10000000000"),
    allow_nan=False,
    allow_infinity=False,
    places=4,
)


@given(amounts)
def test_money_prints_what_floatformat_2g_prints(amount):
    assert money(amount) == floatformat(amount, "2g")


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_money_of_whole_numbers_and_their_text(number):
    assert money(number) == floatformat(number, "2g")
    assert money(str(number)) == floatformat(str(number), "2g")


def test_money_of_nothing_is_empty_and_zero_has_no_sign():
    assert money(None) == money("") == money("n/a") == ""
    assert money(Decimal("-0.004")) == money(Decimal("-0.00")) == "0.00"
    assert money(Decimal("1234567.005")) == "1,234,567.01"  # half-up


@given(st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2200, 12, 31)))
def test_day_prints_what_the_date_filter_prints(value):
    assert day(value) == date_filter(value, "M j, Y")


@override_settings(TIME_ZONE="America/New_York")
def test_day_of_a_moment_is_its_date_in_the_organization_time_zone():
    # 02:30 UTC on Mar 6 is still Mar 5 in New York, as the date filter says.
    moment = datetime.datetime(2026, 3, 6, 2, 30, tzinfo=zoneinfo.ZoneInfo("UTC"))
    with timezone.override("America/New_York"):
        rendered = engines["django"].from_string("{{ m|day }} / {{ m|date:'M j, Y' }}")
        assert rendered.render({"m": moment}) == "Mar 5, 2026 / Mar 5, 2026"
    assert day(None) == day("") == ""


def test_the_filters_need_no_load_tag():
    template = engines["django"].from_string("{{ a|money }} on {{ d|day }}")
    assert template.render({"a": Decimal("1500"), "d": datetime.date(2026, 11, 2)}) == (
        "1,500.00 on Nov 2, 2026"
    )
