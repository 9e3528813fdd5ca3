"""How failed renewal payments are retried, and the record of every attempt."""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from billing.enums import DeclineKind, DunningFinalAction, PaymentAttemptStatus
from billing.models.base import SingletonModel


def validate_retry_days(value) -> None:
    if not isinstance(value, list) or not all(isinstance(d, int) and 0 < d <= 90 for d in value):
        raise ValidationError("A list of whole days between 1 and 90, e.g. [1, 3, 5, 7].")
    if value != sorted(set(value)):
        raise ValidationError("Days must increase, e.g. [1, 3, 5, 7].")


def default_retry_days() -> list[int]:
    return [1, 3, 5, 7]


class DunningPolicy(SingletonModel):
    retry_days = models.JSONField(
        default=default_retry_days,
        validators=[validate_retry_days],
        help_text="Days after the first failure on which to retry, e.g. [1, 3, 5, 7].",
    )
    final_action = models.CharField(
        max_length=20, choices=DunningFinalAction, default=DunningFinalAction.CANCEL
    )
    send_emails = models.BooleanField(
        default=True,
        help_text="Email the customer after each failure with a link to update the card.",
    )

    class Meta(SingletonModel.Meta):
        verbose_name = "dunning policy"
        verbose_name_plural = "dunning policy"

    def __str__(self) -> str:
        days = ", ".join(f"+{d}" for d in self.retry_days)
        return f"Retry {days}; then {self.get_final_action_display().lower()}"


class PaymentAttempt(models.Model):
    """One try at collecting an invoice: attempt 0 is the first charge, 1… are dunning retries."""

    invoice = models.ForeignKey(
        "billing.Invoice", on_delete=models.PROTECT, related_name="payment_attempts"
    )
    subscription = models.ForeignKey(
        "billing.Subscription",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payment_attempts",
    )
    attempt_number = models.PositiveSmallIntegerField()
    scheduled_for = models.DateTimeField()
    status = models.CharField(
        max_length=10, choices=PaymentAttemptStatus, default=PaymentAttemptStatus.SCHEDULED
    )
    payment = models.OneToOneField(
        "billing.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="attempt"
    )
    decline_kind = models.CharField(max_length=10, choices=DeclineKind, blank=True)
    attempted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "attempt_number"]
        indexes = [models.Index(fields=["status", "scheduled_for", "id"], name="attempt_due_idx")]
        constraints = [
            # Exactly once: retry N of an invoice exists at most once, however often the run repeats.
            models.UniqueConstraint(
                fields=["invoice", "attempt_number"], name="payment_attempt_unique"
            ),
            models.CheckConstraint(
                condition=Q(attempt_number__lte=50), name="payment_attempt_number_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice} attempt {self.attempt_number} ({self.status})"
