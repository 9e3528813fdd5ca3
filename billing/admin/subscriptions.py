"""Subscriptions with what they carry and what is scheduled for them; metered usage."""

import uuid

from django import forms
from django.contrib import admin

from billing.admin.actions import SUBSCRIPTION_ACTIONS
from billing.admin.base import TIMESTAMPS, CustomerListFilter, ReadOnlyTabularInline
from billing.admin.object_actions import ObjectActionsMixin, menu_entry
from billing.models import (
    Event,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    UsageRecord,
)

# Assigned only by the billing services (lifecycle transitions, renewals, trials, pauses):
# an edit here would skip the lifecycle check, the invoices and the audit event.
SUBSCRIPTION_ENGINE_FIELDS = [
    "status",
    "current_term_start",
    "current_term_end",
    "trial_extensions_used",
    "cancelled_at",
    "cancel_reason",
    "paused_at",
]


class SubscriptionAddonInline(admin.TabularInline):
    model = SubscriptionAddon
    fields = ["addon", "quantity"]
    autocomplete_fields = ["addon"]
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("addon")


class SubscriptionCouponInline(admin.TabularInline):
    model = SubscriptionCoupon
    fields = ["coupon", "remaining_cycles", "applied_at"]
    readonly_fields = ["applied_at"]
    autocomplete_fields = ["coupon"]
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("coupon")


class ScheduledChangeInline(admin.StackedInline):
    model = ScheduledChange
    fields = ["plan", "quantity", "addons", "coupon", "requested_by", *TIMESTAMPS]
    readonly_fields = ["requested_by", *TIMESTAMPS]
    autocomplete_fields = ["plan", "coupon"]
    extra = 0
    max_num = 1
    verbose_name = "scheduled change (applies at term end)"


class SubscriptionEventInline(ReadOnlyTabularInline):
    model = Event
    fields = ["created_at", "kind", "description", "actor_kind", "actor_user"]
    verbose_name_plural = "timeline"
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor_user")


class SubscriptionAdminForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = "__all__"  # noqa: DJ007 (the admin's fieldsets choose what is shown)

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("payment_method")
        customer = cleaned.get("customer") or getattr(self.instance, "customer", None)
        if method is not None and customer is not None and method.customer_id != customer.pk:
            self.add_error("payment_method", "This card belongs to another customer.")
        return cleaned


@admin.register(Subscription)
class SubscriptionAdmin(ObjectActionsMixin, admin.ModelAdmin):
    form = SubscriptionAdminForm
    # Cancel, pause, charge…: each a confirmation page that calls the service (actions.py).
    object_actions = SUBSCRIPTION_ACTIONS
    actions = [menu_entry(action) for action in SUBSCRIPTION_ACTIONS]
    list_display = [
        "customer",
        "plan",
        "quantity",
        "status",
        "next_billing_date",
        "auto_charge",
        "trial_end",
        "cancel_at",
        "start_date",
    ]
    list_filter = [
        "status",
        "auto_charge",
        ("plan", admin.RelatedOnlyFieldListFilter),
        CustomerListFilter,
    ]
    list_select_related = ["customer", "plan"]
    search_fields = [
        "customer__display_name",
        "customer__company_name",
        "customer__email",
        "plan__code",
        "plan__name",
        "public_id__exact",
    ]
    ordering = ["-created_at"]
    date_hierarchy = "current_term_end"
    autocomplete_fields = ["customer", "plan", "payment_method"]
    inlines = [
        SubscriptionAddonInline,
        SubscriptionCouponInline,
        ScheduledChangeInline,
        SubscriptionEventInline,
    ]
    fieldsets = [
        (None, {"fields": ["customer", "plan", "quantity", "status"]}),
        ("Payment", {"fields": ["auto_charge", "payment_method"]}),
        (
            "Term",
            {
                "fields": [
                    ("start_date", "anchor_date"),
                    ("current_term_start", "current_term_end"),
                    "remaining_billing_cycles",
                ]
            },
        ),
        ("Trial", {"fields": [("trial_start", "trial_end"), "trial_extensions_used"]}),
        (
            "Pause & cancellation",
            {
                "fields": [
                    ("pause_at", "resume_at", "paused_at"),
                    ("cancel_at", "cancelled_at"),
                    "cancel_reason",
                    "cancel_reason_text",
                ]
            },
        ),
        ("Record", {"fields": ["public_id", *TIMESTAMPS], "classes": ["collapse"]}),
    ]

    @admin.display(description="next billing date", ordering="current_term_end")
    def next_billing_date(self, obj: Subscription):
        return obj.current_term_end

    def get_readonly_fields(self, request, obj=None):
        readonly = ["public_id", *TIMESTAMPS, *SUBSCRIPTION_ENGINE_FIELDS]
        if obj is not None:
            # Who and what is subscribed, and from when, are fixed once billing started.
            readonly += ["customer", "start_date", "anchor_date", "trial_start", "trial_end"]
        return readonly

    def has_delete_permission(self, request, obj=None) -> bool:
        # A subscription ends by cancellation (a service), never by deleting its history.
        return False


class UnbilledFilter(admin.SimpleListFilter):
    title = "billed"
    parameter_name = "billed"

    def lookups(self, request, model_admin):
        return [("no", "Not yet billed"), ("yes", "Billed")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(invoice__isnull=True)
        if self.value() == "yes":
            return queryset.filter(invoice__isnull=False)
        return queryset


class UsageCustomerFilter(CustomerListFilter):
    customer_field = "subscription__customer"


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["used_at", "subscription", "addon", "quantity", "invoice", "idempotency_key"]
    list_filter = [UnbilledFilter, ("addon", admin.RelatedOnlyFieldListFilter), UsageCustomerFilter]
    list_select_related = ["subscription__customer", "subscription__plan", "addon", "invoice"]
    search_fields = ["idempotency_key", "subscription__customer__display_name", "addon__code"]
    ordering = ["-used_at"]
    date_hierarchy = "used_at"
    autocomplete_fields = ["subscription", "addon"]
    readonly_fields = ["invoice", "created_at"]

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        # Usage entered by hand still needs a unique key so an import cannot double it.
        initial.setdefault("idempotency_key", f"admin-{uuid.uuid4().hex}")
        return initial

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.invoice_id is not None:
            return [f.name for f in UsageRecord._meta.fields]
        return super().get_readonly_fields(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        # Billed usage is part of a finalized invoice: it cannot change any more.
        if obj is not None and obj.invoice_id is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.invoice_id is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # Bulk delete cannot tell billed usage apart; unbilled rows are deleted one by one.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
