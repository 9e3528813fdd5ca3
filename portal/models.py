"""What the merchant lets customers do in the portal, and what customers leave there."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from billing import settings_cache
from billing.enums import ChangeTiming
from billing.models.base import SingletonModel


class RetentionOffer(models.TextChoices):
    NONE = "none", "No offer"
    COUPON = "coupon", "A coupon"
    PAUSE = "pause", "A pause instead"


class PortalPreferences(SingletonModel):
    """Each portal module and action, switched on or off. Off means hidden and refused."""

    # Modules
    show_subscriptions = models.BooleanField(default=True)
    show_invoices = models.BooleanField(default=True)
    show_payments = models.BooleanField(default=True)
    show_credits = models.BooleanField(default=True)
    show_statements = models.BooleanField(default=True)
    allow_payments = models.BooleanField("customers may pay invoices", default=True)
    allow_payment_method_changes = models.BooleanField("customers may manage cards", default=True)
    allow_customer_edit = models.BooleanField("customers may edit their details", default=True)
    allow_document_forward = models.BooleanField("customers may forward invoices", default=True)
    allow_reviews = models.BooleanField(default=True)
    allow_contact_form = models.BooleanField(default=True)

    # Trials
    allow_trial_convert = models.BooleanField("convert a trial now", default=True)
    allow_trial_cancel = models.BooleanField("cancel a trial", default=True)
    allow_trial_extend = models.BooleanField("extend an expired trial", default=True)
    trial_extension_limit = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(10)],
        help_text="Extensions allowed per subscription.",
    )

    # Changes
    allow_plan_change = models.BooleanField(default=True)
    allowed_plans = models.ManyToManyField(
        "billing.Plan", blank=True, related_name="+", help_text="Empty: every active plan."
    )
    allow_upgrades = models.BooleanField(default=True)
    allow_downgrades = models.BooleanField(default=True)
    upgrade_timing = models.CharField(
        max_length=20,
        choices=[*ChangeTiming.choices, ("choice", "Customer chooses")],
        default=ChangeTiming.NOW,
    )
    downgrade_timing = models.CharField(
        max_length=20,
        choices=[*ChangeTiming.choices, ("choice", "Customer chooses")],
        default=ChangeTiming.TERM_END,
    )
    allow_quantity_change = models.BooleanField(default=True)
    allow_addon_change = models.BooleanField(default=True)
    allow_coupons = models.BooleanField("customers may apply coupons", default=True)
    allow_frequency_change = models.BooleanField("change billing frequency", default=True)
    allow_auto_charge_toggle = models.BooleanField(default=True)

    # Pause, cancel, reactivate
    allow_pause = models.BooleanField(default=True)
    credit_unused_pause_time = models.BooleanField(
        default=False, help_text="Credit the unused part of the term when a subscription is paused."
    )
    allow_cancel_now = models.BooleanField(default=True)
    allow_cancel_at_term_end = models.BooleanField(default=True)
    credit_on_cancel_now = models.BooleanField("prorated credit when cancelled now", default=False)
    void_unpaid_on_cancel = models.BooleanField(
        "void unpaid invoices on cancellation",
        default=False,
        help_text="Off: unpaid invoices stay open after a cancellation.",
    )
    retention_offer = models.CharField(
        max_length=10, choices=RetentionOffer, default=RetentionOffer.NONE
    )
    retention_coupon = models.ForeignKey(
        "billing.Coupon", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retention_message = models.CharField(max_length=300, blank=True)
    allow_reactivation = models.BooleanField(default=True)
    reactivation_requires_payment = models.BooleanField(
        "reactivation requires paying the open invoice first", default=True
    )

    class Meta(SingletonModel.Meta):
        verbose_name = "portal preferences"
        verbose_name_plural = "portal preferences"
        constraints = [
            *SingletonModel.Meta.constraints,
            models.CheckConstraint(
                condition=~Q(retention_offer=RetentionOffer.COUPON)
                | Q(retention_coupon__isnull=False),
                name="portal_retention_coupon_set",
            ),
        ]

    def __str__(self) -> str:
        return "Portal preferences"


WEB_TABS_CACHE_KEY = settings_cache.read_together("portal:web-tabs")


class WebTab(models.Model):
    """A merchant link shown in the portal's sidebar."""

    title = models.CharField(max_length=60)
    url = models.URLField()
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "title"]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        settings_cache.forget(WEB_TABS_CACHE_KEY)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        settings_cache.forget(WEB_TABS_CACHE_KEY)
        return result

    @classmethod
    def active_tabs(cls) -> list["WebTab"]:
        """Shown on every portal page, so kept in the cache until a tab changes."""
        return settings_cache.get_or_load(
            WEB_TABS_CACHE_KEY, lambda: list(cls.objects.filter(active=True)), 300
        )


class Review(models.Model):
    """A customer's rating of the merchant, visible to staff only."""

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="reviews"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    rating = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__gte=1, rating__lte=5), name="review_rating_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer}: {self.rating}/5"


class ContactMessage(models.Model):
    """A message sent to the merchant from the portal's contact form."""

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="messages"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    handled = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.subject
