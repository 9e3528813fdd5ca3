"""Dates and amounts as the portal's templates print them, for tables built in Python.

``short_date`` is the ``date:"M j, Y"`` filter and ``amount_text`` ``floatformat:2|intcomma``
(English, as the portal is), without the filters' per-call overhead: a page of fifty statement
lines would spend more on those than on its query.
"""

import datetime
from decimal import Decimal

from django.utils.dates import MONTHS_3

_MONTHS = {number: str(name).title() for number, name in MONTHS_3.items()}


def month_name(day: datetime.date) -> str:
    """Mar (``date:"M"``)."""
    return _MONTHS[day.month]


def short_date(day: datetime.date) -> str:
    """Mar 5, 2026."""
    return f"{_MONTHS[day.month]} {day.day}, {day.year}"


def amount_text(amount: Decimal) -> str:
    """-1,234.50: rounded half-up to the cent, thousands separated."""
    rounded = amount.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    return f"{rounded if rounded else abs(rounded):,.2f}"  # never "-0.00"
