"""Credit notes and their application to invoices. A remaining balance is a sum of rows."""

from django.db import models
from django.db.models import Q

from billing.enums import CreditNoteReason, CreditNoteStatus
from billing.models.base import PublicIdModel, TimeStampedModel, money_field


class CreditNote(PublicIdModel, TimeStampedModel):
    number = models.CharField(max_length=40, unique=True)
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="credit_notes"
    )
    invoice = models.ForeignKey(
        "billing.Invoice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_notes",
        help_text="The invoice this credit corrects, if any.",
    )
    subscription = models.ForeignKey(
        "billing.Subscription",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_notes",
    )
    reason = models.CharField(max_length=20, choices=CreditNoteReason)
    status = models.CharField(
        max_length=10, choices=CreditNoteStatus, default=CreditNoteStatus.ISSUED
    )
    currency = models.CharField(max_length=3)
    amount = money_field()
    issue_date = models.DateField()
    memo = models.TextField(blank=True)

    class Meta:
        ordering = ["-issue_date", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.number


class CreditAllocation(models.Model):
    """Part of a credit note applied to an invoice (possibly a child customer's)."""

    credit_note = models.ForeignKey(
        CreditNote, on_delete=models.PROTECT, related_name="allocations"
    )
    invoice = models.ForeignKey(
        "billing.Invoice", on_delete=models.PROTECT, related_name="credit_allocations"
    )
    amount = money_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="credit_allocation_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.credit_note} → {self.invoice}: {self.amount}"
