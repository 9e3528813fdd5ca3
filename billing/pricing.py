"""What a subscription costs: the one function the invoice builder and every preview use.

Reads only. Given a configuration (plan, quantity, addons, coupons) and a customer, it produces
invoice line drafts for a period: plan and recurring addons at the customer's prices (group price
list), then discounts (coupons, group discount) as negative lines, then totals with tax. Each
line is rounded half-up to the cent on its own, and totals are sums of rounded lines.
"""

import datetime
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Q

from billing.enums import AddonKind, CouponDuration, DiscountType, InvoiceLineKind, PriceListKind
from billing.errors import ValidationFailed
from billing.models import (
    Addon,
    Coupon,
    Customer,
    Organization,
    Plan,
    PriceListItem,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
)
from billing.money import ZERO, percent_of, round_money
from billing.periods import Period

HUNDRED = Decimal(100)
FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class LineDraft:
    """An invoice line before it is stored; previews show exactly these."""

    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    period_start: datetime.date | None = None
    period_end: datetime.date | None = None
    plan: Plan | None = None
    addon: Addon | None = None

    @property
    def is_discount(self) -> bool:
        return self.kind == InvoiceLineKind.DISCOUNT


@dataclass(frozen=True)
class Totals:
    currency: str
    lines: tuple[LineDraft, ...]
    subtotal: Decimal
    discount_total: Decimal
    tax_rate: Decimal
    tax_total: Decimal
    total: Decimal


@dataclass(frozen=True)
class Configuration:
    """Everything that decides a subscription's recurring price, detached from the database row."""

    plan: Plan
    quantity: int = 1
    addons: tuple[tuple[Addon, int], ...] = ()
    coupons: tuple[tuple[Coupon, int | None], ...] = ()  # (coupon, remaining cycles; None: forever)

    def with_changes(self, **changes) -> "Configuration":
        return replace(self, **changes)

    @property
    def addon_quantities(self) -> dict[str, int]:
        return {addon.code: quantity for addon, quantity in self.addons}


@dataclass
class PriceBook:
    """A customer's prices, loaded once per customer (group price list and discount, tax)."""

    customer: Customer
    organization: Organization
    _items: dict[tuple[str, int], Decimal] | None = None

    def __post_init__(self) -> None:
        price_list = self.customer.group.price_list if self.customer.group_id else None
        self.price_list = price_list
        if self._items is None:
            per_item = price_list is not None and price_list.kind == PriceListKind.PER_ITEM
            self._items = (
                _price_list_items([price_list.pk]).get(price_list.pk, {}) if per_item else {}
            )

    @classmethod
    def for_customers(
        cls, customers: Iterable[Customer], organization: Organization
    ) -> dict[int, "PriceBook"]:
        """Books for many customers (their group and price list loaded) in at most one query."""
        customers = list(customers)
        lists = {
            c.group.price_list_id
            for c in customers
            if c.group_id
            and c.group.price_list_id
            and c.group.price_list.kind == PriceListKind.PER_ITEM
        }
        items = _price_list_items(lists) if lists else {}
        return {
            c.pk: cls(
                c,
                organization,
                items.get(c.group.price_list_id, {}) if c.group_id else {},
            )
            for c in customers
        }

    @property
    def currency(self) -> str:
        return self.organization.base_currency

    @property
    def tax_rate(self) -> Decimal:
        if self.customer.tax_exempt:
            return ZERO
        if self.customer.tax_rate is not None:
            return self.customer.tax_rate
        return self.organization.tax_rate

    @property
    def group_discount_percent(self) -> Decimal:
        return self.customer.group.discount_percent if self.customer.group_id else ZERO

    def unit_price(self, item: Plan | Addon) -> Decimal:
        kind = "plan" if isinstance(item, Plan) else "addon"
        if (kind, item.pk) in self._items:
            return self._items[(kind, item.pk)]
        price = item.price
        if self.price_list is not None and self.price_list.kind == PriceListKind.MARKUP:
            price = price * (HUNDRED + self.price_list.percent) / HUNDRED
        elif self.price_list is not None and self.price_list.kind == PriceListKind.MARKDOWN:
            price = price * (HUNDRED - self.price_list.percent) / HUNDRED
        # Half-up like every other rounding of money here; a bare quantize() would round
        # half-even (the decimal context's default): 1.0005 less 10 % → 0.9004 instead of 0.9005.
        return price.quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)


