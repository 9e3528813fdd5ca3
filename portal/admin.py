"""Staff screens for the portal: what customers may do, the merchant's links, what customers sent."""

from django.contrib import admin
from django.utils.text import Truncator

from billing.admin.base import (
    URL_FIELD_HTTPS,
    CustomerListFilter,
    SingletonModelAdmin,
    ViewOnlyAdminMixin,
)
from portal.models import ContactMessage, PortalPreferences, Review, WebTab


@admin.register(PortalPreferences)
class PortalPreferencesAdmin(SingletonModelAdmin):
    autocomplete_fields = ["retention_coupon", "allowed_plans"]
    fieldsets = [
        (
            "Modules",
            {
                "fields": [
                    "show_subscriptions",
                    "show_invoices",
                    "show_payments",
                    "show_credits",
                    "show_statements",
                ]
            },
        ),
        (
            "Customer actions",
            {
                "fields": [
                    "allow_payments",
                    "allow_payment_method_changes",
                    "allow_auto_charge_toggle",
                    "allow_customer_edit",
                    "allow_document_forward",
                    "allow_reviews",
                    "allow_contact_form",
                ]
            },
        ),
        (
            "Trials",
            {
                "fields": [
                    "allow_trial_convert",
                    "allow_trial_cancel",
                    "allow_trial_extend",
                    "trial_extension_limit",
                ]
            },
        ),
        (
            "Plan changes",
            {
                "fields": [
                    "allow_plan_change",
                    "allowed_plans",
                    ("allow_upgrades", "upgrade_timing"),
                    ("allow_downgrades", "downgrade_timing"),
                    "allow_quantity_change",
                    "allow_addon_change",
                    "allow_coupons",
                    "allow_frequency_change",
                ]
            },
        ),
        (
            "Pause, cancel & reactivate",
            {
                "fields": [
                    "allow_pause",
                    "credit_unused_pause_time",
                    "allow_cancel_now",
                    "allow_cancel_at_term_end",
                    "credit_on_cancel_now",
                    "void_unpaid_on_cancel",
                    ("retention_offer", "retention_coupon"),
                    "retention_message",
                    "allow_reactivation",
                    "reactivation_requires_payment",
                ]
            },
        ),
    ]


@admin.register(WebTab)
class WebTabAdmin(admin.ModelAdmin):
    formfield_overrides = URL_FIELD_HTTPS
    list_display = ["title", "url", "position", "active"]
    list_editable = ["position", "active"]
    list_filter = ["active"]
    search_fields = ["title", "url"]
    ordering = ["position", "title"]


@admin.register(Review)
class ReviewAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    # What customers wrote is theirs: staff read it, nobody edits it.
    list_display = ["created_at", "customer", "rating", "excerpt", "author"]
    list_filter = ["rating", CustomerListFilter]
    list_select_related = ["customer", "author"]
    search_fields = ["text", "customer__display_name", "author__email"]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"

    @admin.display(description="text")
    def excerpt(self, obj: Review) -> str:
        return Truncator(obj.text).chars(80)


@admin.register(ContactMessage)
class ContactMessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "subject", "customer", "author", "handled"]
    list_filter = ["handled", CustomerListFilter]
    list_select_related = ["customer", "author"]
    search_fields = ["subject", "body", "customer__display_name", "author__email"]
    ordering = ["handled", "-created_at"]
    date_hierarchy = "created_at"
    fields = ["customer", "author", "created_at", "subject", "body", "handled"]
    # Staff only mark a message handled; the message itself is the customer's.
    readonly_fields = ["customer", "author", "created_at", "subject", "body"]
    actions = ["mark_handled"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Mark as handled", permissions=["change"])
    def mark_handled(self, request, queryset):
        count = queryset.filter(handled=False).update(handled=True)
        self.message_user(request, f"Marked {count} message{'s' if count != 1 else ''} handled.")
