"""Subscriptions, what they carry (addons, coupons), what is scheduled for them, metered usage."""

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from billing.enums import CancelReason, SubscriptionStatus
from billing.models.base import PublicIdModel, TimeStampedModel


class Subscription(PublicIdModel, TimeStampedModel):
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="subscriptions"
    )
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="subscriptions")
    quantity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    # Only services assign this, through billing.lifecycle.
    status = models.CharField(
        max_length=20, choices=SubscriptionStatus, default=SubscriptionStatus.LIVE
    )
    auto_charge = models.BooleanField(
        default=True, help_text="Charge the payment method automatically when invoices are issued."
    )
    payment_method = models.ForeignKey(
        "billing.PaymentMethod",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="subscriptions",
    )

    start_date = models.DateField(
        help_text="First day of service (future subscriptions start later)."
    )
    # Billing periods are computed from the anchor, never from the previous end (DESIGN rule 3).
    anchor_date = models.DateField(help_text="The date billing periods are counted from.")
    current_term_start = models.DateField(null=True, blank=True)
    current_term_end = models.DateField(
        null=True, blank=True, help_text="Exclusive end of the current term: the next billing date."
    )
    trial_start = models.DateField(null=True, blank=True)
    trial_end = models.DateField(null=True, blank=True)
    trial_extensions_used = models.PositiveSmallIntegerField(default=0)
    remaining_billing_cycles = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: renews until cancelled."
    )

    cancel_at = models.DateField(
        null=True,
        blank=True,
        help_text="Scheduled cancellation (term end); can be undone until then.",
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=20, choices=CancelReason, blank=True)
    cancel_reason_text = models.TextField(blank=True, help_text="The customer's own words, if any.")

    pause_at = models.DateField(null=True, blank=True, help_text="Scheduled pause date.")
    resume_at = models.DateField(
        null=True, blank=True, help_text="Scheduled resume date; empty with a pause: until resumed."
    )
    paused_at = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The renewal run scans due subscriptions by date in keyset order.
            models.Index(fields=["status", "current_term_end", "id"], name="subscription_due_idx"),
            models.Index(fields=["status", "trial_end", "id"], name="subscription_trial_end_idx"),
            models.Index(fields=["customer", "status"], name="subscription_customer_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=1), name="subscription_quantity_positive"
            ),
            models.CheckConstraint(
                condition=Q(current_term_end__isnull=True)
                | Q(current_term_start__isnull=True)
                | Q(current_term_end__gt=models.F("current_term_start")),
                name="subscription_term_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(trial_end__isnull=True)
                | Q(trial_start__isnull=True)
                | Q(trial_end__gte=models.F("trial_start")),
                name="subscription_trial_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(resume_at__isnull=True)
                | Q(pause_at__isnull=True)
                | Q(resume_at__gt=models.F("pause_at")),
                name="subscription_resume_after_pause",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} · {self.plan.name} × {self.quantity}"


class SubscriptionAddon(models.Model):
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="addons")
    addon = models.ForeignKey("billing.Addon", on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "addon"], name="subscription_addon_unique"
            ),
            models.CheckConstraint(
                condition=Q(quantity__gte=1), name="subscription_addon_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.addon.name} × {self.quantity}"


class SubscriptionCoupon(models.Model):
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="coupons")
    coupon = models.ForeignKey(
        "billing.Coupon", on_delete=models.PROTECT, related_name="redemptions"
    )
    remaining_cycles = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Billing cycles still discounted; empty: forever."
    )
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "coupon"], name="subscription_coupon_unique"
            ),
        ]

    def __str__(self) -> str:
        return str(self.coupon)


class ScheduledChange(TimeStampedModel):
    """The one pending end-of-term change of a subscription: the whole desired configuration."""

    subscription = models.OneToOneField(
        Subscription, on_delete=models.CASCADE, related_name="scheduled_change"
    )
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    # {"addon code": quantity} — the complete set of recurring addons after the change.
    addons = models.JSONField(default=dict, blank=True)
    coupon = models.ForeignKey(
        "billing.Coupon", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=1), name="scheduled_change_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"→ {self.plan.name} × {self.quantity}"


class UsageRecord(models.Model):
    """Units of a metered addon used; billed in arrears with the next invoice of the subscription."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="usage_records"
    )
    addon = models.ForeignKey("billing.Addon", on_delete=models.PROTECT, related_name="+")
    quantity = models.DecimalField(max_digits=14, decimal_places=4)
    used_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=100, unique=True)
    invoice = models.ForeignKey(
        "billing.Invoice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="usage_records",
        help_text="The invoice that billed this usage; empty while unbilled.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["subscription", "invoice", "used_at"], name="usage_unbilled_idx")
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="usage_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.addon.code} at {self.used_at:%Y-%m-%d}"
