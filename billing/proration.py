"""Proration math for changes applied mid-term (DESIGN rule 4). Pure; amounts are Decimal.

credit = old recurring amount × days left ÷ days in term
charge = new recurring amount × days left ÷ days in term
each rounded separately, half-up to the minor unit, so the net is their difference.
"""

from dataclasses import dataclass
from decimal import Decimal

from billing.money import round_money


def prorate(
    amount: Decimal, *, days_left: int, days_in_term: int, currency: str = "USD"
) -> Decimal:
    if days_in_term <= 0:
        raise ValueError("a term has at least one day")
    if not 0 <= days_left <= days_in_term:
        raise ValueError("days left must lie within the term")
    return round_money(amount * days_left / days_in_term, currency)


@dataclass(frozen=True)
class Proration:
    credit: Decimal  # for the unused part of the old configuration
    charge: Decimal  # for the rest of the term on the new configuration

    @property
    def net(self) -> Decimal:
        """Positive: the customer owes it now. Negative: it becomes a credit note."""
        return self.charge - self.credit


def prorate_change(
    *, old_amount: Decimal, new_amount: Decimal, days_left: int, days_in_term: int, currency: str
) -> Proration:
    return Proration(
        credit=prorate(
            old_amount, days_left=days_left, days_in_term=days_in_term, currency=currency
        ),
        charge=prorate(
            new_amount, days_left=days_left, days_in_term=days_in_term, currency=currency
        ),
    )