def _price_list_items(price_list_ids: Iterable[int]) -> dict[int, dict[tuple[str, int], Decimal]]:
    items: dict[int, dict[tuple[str, int], Decimal]] = defaultdict(dict)
    for item in PriceListItem.objects.filter(price_list__in=price_list_ids):
        key = ("plan", item.plan_id) if item.plan_id else ("addon", item.addon_id)
        items[item.price_list_id][key] = item.price
    return items


def configuration_of(subscription: Subscription) -> Configuration:
    return configurations_of([subscription])[subscription.pk]


def configurations_of(subscriptions: Sequence[Subscription]) -> dict[int, Configuration]:
    """Each subscription's configuration (its plan loaded), in two queries whatever the count."""
    addons: dict[int, list[tuple[Addon, int]]] = defaultdict(list)
    coupons: dict[int, list[tuple[Coupon, int | None]]] = defaultdict(list)
    ids = [s.pk for s in subscriptions]
    for row in (
        SubscriptionAddon.objects.filter(subscription__in=ids, addon__kind=AddonKind.RECURRING)
        .select_related("addon")
        .order_by("addon__name", "pk")
    ):
        addons[row.subscription_id].append((row.addon, row.quantity))
    for row in (
        SubscriptionCoupon.objects.filter(subscription__in=ids)
        .filter(Q(remaining_cycles__isnull=True) | Q(remaining_cycles__gt=0))
        .select_related("coupon")
        .order_by("applied_at", "id")
    ):
        coupons[row.subscription_id].append((row.coupon, row.remaining_cycles))
    return {
        s.pk: Configuration(s.plan, s.quantity, tuple(addons[s.pk]), tuple(coupons[s.pk]))
        for s in subscriptions
    }


def _period_label(period: Period | None) -> str:
    if period is None:
        return ""
    last_day = period.end - datetime.timedelta(days=1)
    return f" ({period.start:%b %-d, %Y} – {last_day:%b %-d, %Y})"


def recurring_lines(
    config: Configuration, book: PriceBook, period: Period | None
) -> list[LineDraft]:
    """Plan and recurring addons for one full period, at the customer's prices."""
    start, end = (period.start, period.end) if period else (None, None)
    plan_price = book.unit_price(config.plan)
    lines = [
        LineDraft(
            kind=InvoiceLineKind.PLAN,
            description=f"{config.plan.name}{_period_label(period)}",
            quantity=Decimal(config.quantity),
            unit_price=plan_price,
            amount=round_money(plan_price * config.quantity, book.currency),
            period_start=start,
            period_end=end,
            plan=config.plan,
        )
    ]
    for addon, quantity in config.addons:
        price = book.unit_price(addon)
        lines.append(
            LineDraft(
                kind=InvoiceLineKind.ADDON,
                description=f"{addon.name}{_period_label(period)}",
                quantity=Decimal(quantity),
                unit_price=price,
                amount=round_money(price * quantity, book.currency),
                period_start=start,
                period_end=end,
                addon=addon,
            )
        )
    return lines


def discount_lines(config: Configuration, book: PriceBook, base: Decimal) -> list[LineDraft]:
    """Coupons in the order applied, then the group discount; never more than ``base``."""
    lines: list[LineDraft] = []
    remaining = base
    for coupon, _cycles in config.coupons:
        if coupon.discount_type == DiscountType.PERCENT:
            amount = percent_of(base, coupon.percent_off, book.currency)
            label = f"Coupon {coupon.code} ({coupon.percent_off.normalize():f}% off)"
        else:
            amount = round_money(coupon.amount_off, book.currency)
            label = f"Coupon {coupon.code}"
        amount = min(amount, remaining)
        if amount > 0:
            lines.append(_discount_line(label, amount))
            remaining -= amount
    group_percent = book.group_discount_percent
    if group_percent > 0 and remaining > 0:
        amount = min(percent_of(base, group_percent, book.currency), remaining)
        lines.append(_discount_line(f"Group discount ({group_percent.normalize():f}%)", amount))
    return lines


