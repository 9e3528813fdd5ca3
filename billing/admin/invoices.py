"""Invoices (editable while draft, read-only once finalized) and credit notes.

What is paid, credited and still due is never stored on an invoice: it is the sum of payment
allocations (of succeeded payments) and credit allocations (of issued credit notes). The lists
compute those sums with one subquery per column, for the whole page in one query.
"""

import datetime
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db.models import (
    BooleanField,
    Case,
    Q,
    QuerySet,
    Value,
    When,
)

from billing import selectors
from billing.admin.actions import INVOICE_ACTIONS
from billing.admin.base import (
    TIMESTAMPS,
    CustomerListFilter,
    ReadOnlyTabularInline,
    organization_today,
)
from billing.admin.object_actions import ObjectActionsMixin, menu_entry
from billing.enums import InvoiceStatus
from billing.models import (
    CreditAllocation,
    CreditNote,
    Invoice,
    InvoiceLine,
    Organization,
    PaymentAllocation,
)


def invoices_with_amounts(queryset: QuerySet, *, today: datetime.date) -> QuerySet:
    """The shared balance annotations plus the overdue flag (open and past its due date)."""
    return selectors.invoices_with_amounts(queryset).annotate(
        is_overdue=Case(
            When(Q(status=InvoiceStatus.OPEN, due_date__lt=today), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        ),
    )


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request, queryset):
        overdue = Q(status=InvoiceStatus.OPEN, due_date__lt=organization_today(request))
        if self.value() == "yes":
            return queryset.filter(overdue)
        if self.value() == "no":
            return queryset.exclude(overdue)
        return queryset


class FinalizedInvoiceLockMixin:
    """Inline rows of a finalized invoice are history: shown, never changed."""

    def has_add_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_finalized:
            return False
        return super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_finalized:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_finalized:
            return False
        return super().has_delete_permission(request, obj)


class InvoiceLineInline(FinalizedInvoiceLockMixin, admin.TabularInline):
    model = InvoiceLine
    fields = [
        "position",
        "kind",
        "description",
        "period_start",
        "period_end",
        "quantity",
        "unit_price",
        "amount",
        "plan",
        "addon",
    ]
    autocomplete_fields = ["plan", "addon"]
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("plan", "addon")


class PaymentAllocationInline(ReadOnlyTabularInline):
    model = PaymentAllocation
    fields = ["payment", "payment_status", "amount", "created_at"]
    readonly_fields = ["payment_status"]
    verbose_name_plural = "payments applied"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment")

    @admin.display(description="payment status")
    def payment_status(self, obj: PaymentAllocation) -> str:
        return obj.payment.get_status_display()


class CreditAllocationInline(ReadOnlyTabularInline):
    model = CreditAllocation
    fields = ["credit_note", "credit_note_status", "amount", "created_at"]
    readonly_fields = ["credit_note_status"]
    verbose_name_plural = "credits applied"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("credit_note")

    @admin.display(description="credit note status")
    def credit_note_status(self, obj: CreditAllocation) -> str:
        return obj.credit_note.get_status_display()


class InvoiceAdminForm(forms.ModelForm):
    class Meta:
        model = Invoice
        fields = "__all__"  # noqa: DJ007 (the admin's fieldsets choose what is shown)

    def clean(self):
        cleaned = super().clean()
        amounts = [cleaned.get(name) for name in ("subtotal", "discount_total", "tax_total")]
        total = cleaned.get("total")
        if total is not None and None not in amounts:
            subtotal, discount, tax = amounts
            if total != subtotal - discount + tax:
                self.add_error(
                    "total",
                    f"The total must be subtotal − discount + tax = {subtotal - discount + tax}.",
                )
        issue, due = cleaned.get("issue_date"), cleaned.get("due_date")
        if issue and due and due < issue:
            self.add_error("due_date", "The due date cannot be before the issue date.")
        return cleaned


