"""The sandbox gateway's own ledger, shown to staff for testing; the gateway alone writes it."""

from django.contrib import admin

from billing.admin.base import ViewOnlyAdminMixin
from billing.models import SandboxCard, SandboxCharge


@admin.register(SandboxCard)
class SandboxCardAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["token", "behaviour", "brand", "last4", "exp_month", "exp_year", "created_at"]
    list_filter = ["behaviour", "brand"]
    search_fields = ["token", "last4"]
    ordering = ["-created_at"]


@admin.register(SandboxCharge)
class SandboxChargeAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "reference",
        "amount",
        "currency",
        "outcome",
        "failure_code",
        "refunded_amount",
        "created_at",
    ]
    list_filter = ["outcome"]
    search_fields = ["reference", "idempotency_key", "token"]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"
    # Big, ever-growing tables: skip the second COUNT(*) over the whole table.
    show_full_result_count = False
