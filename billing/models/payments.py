"""Payment methods (tokens, never card numbers), payments, their allocations and refunds."""

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from billing.enums import DeclineKind, PaymentMode, PaymentStatus, RefundStatus
from billing.models.base import PublicIdModel, TimeStampedModel, money_field


class PaymentMethod(PublicIdModel, TimeStampedModel):
    """A card saved at the gateway. We keep its token and what a person needs to recognise it."""

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="payment_methods"
    )
    gateway = models.CharField(max_length=30)
    token = models.CharField(
        max_length=200, help_text="The gateway's reference; useless elsewhere."
    )
    brand = models.CharField(max_length=30)
    last4 = models.CharField(max_length=4, validators=[RegexValidator(r"^\d{4}$")])
    exp_month = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(12)]
    )
    exp_year = models.PositiveSmallIntegerField(validators=[MinValueValidator(2000)])
    cardholder_name = models.CharField(max_length=200, blank=True)
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["-is_default", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "token"], name="payment_method_token_unique"
            ),
            models.UniqueConstraint(
                fields=["customer"], condition=Q(is_default=True), name="payment_method_one_default"
            ),
            models.CheckConstraint(
                condition=Q(exp_month__gte=1, exp_month__lte=12),
                name="payment_method_exp_month_valid",
            ),
            models.CheckConstraint(
                condition=Q(last4__regex=r"^[0-9]{4}$"), name="payment_method_last4_digits"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.brand} •••• {self.last4} ({self.exp_month:02d}/{self.exp_year})"


class Payment(PublicIdModel, TimeStampedModel):
    """Money received (or attempted). Unallocated succeeded amounts are the customer's credit."""

    # Indexed by payment_customer_keyset_idx (customer first).
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="payments", db_index=False
    )
    amount = money_field()
    currency = models.CharField(max_length=3)
    mode = models.CharField(max_length=20, choices=PaymentMode, default=PaymentMode.CARD)
    method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.SET_NULL, related_name="payments"
    )
    # What the receipt prints, kept even after the card is removed.
    method_label = models.CharField(max_length=60, blank=True)
    status = models.CharField(max_length=20, choices=PaymentStatus, default=PaymentStatus.PENDING)
    gateway = models.CharField(max_length=30, blank=True)
    gateway_reference = models.CharField(max_length=200, blank=True)
    # One gateway charge per key: a retry of the same attempt can never charge twice.
    idempotency_key = models.CharField(max_length=100, unique=True)
    failure_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    decline_kind = models.CharField(max_length=10, choices=DeclineKind, blank=True)
    receipt_number = models.CharField(max_length=40, unique=True, null=True, blank=True)
    received_on = models.DateField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    reference = models.CharField(
        max_length=100, blank=True, help_text="Offline payments: bank reference, check number."
    )
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["customer", "-created_at", "-id"], name="payment_customer_keyset_idx"
            ),
            models.Index(fields=["status", "created_at"], name="payment_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.receipt_number or f"Payment {self.public_id.hex[:8]}"


class PaymentAllocation(models.Model):
    """Part of a payment applied to one invoice. Counts once the payment has succeeded."""

    # Each indexed by the covering index that starts with it (Meta).
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="allocations", db_index=False
    )
    invoice = models.ForeignKey(
        "billing.Invoice",
        on_delete=models.PROTECT,
        related_name="payment_allocations",
        db_index=False,
    )
    amount = money_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Both ways through allocations with everything balances need in the index itself
        # (index-only scans): a customer's payments to the invoices they paid (unused credit, a
        # statement's money applied to others' invoices), a customer's invoices to the payments
        # that paid them (amounts paid, others' money applied to its invoices).
        indexes = [
            models.Index(
                fields=["payment", "invoice", "amount", "created_at", "id"],
                name="payment_allocation_payment_idx",
            ),
            models.Index(
                fields=["invoice", "payment", "amount", "created_at", "id"],
                name="payment_allocation_invoice_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="payment_allocation_amount_positive"
            ),
            models.UniqueConstraint(
                fields=["payment", "invoice"], name="payment_allocation_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment} → {self.invoice}: {self.amount}"


class InvoicePaymentLock(models.Model):
    """At most one pending payment per invoice: held from the pending row until the outcome."""

    invoice = models.OneToOneField(
        "billing.Invoice", primary_key=True, on_delete=models.CASCADE, related_name="payment_lock"
    )
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="invoice_locks")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.invoice} held by {self.payment}"


class Refund(PublicIdModel, TimeStampedModel):
    """Money returned through the gateway that took it.

    Without a credit note it pays out the payment's unapplied part (an overpayment); with one it
    pays out that credit note's remaining balance (how a paid invoice is refunded: credit it,
    then refund the credit), so every balance stays a sum of rows.
    """

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    credit_note = models.ForeignKey(
        "billing.CreditNote",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunds",
    )
    amount = money_field()
    status = models.CharField(max_length=10, choices=RefundStatus, default=RefundStatus.PENDING)
    reason = models.CharField(max_length=300, blank=True)
    gateway_reference = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=100, unique=True)
    created_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Refund {self.amount} of {self.payment}"
