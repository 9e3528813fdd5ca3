"""Staff screens for logins: an email-based user admin (the custom user has no username)."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from accounts.models import User
from billing.admin.base import admin_link


def _email_clean(form: forms.ModelForm) -> str:
    email = User.objects.normalize_email(form.cleaned_data["email"]).lower()
    # Logins match emails case-insensitively; the database agrees (user_email_ci_unique).
    taken = User.objects.filter(email__iexact=email).exclude(pk=form.instance.pk)
    if taken.exists():
        raise forms.ValidationError("A login with this email already exists.")
    return email


def _staff_contact_check(form: forms.ModelForm, cleaned: dict) -> None:
    """Staff accounts must never be portal logins, nor portal logins staff."""
    instance = form.instance
    if instance.pk is None:
        return
    is_privileged = cleaned.get("is_staff") or cleaned.get("is_superuser")
    if is_privileged and hasattr(instance, "contact"):
        form.add_error(
            "is_staff",
            f"This login belongs to a customer's contact ({instance.contact}); "
            "staff need a separate login.",
        )


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ["email", "full_name"]

    def clean_email(self) -> str:
        return _email_clean(self)


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"

    def clean_email(self) -> str:
        return _email_clean(self)

    def clean(self):
        cleaned = super().clean()
        _staff_contact_check(self, cleaned)
        return cleaned


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    list_display = [
        "email",
        "full_name",
        "is_staff",
        "is_superuser",
        "is_active",
        "portal_contact",
        "last_login",
        "date_joined",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active", "groups"]
    list_select_related = ["contact__customer"]
    search_fields = ["email", "full_name", "contact__customer__display_name"]
    ordering = ["email"]
    date_hierarchy = "date_joined"
    readonly_fields = ["portal_contact", "last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Personal info", {"fields": ["full_name", "portal_contact"]}),
        (
            "Permissions",
            {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]},
        ),
        ("Important dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [
        (
            None,
            {
                "classes": ["wide"],
                "fields": ["email", "full_name", "usable_password", "password1", "password2"],
            },
        ),
    ]

    actions = ["reset_mfa"]

    @admin.action(description="Reset two-factor authentication (the user enrols again)")
    def reset_mfa(self, request, queryset):
        from accounts.services import user_mfa_reset

        for user in queryset.order_by("pk"):
            user_mfa_reset(user=user, actor=request.user)
        self.message_user(
            request,
            f"Two-factor authentication reset for {queryset.count()} user(s). "
            "They set it up again at their next sign-in.",
        )

    @admin.display(description="portal contact")
    def portal_contact(self, obj: User) -> str:
        contact = getattr(obj, "contact", None)
        if contact is None:
            return "-"
        return admin_link(contact, f"{contact.full_name} · {contact.customer}")
