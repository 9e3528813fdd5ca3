"""The merchant (one per deployment) and its gapless document numbering."""

import zoneinfo
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from billing.enums import DocumentKind, MfaPolicy
from billing.models.base import SingletonModel, format_address, percent_field

currency_code_validator = RegexValidator(
    r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. EUR."
)


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone (e.g. Europe/Berlin).")


class Organization(SingletonModel):
    """The merchant. Its details are copied onto every invoice when the invoice is finalized."""

    name = models.CharField(max_length=200, default="My company")
    legal_name = models.CharField(max_length=200, blank=True)
    email = models.EmailField("contact email", blank=True)
    phone = models.CharField(max_length=50, blank=True)
    website = models.URLField(blank=True)
    address_line1 = models.CharField("address", max_length=200, blank=True)
    address_line2 = models.CharField("address (line 2)", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=100, blank=True)
    tax_id = models.CharField("tax / VAT id", max_length=50, blank=True)
    logo = models.ImageField(upload_to="organization/", blank=True)

    base_currency = models.CharField(
        max_length=3, default="USD", validators=[currency_code_validator]
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="Billing dates are calendar dates in this time zone.",
    )
    payment_terms_days = models.PositiveSmallIntegerField(
        default=14,
        validators=[MaxValueValidator(365)],
        help_text="Days from issue to due date, unless the customer or its group says otherwise.",
    )
    tax_rate = percent_field(
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="Default tax rate in percent, applied unless the customer is exempt or has its own.",
    )
    tax_label = models.CharField(max_length=30, default="Tax")
    invoice_footer = models.TextField(blank=True, help_text="Printed at the bottom of invoices.")

    free_plan_fallback = models.BooleanField(
        default=False,
        help_text="When a trial ends without payment, move the subscription to the free plan "
        "(data kept) instead of expiring it.",
    )
    free_plan = models.ForeignKey(
        "billing.Plan",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        limit_choices_to={"is_free": True},
        help_text="The plan used by the free-plan fallback and by dunning's 'move to free plan'.",
    )
    trial_reminder_days = models.PositiveSmallIntegerField(
        default=3, help_text="Email customers this many days before a trial ends."
    )
    renewal_reminder_days = models.PositiveSmallIntegerField(
        default=7, help_text="Email customers this many days before a renewal (0: never)."
    )

    mfa_policy = models.CharField(
        "MFA for portal users", max_length=20, choices=MfaPolicy, default=MfaPolicy.OPTIONAL
    )
    email_otp_enabled = models.BooleanField(
        "allow email codes", default=True, help_text="Offer one-time codes by email as a fallback."
    )
    trust_idp_mfa = models.BooleanField(
        "trust the SSO provider's MFA",
        default=False,
        help_text="Skip our MFA step after a single sign-on login.",
    )

    class Meta(SingletonModel.Meta):
        verbose_name = "organization settings"
        verbose_name_plural = "organization settings"

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def address_lines(self) -> list[str]:
        return format_address(
            line1=self.address_line1,
            line2=self.address_line2,
            city=self.city,
            state=self.state,
            postal_code=self.postal_code,
            country=self.country,
        )


class DocumentSequence(models.Model):
    """A gapless counter per document kind, locked FOR UPDATE while a number is taken.

    Never ``MAX(number) + 1``: two finalizations at once would read the same maximum.
    """

    kind = models.CharField(max_length=20, choices=DocumentKind, unique=True)
    prefix = models.CharField(max_length=20, blank=True)
    next_number = models.PositiveIntegerField(default=1)
    padding = models.PositiveSmallIntegerField(default=6, validators=[MaxValueValidator(12)])

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(next_number__gte=1), name="document_sequence_next_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: next {self.format(self.next_number)}"

    def format(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.padding}d}"
