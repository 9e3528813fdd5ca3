"""What the merchant sells: products, plans, addons, coupons and price lists."""

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from billing.enums import AddonKind, CouponDuration, DiscountType, Interval, PriceListKind
from billing.models.base import TimeStampedModel, money_field, percent_field, unit_price_field

code_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*$", "Lowercase letters, digits, '-' and '_' only."
)


class Product(TimeStampedModel):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Plan(TimeStampedModel):
    """A price for a product, billed every ``interval_count`` × ``interval``."""

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    code = models.CharField(max_length=60, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = unit_price_field(help_text="Price per unit per billing period.")
    interval = models.CharField(max_length=10, choices=Interval, default=Interval.MONTH)
    interval_count = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(36)]
    )
    trial_days = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(365)])
    setup_fee = unit_price_field(default=Decimal("0"))
    is_free = models.BooleanField(
        "free plan", default=False, help_text="The free tier; target of free-plan fallbacks."
    )
    billing_cycles = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Number of billing cycles; empty means until cancelled."
    )
    min_quantity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_quantity = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True, help_text="Inactive plans cannot be newly chosen.")
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in the portal.")

    class Meta:
        ordering = ["position", "price", "code"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="plan_price_non_negative"),
            models.CheckConstraint(
                condition=Q(setup_fee__gte=0), name="plan_setup_fee_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(interval_count__gte=1), name="plan_interval_count_positive"
            ),
            models.CheckConstraint(
                condition=Q(min_quantity__gte=1), name="plan_min_quantity_positive"
            ),
            models.CheckConstraint(
                condition=Q(max_quantity__isnull=True)
                | Q(max_quantity__gte=models.F("min_quantity")),
                name="plan_max_quantity_not_below_min",
            ),
            models.CheckConstraint(
                condition=Q(is_free=False) | Q(price=0, setup_fee=0), name="plan_free_costs_nothing"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def interval_label(self) -> str:
        unit = self.get_interval_display().lower()
        return unit if self.interval_count == 1 else f"{self.interval_count} {unit}s"


class Addon(TimeStampedModel):
    """Something sold alongside a plan: recurring each period, once, or metered per unit used."""

    code = models.CharField(max_length=60, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=20, choices=AddonKind, default=AddonKind.RECURRING)
    price = unit_price_field(
        help_text="Per unit (per period for recurring, per unit used for metered)."
    )
    unit_name = models.CharField(max_length=30, default="unit", help_text="e.g. seat, hour.")
    applicable_plans = models.ManyToManyField(
        Plan, blank=True, related_name="addons", help_text="Empty means every plan."
    )
    max_quantity = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="addon_price_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


coupon_code_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]*$", "Letters, digits, '-' and '_' only."
)


class Coupon(TimeStampedModel):
    """A discount a subscription can carry, for one, some or every billing cycle."""

    # Customers type codes in any case: WELCOME20 and welcome20 are the same coupon.
    code = models.CharField(max_length=60, unique=True, validators=[coupon_code_validator])
    name = models.CharField(max_length=200)
    discount_type = models.CharField(max_length=10, choices=DiscountType)
    percent_off = percent_field(
        null=True,
        blank=True,
        default=None,
        validators=[MinValueValidator(Decimal("0.001")), MaxValueValidator(Decimal("100"))],
    )
    amount_off = money_field(null=True, blank=True, default=None)
    duration = models.CharField(max_length=10, choices=CouponDuration, default=CouponDuration.ONCE)
    duration_cycles = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Billing cycles the discount lasts (repeating coupons)."
    )
    expires_on = models.DateField(null=True, blank=True, help_text="Last day it can be redeemed.")
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    applicable_plans = models.ManyToManyField(
        Plan, blank=True, related_name="coupons", help_text="Empty means every plan."
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(Lower("code"), name="coupon_code_ci_unique"),
            models.CheckConstraint(
                condition=(
                    Q(
                        discount_type=DiscountType.PERCENT,
                        percent_off__isnull=False,
                        amount_off__isnull=True,
                    )
                )
                | (Q(discount_type=DiscountType.FLAT, amount_off__gt=0, percent_off__isnull=True)),
                name="coupon_discount_matches_type",
            ),
            models.CheckConstraint(
                condition=Q(percent_off__isnull=True) | Q(percent_off__gt=0, percent_off__lte=100),
                name="coupon_percent_in_range",
            ),
            models.CheckConstraint(
                condition=~Q(duration=CouponDuration.REPEATING)
                | Q(duration_cycles__isnull=False, duration_cycles__gte=1),
                name="coupon_repeating_has_cycles",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class PriceList(TimeStampedModel):
    """Prices for a customer group: a percentage up or down, or explicit per-item prices."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=PriceListKind, default=PriceListKind.MARKDOWN)
    percent = percent_field(
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="For markup/markdown lists.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PriceListItem(models.Model):
    price_list = models.ForeignKey(PriceList, on_delete=models.CASCADE, related_name="items")
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.CASCADE)
    addon = models.ForeignKey(Addon, null=True, blank=True, on_delete=models.CASCADE)
    price = unit_price_field()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(plan__isnull=False, addon__isnull=True)
                | Q(plan__isnull=True, addon__isnull=False),
                name="price_list_item_one_target",
            ),
            models.UniqueConstraint(
                fields=["price_list", "plan"],
                condition=Q(plan__isnull=False),
                name="price_list_item_plan_unique",
            ),
            models.UniqueConstraint(
                fields=["price_list", "addon"],
                condition=Q(addon__isnull=False),
                name="price_list_item_addon_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.price_list}: {self.plan or self.addon} at {self.price}"
