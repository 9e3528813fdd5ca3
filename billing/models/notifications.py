"""Emails to customers, each sent exactly once: one row per natural key, marked when sent."""

from django.db import models
from django.db.models import Q

OPTIONAL_SUBJECTS = ("subscription", "invoice", "payment", "payment_method")


class Notification(models.Model):
    # e.g. "invoice.issued:42" or "trial.ending:7:2026-05-01" — a retry finds the same row.
    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=40)
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="notifications"
    )
    # What the email is about, for its template; each indexed where set (partial indexes below).
    subscription = models.ForeignKey(
        "billing.Subscription",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    invoice = models.ForeignKey(
        "billing.Invoice",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    payment = models.ForeignKey(
        "billing.Payment",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    payment_method = models.ForeignKey(
        "billing.PaymentMethod",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    recipients = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["sent_at", "created_at"], name="notification_unsent_idx"),
            *(
                models.Index(
                    fields=[name],
                    condition=Q(**{f"{name}__isnull": False}),
                    name=f"notice_{name}_idx",
                )
                for name in OPTIONAL_SUBJECTS
            ),
        ]

    def __str__(self) -> str:
        return self.key
