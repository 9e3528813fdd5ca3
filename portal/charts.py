"""A small server-rendered SVG bar chart: no JavaScript, no inline styles (CSP-friendly).

Coordinates and labels are formatted here, once, so the template only places strings.
"""

import datetime
from dataclasses import dataclass
from decimal import Decimal

from portal.formatting import amount_text, month_name


@dataclass(frozen=True)
class Bar:
    x: str
    y: str
    height: str
    width: str
    css: str
    label: str


@dataclass(frozen=True)
class MonthBars:
    month: datetime.date
    billed: Decimal
    paid: Decimal
    bars: tuple[Bar, Bar]
    label_x: str
    label: str  # the month's abbreviation under its bars


def last_months(today: datetime.date, count: int = 12) -> list[datetime.date]:
    first = today.replace(day=1)
    months = []
    for back in range(count - 1, -1, -1):
        index = first.year * 12 + first.month - 1 - back
        months.append(datetime.date(index // 12, index % 12 + 1, 1))
    return months


def _coordinate(value: float) -> str:
    return f"{value:.1f}"


def billed_and_paid_chart(rows: list[dict], months: list[datetime.date], *, width=720, height=200):
    """Two bars per month (billed, paid) scaled to the largest amount; returns drawing data."""
    by_month = {row["month"]: row for row in rows}
    values = [
        (by_month.get(m, {}).get("billed", Decimal(0)), by_month.get(m, {}).get("paid", Decimal(0)))
        for m in months
    ]
    top = max([max(b, p) for b, p in values] + [Decimal(1)])
    plot_height = height - 30
    slot = width / len(months)
    bar_width = slot * 0.35
    result = []
    description = []
    for i, (month, (billed, paid)) in enumerate(zip(months, values, strict=True)):
        x = i * slot + slot * 0.1
        name = f"{month_name(month)} {month.year}"
        bars = []
        for offset, amount, css, kind in (
            (0, billed, "bar-billed", "billed"),
            (bar_width, paid, "bar-paid", "paid"),
        ):
            h = float(amount / top) * plot_height
            bars.append(
                Bar(
                    _coordinate(x + offset),
                    _coordinate(plot_height - h),
                    _coordinate(h),
                    _coordinate(bar_width),
                    css,
                    f"{name} {kind} {amount:,.2f}",
                )
            )
        description.append(
            f"{name}: billed {amount_text(billed).replace(',', '')}, "
            f"paid {amount_text(paid).replace(',', '')}."
        )
        result.append(
            MonthBars(
                month, billed, paid, tuple(bars), _coordinate(x + bar_width), month_name(month)
            )
        )
    return {
        "width": width,
        "height": height,
        "baseline": plot_height,
        "label_y": height - 8,
        "months": result,
        "description": " ".join(description) + " ",
    }
