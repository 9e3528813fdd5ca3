"""``money`` and ``day``: the portal's, documents' and emails' amounts and dates, built in.

They print exactly what ``floatformat:"2g"`` and ``date:"M j, Y"`` print (English, as every page
is) at a fraction of the cost: a page of invoices runs them a hundred times, and those two
filters go through the localization machinery on every call.
"""

from decimal import Decimal, InvalidOperation

from django import template

from portal.formatting import amount_text, short_date

register = template.Library()


@register.filter(is_safe=True)
def money(value) -> str:
    """1,234.50 — rounded half-up to the cent, thousands separated; "" for no amount."""
    if value is None or value == "":
        return ""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        return ""
    if not amount.is_finite():
        return ""
    return amount_text(amount)


@register.filter(expects_localtime=True)
def day(value) -> str:
    """Mar 5, 2026 — a date, or a moment in the organization's time zone; "" for none."""
    if not value:
        return ""
    try:
        return short_date(value)
    except AttributeError:
        return ""