@admin.register(Invoice)
class InvoiceAdmin(ObjectActionsMixin, admin.ModelAdmin):
    form = InvoiceAdminForm
    # Void, record a payment, credit, charge…: confirmation pages calling services (actions.py).
    object_actions = INVOICE_ACTIONS
    actions = [menu_entry(action) for action in INVOICE_ACTIONS]
    list_display = [
        "number_display",
        "customer",
        "status",
        "issue_date",
        "due_date",
        "currency",
        "total",
        "amount_paid",
        "balance_due",
        "overdue",
    ]
    list_filter = ["status", OverdueFilter, "kind", CustomerListFilter, "currency"]
    list_select_related = ["customer"]
    search_fields = [
        "number",
        "customer__display_name",
        "customer__company_name",
        "customer__email",
        "public_id__exact",
    ]
    ordering = ["-issue_date", "-id"]
    date_hierarchy = "issue_date"
    show_full_result_count = False
    autocomplete_fields = ["customer", "subscription"]
    inlines = [InvoiceLineInline, PaymentAllocationInline, CreditAllocationInline]
    fieldsets = [
        (None, {"fields": ["number", "customer", "subscription", "kind", "status", "currency"]}),
        (
            "Dates",
            {
                "fields": [
                    ("period_start", "period_end"),
                    ("issue_date", "due_date", "overdue"),
                    ("finalized_at", "paid_at", "voided_at"),
                ]
            },
        ),
        (
            "Amounts",
            {
                "fields": [
                    "subtotal",
                    "discount_total",
                    ("tax_rate", "tax_total"),
                    "total",
                    ("amount_paid", "credits_applied", "balance_due"),
                ]
            },
        ),
        ("Memo", {"fields": ["memo"]}),
        (
            "Snapshots taken at finalization",
            {"fields": ["billing_details", "merchant_details"], "classes": ["collapse"]},
        ),
        ("Record", {"fields": ["public_id", *TIMESTAMPS], "classes": ["collapse"]}),
    ]
    # Set by the billing services (finalization, payment, voiding), never typed in.
    readonly_fields = [
        "number",
        "status",
        "finalized_at",
        "paid_at",
        "voided_at",
        "billing_details",
        "merchant_details",
        "amount_paid",
        "credits_applied",
        "balance_due",
        "overdue",
        "public_id",
        *TIMESTAMPS,
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return invoices_with_amounts(queryset, today=organization_today(request))

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        currency = Organization.objects.filter(pk=1).values_list("base_currency", flat=True)
        initial.setdefault("currency", currency.first() or "")
        return initial

    # A finalized invoice is immutable except for its payment state, which services change
    # (DESIGN §3): the whole page, inlines included, is read-only and it cannot be deleted.
    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_finalized:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_finalized:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # Bulk delete would not check each invoice; drafts are deleted from their own page.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="number", ordering="number")
    def number_display(self, obj: Invoice) -> str:
        return str(obj)

    @admin.display(description="amount paid", ordering="amount_paid")
    def amount_paid(self, obj: Invoice) -> Decimal | None:
        return getattr(obj, "amount_paid", None)

    @admin.display(description="credits applied", ordering="credits_applied")
    def credits_applied(self, obj: Invoice) -> Decimal | None:
        return getattr(obj, "credits_applied", None)

    @admin.display(description="balance due", ordering="balance_due")
    def balance_due(self, obj: Invoice) -> Decimal | None:
        return getattr(obj, "balance_due", None)

    @admin.display(description="overdue", boolean=True, ordering="is_overdue")
    def overdue(self, obj: Invoice) -> bool | None:
        return getattr(obj, "is_overdue", None)


# ----------------------------------------------------------------------------- credit notes
def credit_notes_with_amounts(queryset: QuerySet) -> QuerySet:
    """How much of each credit note is applied or refunded, and how much remains."""
    return selectors.credit_notes_with_remaining(queryset)


class CreditNoteAllocationInline(ReadOnlyTabularInline):
    model = CreditAllocation
    fields = ["invoice", "amount", "created_at"]
    verbose_name_plural = "applied to invoices"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")


@admin.register(CreditNote)
class CreditNoteAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "customer",
        "invoice",
        "reason",
        "status",
        "issue_date",
        "currency",
        "amount",
        "applied",
        "remaining",
    ]
    list_filter = ["status", "reason", CustomerListFilter]
    list_select_related = ["customer", "invoice"]
    search_fields = ["number", "customer__display_name", "customer__email", "invoice__number"]
    ordering = ["-issue_date", "-id"]
    date_hierarchy = "issue_date"
    inlines = [CreditNoteAllocationInline]
    fields = [
        "number",
        "customer",
        "invoice",
        "subscription",
        "reason",
        "status",
        ("currency", "amount"),
        ("applied", "remaining"),
        "issue_date",
        "memo",
        "public_id",
        *TIMESTAMPS,
    ]
    # Issued by the billing services with a gapless number; only the internal memo is editable.
    readonly_fields = [
        "number",
        "customer",
        "invoice",
        "subscription",
        "reason",
        "status",
        "currency",
        "amount",
        "applied",
        "remaining",
        "issue_date",
        "public_id",
        *TIMESTAMPS,
    ]

    def get_queryset(self, request):
        return credit_notes_with_amounts(super().get_queryset(request))

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="applied", ordering="applied")
    def applied(self, obj: CreditNote) -> Decimal | None:
        return getattr(obj, "applied", None)

    @admin.display(description="remaining", ordering="remaining")
    def remaining(self, obj: CreditNote) -> Decimal | None:
        return getattr(obj, "remaining", None)
