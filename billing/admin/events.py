"""The audit trail, append-only: staff read it, nobody edits it."""

import json

from django.contrib import admin
from django.utils.html import format_html

from billing.admin.base import CustomerListFilter, ViewOnlyAdminMixin
from billing.models import Event


@admin.register(Event)
class EventAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "description", "actor_kind", "actor_user", "customer"]
    list_filter = ["actor_kind", CustomerListFilter, "kind"]
    list_select_related = ["actor_user", "customer"]
    search_fields = ["kind", "description", "customer__display_name", "actor_user__email"]
    ordering = ["-created_at", "-id"]
    date_hierarchy = "created_at"
    # Big, ever-growing tables: skip the second COUNT(*) over the whole table.
    show_full_result_count = False
    fields = [
        "created_at",
        "kind",
        "description",
        ("actor_kind", "actor_user"),
        "customer",
        "subscription",
        "invoice",
        "payment",
        "credit_note",
        "before_after",
    ]
    readonly_fields = ["before_after"]

    @admin.display(description="data (before / after)")
    def before_after(self, obj: Event) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))
