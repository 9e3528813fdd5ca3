"""Money arithmetic: Decimal only, rounded half-up to the currency's minor unit.

Each invoice line is rounded on its own; totals are sums of rounded lines (DESIGN rule 2), so
every cent on an invoice can be explained from the lines printed on it.
"""

from decimal import ROUND_HALF_UP, Decimal

ZERO = Decimal("0.00")

# ISO 4217 minor units for the currencies that do not use two decimals.
_MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency.upper(), 2)


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str = "USD") -> Decimal:
    """Round half-up to the currency's minor unit (2.675 → 2.68, -2.675 → -2.68)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, not {type(amount).__name__}")
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def percent_of(amount: Decimal, percent: Decimal, currency: str = "USD") -> Decimal:
    """``percent`` % of ``amount`` (19 means 19 %), rounded to the minor unit."""
    return round_money(amount * percent / Decimal(100), currency)


def format_money(amount: Decimal, currency: str) -> str:
    """1234.5, USD → 'USD 1,234.50' (unambiguous across locales, as on the documents)."""
    places = minor_units(currency)
    return f"{currency} {amount:,.{places}f}"
