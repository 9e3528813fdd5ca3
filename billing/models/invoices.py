"""Invoices and their lines. Finalized invoices change only in their payment state."""

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Round

from billing.enums import PERIODIC_INVOICE_KINDS, InvoiceKind, InvoiceLineKind, InvoiceStatus
from billing.models.base import PublicIdModel, TimeStampedModel, money_field, percent_field


class Invoice(PublicIdModel, TimeStampedModel):
    # Assigned from a locked DocumentSequence when finalized; drafts have none.
    number = models.CharField(max_length=40, unique=True, null=True, blank=True)
    # Indexed by invoice_customer_keyset_idx and invoice_customer_status_idx (customer first).
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="invoices", db_index=False
    )
    subscription = models.ForeignKey(
        "billing.Subscription",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="invoices",
    )
    kind = models.CharField(max_length=20, choices=InvoiceKind, default=InvoiceKind.RECURRING)
    # Lifecycle only; how much is paid is a sum of allocation rows (see selectors).
    status = models.CharField(max_length=20, choices=InvoiceStatus, default=InvoiceStatus.DRAFT)
    currency = models.CharField(max_length=3)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True, help_text="Exclusive.")
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)

    subtotal = money_field()
    discount_total = money_field()
    tax_rate = percent_field()
    tax_total = money_field()
    total = money_field()

    # Snapshots taken at finalization, so a later address change never rewrites history.
    billing_details = models.JSONField(default=dict, blank=True)
    merchant_details = models.JSONField(default=dict, blank=True)
    memo = models.TextField(blank=True)

    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issue_date", "-id"]
        indexes = [
            models.Index(
                fields=["customer", "-issue_date", "-id"], name="invoice_customer_keyset_idx"
            ),
            models.Index(fields=["status", "due_date"], name="invoice_status_due_idx"),
            # A customer's invoices by status: what it owes (the portal's dashboard and lists),
            # and which were paid after a day (a statement's ageing at that day).
            models.Index(
                fields=["customer", "status", "paid_at"], name="invoice_customer_status_idx"
            ),
            # The few void invoices, told apart without reading each invoice an allocation
            # points to (unused credit: money applied to a void invoice is free again).
            models.Index(fields=["id"], condition=Q(status="void"), name="invoice_void_idx"),
        ]
        constraints = [
            # Exactly once: a renewal or usage run repeated for a period cannot bill it twice.
            models.UniqueConstraint(
                fields=["subscription", "period_start", "kind"],
                condition=Q(kind__in=PERIODIC_INVOICE_KINDS, subscription__isnull=False),
                name="invoice_one_per_subscription_period_kind",
            ),
            models.CheckConstraint(
                condition=Q(subtotal__gte=0), name="invoice_subtotal_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(discount_total__gte=0), name="invoice_discount_non_negative"
            ),
            models.CheckConstraint(condition=Q(tax_total__gte=0), name="invoice_tax_non_negative"),
            models.CheckConstraint(condition=Q(total__gte=0), name="invoice_total_non_negative"),
            # Rounded so SQLite, which keeps decimals as binary floats, agrees to the cent.
            models.CheckConstraint(
                condition=Q(total=Round(F("subtotal") - F("discount_total") + F("tax_total"), 2)),
                name="invoice_total_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(status=InvoiceStatus.DRAFT, number__isnull=True)
                | (
                    ~Q(status=InvoiceStatus.DRAFT)
                    & Q(number__isnull=False, issue_date__isnull=False)
                ),
                name="invoice_numbered_iff_finalized",
            ),
            models.CheckConstraint(
                condition=Q(due_date__isnull=True) | Q(due_date__gte=F("issue_date")),
                name="invoice_due_not_before_issue",
            ),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.public_id.hex[:8]}"

    @property
    def is_finalized(self) -> bool:
        return self.status != InvoiceStatus.DRAFT


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=InvoiceLineKind)
    description = models.CharField(max_length=300)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)
    quantity = models.DecimalField(max_digits=14, decimal_places=4, default=1)
    unit_price = models.DecimalField(max_digits=19, decimal_places=4)
    # Rounded half-up to the cent; negative for credits and discounts.
    amount = money_field()
    plan = models.ForeignKey(
        "billing.Plan", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    addon = models.ForeignKey(
        "billing.Addon", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["invoice", "position", "id"]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"
