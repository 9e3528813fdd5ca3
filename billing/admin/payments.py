"""Cards on file, payments with their allocations and refunds, and dunning attempts.

Money that moved is history: payments, refunds and attempts come from the billing services
and the gateway, so staff see them here and change at most an internal note.
"""

from django.contrib import admin

from billing.admin.actions import PAYMENT_ACTIONS
from billing.admin.base import (
    TIMESTAMPS,
    CustomerListFilter,
    ReadOnlyTabularInline,
    ViewOnlyAdminMixin,
)
from billing.admin.object_actions import ObjectActionsMixin, menu_entry
from billing.models import Payment, PaymentAllocation, PaymentAttempt, PaymentMethod, Refund


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    # Cards are saved and removed through the gateway (tokens), never typed in by staff.
    list_display = ["__str__", "customer", "gateway", "cardholder_name", "is_default", "created_at"]
    list_filter = ["gateway", "brand", "is_default", CustomerListFilter]
    list_select_related = ["customer"]
    search_fields = ["customer__display_name", "customer__email", "last4", "cardholder_name"]
    ordering = ["customer__display_name", "-is_default", "-created_at"]
    readonly_fields = ["public_id", *TIMESTAMPS]


class PaymentAllocationInline(ReadOnlyTabularInline):
    model = PaymentAllocation
    fields = ["invoice", "invoice_customer", "amount", "created_at"]
    readonly_fields = ["invoice_customer"]
    verbose_name_plural = "applied to invoices"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__customer")

    @admin.display(description="customer")
    def invoice_customer(self, obj: PaymentAllocation):
        # A parent may pay its branches' invoices: say whose invoice this is.
        return obj.invoice.customer


class RefundInline(ReadOnlyTabularInline):
    model = Refund
    fields = ["amount", "status", "reason", "gateway_reference", "created_by", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")


@admin.register(Payment)
class PaymentAdmin(ObjectActionsMixin, admin.ModelAdmin):
    # Refunds go through the payment service from a confirmation page (actions.py).
    object_actions = PAYMENT_ACTIONS
    actions = [menu_entry(action) for action in PAYMENT_ACTIONS]
    list_display = [
        "__str__",
        "customer",
        "amount",
        "currency",
        "mode",
        "status",
        "method_label",
        "received_on",
        "created_at",
    ]
    list_filter = ["status", "mode", "gateway", "decline_kind", CustomerListFilter]
    list_select_related = ["customer"]
    search_fields = [
        "receipt_number",
        "gateway_reference",
        "idempotency_key",
        "reference",
        "customer__display_name",
        "customer__email",
        "public_id__exact",
    ]
    ordering = ["-created_at", "-id"]
    date_hierarchy = "created_at"
    # Big, ever-growing tables: skip the second COUNT(*) over the whole table.
    show_full_result_count = False
    inlines = [PaymentAllocationInline, RefundInline]
    fieldsets = [
        (None, {"fields": ["receipt_number", "customer", ("amount", "currency"), "status"]}),
        (
            "How",
            {
                "fields": [
                    "mode",
                    "method",
                    "method_label",
                    "reference",
                    "received_on",
                    "processed_at",
                ]
            },
        ),
        (
            "Gateway",
            {
                "fields": [
                    "gateway",
                    "gateway_reference",
                    "idempotency_key",
                    ("failure_code", "decline_kind"),
                    "failure_message",
                ]
            },
        ),
        ("Notes", {"fields": ["note", "created_by"]}),
        ("Record", {"fields": ["public_id", *TIMESTAMPS], "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Everything but the internal note: amounts and states belong to the services.
        return [f.name for f in Payment._meta.fields if f.name not in {"id", "note"}]

    def has_add_permission(self, request) -> bool:
        # Payments are recorded by the billing services (charges, offline payments).
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Refund)
class RefundAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "payment", "amount", "status", "reason", "created_by", "created_at"]
    list_filter = ["status"]
    list_select_related = ["payment", "created_by"]
    search_fields = [
        "payment__receipt_number",
        "payment__customer__display_name",
        "gateway_reference",
        "idempotency_key",
    ]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "invoice",
        "attempt_number",
        "status",
        "scheduled_for",
        "attempted_at",
        "decline_kind",
        "payment",
        "subscription",
    ]
    list_filter = ["status", "decline_kind"]
    list_select_related = ["invoice", "payment", "subscription__customer", "subscription__plan"]
    search_fields = ["invoice__number", "invoice__customer__display_name"]
    ordering = ["-scheduled_for", "invoice", "attempt_number"]
    date_hierarchy = "scheduled_for"
