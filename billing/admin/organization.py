"""The merchant's settings: organization, document numbering, dunning policy."""

from django.contrib import admin

from billing.admin.base import URL_FIELD_HTTPS, SingletonModelAdmin
from billing.models import DocumentSequence, DunningPolicy, Organization


@admin.register(Organization)
class OrganizationAdmin(SingletonModelAdmin):
    formfield_overrides = URL_FIELD_HTTPS
    fieldsets = [
        (
            "Company",
            {"fields": ["name", "legal_name", "email", "phone", "website", "tax_id", "logo"]},
        ),
        (
            "Address",
            {
                "fields": [
                    "address_line1",
                    "address_line2",
                    ("postal_code", "city"),
                    "state",
                    "country",
                ]
            },
        ),
        (
            "Billing defaults",
            {
                "fields": [
                    "base_currency",
                    "time_zone",
                    "payment_terms_days",
                    ("tax_rate", "tax_label"),
                    "invoice_footer",
                ]
            },
        ),
        (
            "Trials & reminders",
            {
                "fields": [
                    "free_plan_fallback",
                    "free_plan",
                    "trial_reminder_days",
                    "renewal_reminder_days",
                ]
            },
        ),
        ("Security", {"fields": ["mfa_policy", "email_otp_enabled", "trust_idp_mfa"]}),
    ]


@admin.register(DocumentSequence)
class DocumentSequenceAdmin(admin.ModelAdmin):
    list_display = ["kind", "prefix", "padding", "next_number", "next_formatted"]
    ordering = ["kind"]

    @admin.display(description="next document number")
    def next_formatted(self, obj: DocumentSequence) -> str:
        return obj.format(obj.next_number)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["next_formatted"]
        # Numbers are taken under a row lock by finalization; editing the counter by hand
        # could hand out a number twice or leave a gap. The kind is the row's identity.
        return ["kind", "next_number", "next_formatted"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting a series would restart its numbering at 1: duplicate document numbers.
        return False


@admin.register(DunningPolicy)
class DunningPolicyAdmin(SingletonModelAdmin):
    fields = ["retry_days", "final_action", "send_emails"]