def _discount_line(description: str, amount: Decimal) -> LineDraft:
    return LineDraft(
        kind=InvoiceLineKind.DISCOUNT,
        description=description,
        quantity=Decimal(1),
        unit_price=-amount,
        amount=-amount,
    )


def totals(lines: Iterable[LineDraft], book: PriceBook) -> Totals:
    """Subtotal of charges, discounts as a positive total, tax on the discounted subtotal."""
    lines = tuple(lines)
    subtotal = sum((line.amount for line in lines if not line.is_discount), ZERO)
    discount = -sum((line.amount for line in lines if line.is_discount), ZERO)
    if subtotal < 0:
        raise ValueError("an invoice subtotal cannot be negative; issue a credit note instead")
    tax_rate = book.tax_rate
    tax = percent_of(subtotal - discount, tax_rate, book.currency)
    return Totals(
        currency=book.currency,
        lines=lines,
        subtotal=subtotal,
        discount_total=discount,
        tax_rate=tax_rate,
        tax_total=tax,
        total=subtotal - discount + tax,
    )


def recurring_amount(config: Configuration, book: PriceBook) -> Decimal:
    """The pre-tax amount of one full period after discounts: the basis of proration."""
    lines = recurring_lines(config, book, None)
    base = sum((line.amount for line in lines), ZERO)
    return base + sum((line.amount for line in discount_lines(config, book, base)), ZERO)


def period_charges(
    config: Configuration,
    book: PriceBook,
    period: Period,
    *,
    extra_lines: Sequence[LineDraft] = (),
) -> Totals:
    """A full period's invoice: recurring lines, extras (setup fee, usage), discounts, tax.

    Coupons discount the recurring lines only; setup fees and usage are charged in full.
    """
    lines = recurring_lines(config, book, period)
    base = sum((line.amount for line in lines), ZERO)
    return totals([*lines, *extra_lines, *discount_lines(config, book, base)], book)


def setup_fee_line(plan: Plan, book: PriceBook) -> LineDraft | None:
    if plan.setup_fee <= 0:
        return None
    amount = round_money(plan.setup_fee, book.currency)
    return LineDraft(
        kind=InvoiceLineKind.SETUP_FEE,
        description=f"Setup fee: {plan.name}",
        quantity=Decimal(1),
        unit_price=plan.setup_fee,
        amount=amount,
        plan=plan,
    )


def coupon_initial_cycles(coupon: Coupon) -> int | None:
    return {CouponDuration.ONCE: 1, CouponDuration.REPEATING: coupon.duration_cycles}.get(
        coupon.duration
    )


def coupon_validate(coupon: Coupon, plan: Plan, *, today: datetime.date) -> None:
    """Raise ``ValidationFailed`` (field "coupon") unless the coupon can be redeemed on ``plan``."""
    if not coupon.active:
        raise ValidationFailed(f"The coupon {coupon.code} is no longer available.", field="coupon")
    if coupon.expires_on is not None and coupon.expires_on < today:
        raise ValidationFailed(f"The coupon {coupon.code} has expired.", field="coupon")
    if coupon.max_redemptions is not None:
        used = SubscriptionCoupon.objects.filter(coupon=coupon).count()
        if used >= coupon.max_redemptions:
            raise ValidationFailed(
                f"The coupon {coupon.code} has been fully redeemed.", field="coupon"
            )
    applicable = list(coupon.applicable_plans.values_list("pk", flat=True))
    if applicable and plan.pk not in applicable:
        raise ValidationFailed(
            f"The coupon {coupon.code} does not apply to the {plan.name} plan.", field="coupon"
        )
