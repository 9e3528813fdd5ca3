"""Customers, their contact persons and groups, with the clerk's bulk actions."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db.models import Count, Prefetch, Q
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from accounts.services import INVITABLE, contact_invite, contacts_invite
from billing.admin.actions import CUSTOMER_ACTIONS
from billing.admin.base import (
    TIMESTAMPS,
    ReadOnlyTabularInline,
    admin_changelist_url,
)
from billing.admin.confirmation import action_confirmation_response, action_confirmed, action_form
from billing.admin.object_actions import ObjectActionsMixin, menu_entry
from billing.errors import BillingError
from billing.models import (
    ContactPerson,
    CreditNote,
    Customer,
    CustomerGroup,
    Event,
    Invoice,
    Payment,
    PaymentMethod,
    Subscription,
)
from billing.services.customers import (
    PAYMENT_TERMS_MAX_DAYS,
    customers_move_to_group,
    customers_set_payment_terms,
)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def portal_login_status(contact: ContactPerson) -> str:
    """What a clerk needs to know about a contact's login (the user must be select_related)."""
    user = contact.user
    if user is None:
        return "Invited, login removed" if contact.invited_at else "No login"
    if not user.is_active:
        return "Deactivated"
    if not user.has_usable_password():
        return (
            f"Invited {contact.invited_at:%Y-%m-%d}, pending" if contact.invited_at else "Pending"
        )
    return "Active"


# ----------------------------------------------------------------------------- groups
@admin.register(CustomerGroup)
class CustomerGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "price_list", "discount_percent", "payment_terms_days", "members"]
    list_select_related = ["price_list"]
    list_filter = ["price_list"]
    search_fields = ["name"]
    ordering = ["name"]
    autocomplete_fields = ["price_list"]
    readonly_fields = TIMESTAMPS

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_total=Count("customers"))

    @admin.display(description="customers", ordering="member_total")
    def members(self, obj: CustomerGroup) -> str:
        url = admin_changelist_url(Customer, group__id__exact=obj.pk)
        return format_html('<a href="{}">{}</a>', url, obj.member_total)


# ----------------------------------------------------------------------------- action forms
class MoveToGroupForm(forms.Form):
    NO_GROUP = "none"

    # Leaving a group is a choice of its own, so that "Apply" without choosing does nothing.
    group = forms.ChoiceField(
        help_text="Customers joining a group take its payment terms at once, when it has any."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.groups = {str(g.pk): g for g in CustomerGroup.objects.order_by("name")}
        self.fields["group"].choices = [
            ("", "Choose a group…"),
            *[(pk, g.name) for pk, g in self.groups.items()],
            (self.NO_GROUP, "(no group: remove them from their group)"),
        ]

    def clean_group(self) -> CustomerGroup | None:
        value = self.cleaned_data["group"]
        return None if value == self.NO_GROUP else self.groups[value]


class PaymentTermsForm(forms.Form):
    days = forms.IntegerField(
        label="Payment terms (days)",
        min_value=0,
        max_value=PAYMENT_TERMS_MAX_DAYS,
        required=False,
        help_text="Days from issue to due date; 0 is due on receipt. Empty: the group's terms, "
        "else the organization's default. Only invoices finalized from now on use them.",
    )


class InvitationForm(forms.Form):
    """Nothing to choose: the page lists who gets an invitation."""


# ----------------------------------------------------------------------------- filters
class HierarchyFilter(admin.SimpleListFilter):
    title = "hierarchy"
    parameter_name = "hierarchy"

    def lookups(self, request, model_admin):
        return [
            ("parent", "Parents (have branches)"),
            ("branch", "Branches (have a parent)"),
            ("standalone", "Standalone"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "parent":
                return queryset.filter(children__isnull=False).distinct()
            case "branch":
                return queryset.filter(parent__isnull=False)
            case "standalone":
                return queryset.filter(parent__isnull=True, children__isnull=True)
        return queryset


class PortalLoginFilter(admin.SimpleListFilter):
    title = "portal login"
    parameter_name = "login"

    def lookups(self, request, model_admin):
        return [
            ("none", "No login"),
            ("pending", "Invited, pending"),
            ("active", "Active"),
            ("inactive", "Deactivated"),
        ]

    def queryset(self, request, queryset):
        pending = Q(user__password__startswith=UNUSABLE_PASSWORD_PREFIX)
        match self.value():
            case "none":
                return queryset.filter(user__isnull=True)
            case "pending":
                return queryset.filter(pending, user__is_active=True)
            case "active":
                return queryset.filter(user__is_active=True).exclude(pending)
            case "inactive":
                return queryset.filter(user__is_active=False)
        return queryset


# ----------------------------------------------------------------------------- customers
class ContactPersonInline(admin.StackedInline):
    model = ContactPerson
    extra = 0
    fields = [
        ("first_name", "last_name"),
        ("email", "phone"),
        ("is_primary", "receives_documents"),
        "portal_role",
        ("login_status", "invited_at"),
    ]
    readonly_fields = ["login_status", "invited_at"]
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")

    @admin.display(description="portal login")
    def login_status(self, obj: ContactPerson) -> str:
        return portal_login_status(obj) if obj.pk else "-"


class ChildCustomerInline(ReadOnlyTabularInline):
    model = Customer
    fk_name = "parent"
    verbose_name = "branch"
    verbose_name_plural = "branches (child customers)"
    fields = ["display_name", "email", "status", "visible_to_parent"]


@admin.register(Customer)
class CustomerAdmin(ObjectActionsMixin, admin.ModelAdmin):
    list_display = [
        "display_name",
        "company_name",
        "email",
        "status",
        "group",
        "parent",
        "payment_terms_days",
        "created_at",
    ]
    list_filter = ["status", HierarchyFilter, "group", "tax_exempt"]
    list_select_related = ["group", "parent"]
    search_fields = ["display_name", "company_name", "email", "contacts__email", "public_id__exact"]
    ordering = ["display_name"]
    date_hierarchy = "created_at"
    autocomplete_fields = ["group", "parent"]
    readonly_fields = ["public_id", *TIMESTAMPS, "related_records"]
    inlines = [ContactPersonInline, ChildCustomerInline]
    actions = [
        "move_to_group",
        "set_payment_terms",
        "invite_contacts",
        *(menu_entry(action) for action in CUSTOMER_ACTIONS),
    ]
    # One-time charge, offline payment, credit note: confirmation pages (actions.py).
    object_actions = CUSTOMER_ACTIONS
    fieldsets = [
        (
            "Details",
            {
                "fields": [
                    "display_name",
                    "company_name",
                    ("email", "phone"),
                    "status",
                    "related_records",
                ]
            },
        ),
        (
            "Addresses",
            {
                "fields": [
                    "billing_line1",
                    "billing_line2",
                    ("billing_postal_code", "billing_city"),
                    ("billing_state", "billing_country"),
                    "shipping_line1",
                    "shipping_line2",
                    ("shipping_postal_code", "shipping_city"),
                    ("shipping_state", "shipping_country"),
                ]
            },
        ),
        (
            "Billing terms & tax",
            {"fields": ["payment_terms_days", "tax_exempt", "tax_rate", "tax_id"]},
        ),
        ("Hierarchy & group", {"fields": ["group", "parent", "visible_to_parent"]}),
        ("Notes", {"fields": ["notes", "public_id", *TIMESTAMPS]}),
    ]

    @admin.display(description="records")
    def related_records(self, obj: Customer) -> str:
        if obj.pk is None:
            return "-"
        links = [
            (
                admin_changelist_url(model, customer=obj.pk),
                capfirst(model._meta.verbose_name_plural),
            )
            for model in (Subscription, Invoice, Payment, CreditNote, PaymentMethod, Event)
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def save_model(self, request: HttpRequest, obj: Customer, form, change: bool) -> None:
        # Group and payment-terms changes go through the services: the group's terms follow
        # the customer in, and each change is an audited event with before and after.
        target_group = obj.group
        target_terms = obj.payment_terms_days
        group_changed = "group" in form.changed_data
        terms_changed = change and "payment_terms_days" in form.changed_data
        if group_changed:
            obj.group_id = form.initial.get("group") if change else None
        if terms_changed:
            obj.payment_terms_days = form.initial.get("payment_terms_days")
        super().save_model(request, obj, form, change)
        if group_changed:
            customers_move_to_group(customers=[obj], group=target_group, actor=request.user)
        if terms_changed or (group_changed and "payment_terms_days" in form.changed_data):
            # Terms typed on the form win over the group's.
            customers_set_payment_terms(customers=[obj], days=target_terms, actor=request.user)
        obj.refresh_from_db(fields=["group", "payment_terms_days", "updated_at"])

    # ------------------------------------------------------------------ bulk actions
    def _selection_row(self, customer: Customer) -> list[object]:
        terms = customer.payment_terms_days
        return [customer, customer.group or "-", "-" if terms is None else f"{terms} days"]

    @admin.action(description="Move to a group…", permissions=["change"])
    def move_to_group(self, request: HttpRequest, queryset):
        form = action_form(MoveToGroupForm, request)
        if action_confirmed(request) and form.is_valid():
            group = form.cleaned_data["group"]
            selected = queryset.count()
            try:
                changed = customers_move_to_group(
                    customers=queryset, group=group, actor=request.user
                )
            except BillingError as error:
                self.message_user(request, error.message, messages.ERROR)
                return None
            where = f"to {group}" if group else "out of their group"
            unchanged = selected - changed
            self.message_user(
                request,
                f"Moved {_plural(changed, 'customer')} {where}"
                + (f"; {unchanged} already had these settings." if unchanged else "."),
                messages.SUCCESS,
            )
            return None
        return action_confirmation_response(
            self,
            request,
            queryset.select_related("group"),
            action="move_to_group",
            title="Move customers to a group",
            intro="Choose the group. Customers take its payment terms at once; its price list "
            "and discount apply to invoices from now on.",
            form=form,
            columns=["Customer", "Current group", "Payment terms"],
            row=self._selection_row,
        )

    @admin.action(description="Change payment terms…", permissions=["change"])
    def set_payment_terms(self, request: HttpRequest, queryset):
        form = action_form(PaymentTermsForm, request)
        if action_confirmed(request) and form.is_valid():
            days = form.cleaned_data["days"]
            selected = queryset.count()
            try:
                changed = customers_set_payment_terms(
                    customers=queryset, days=days, actor=request.user
                )
            except BillingError as error:
                self.message_user(request, error.message, messages.ERROR)
                return None
            terms = "the default terms" if days is None else f"{days} days"
            unchanged = selected - changed
            self.message_user(
                request,
                f"Set payment terms to {terms} for {_plural(changed, 'customer')}"
                + (f"; {unchanged} already had them." if unchanged else "."),
                messages.SUCCESS,
            )
            return None
        return action_confirmation_response(
            self,
            request,
            queryset.select_related("group"),
            action="set_payment_terms",
            title="Change payment terms",
            intro="Set the payment terms of the customers below. Invoices already issued keep "
            "their due dates.",
            form=form,
            columns=["Customer", "Group", "Current payment terms"],
            row=self._selection_row,
        )

    def has_invite_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return user.has_perm("billing.change_contactperson") and user.has_perm("accounts.add_user")

    @admin.action(description="Invite contacts to the portal…", permissions=["invite"])
    def invite_contacts(self, request: HttpRequest, queryset):
        form = action_form(InvitationForm, request)
        if action_confirmed(request) and form.is_valid():
            try:
                invited = contacts_invite(customers=queryset, actor=request.user)
            except BillingError as error:
                self.message_user(request, error.message, messages.ERROR)
                return None
            if invited:
                self.message_user(
                    request,
                    f"Sent portal invitations to {_plural(invited, 'contact')} "
                    f"of {_plural(queryset.count(), 'customer')}.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    "Nobody to invite: every contact with an email already has a portal login.",
                    messages.WARNING,
                )
            return None
        contacts = Prefetch(
            "contacts",
            queryset=ContactPerson.objects.exclude(email="").filter(INVITABLE).order_by("pk"),
            to_attr="invitable_contacts",
        )
        return action_confirmation_response(
            self,
            request,
            queryset.prefetch_related(contacts),
            action="invite_contacts",
            title="Invite contacts to the portal",
            intro="Each contact below without a portal login (or with an invitation still "
            "pending) gets an email with a single-use link to set a password. Contacts "
            "who already signed up are left alone.",
            form=form,
            columns=["Customer", "Contacts to invite"],
            row=lambda customer: [
                customer,
                ", ".join(c.email for c in customer.invitable_contacts) or "(nobody)",
            ],
            submit_label="Send invitations",
        )


# ----------------------------------------------------------------------------- contacts
@admin.register(ContactPerson)
class ContactPersonAdmin(admin.ModelAdmin):
    list_display = [
        "full_name_display",
        "email",
        "customer",
        "portal_role",
        "is_primary",
        "receives_documents",
        "login_status",
        "invited_at",
    ]
    list_filter = ["portal_role", PortalLoginFilter, "is_primary", "receives_documents"]
    list_select_related = ["customer", "user"]
    search_fields = [
        "first_name",
        "last_name",
        "email",
        "customer__display_name",
        "customer__company_name",
    ]
    ordering = ["customer__display_name", "-is_primary", "first_name", "last_name"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["login_status", "user", "invited_at", "public_id", *TIMESTAMPS]
    actions = ["invite_to_portal"]
    fieldsets = [
        (None, {"fields": ["customer", ("first_name", "last_name"), ("email", "phone")]}),
        (
            "Role",
            {"fields": ["is_primary", "receives_documents", "portal_role"]},
        ),
        ("Portal login", {"fields": ["login_status", "user", "invited_at"]}),
        ("Record", {"fields": ["public_id", *TIMESTAMPS], "classes": ["collapse"]}),
    ]

    @admin.display(description="name", ordering="first_name")
    def full_name_display(self, obj: ContactPerson) -> str:
        return obj.full_name

    @admin.display(description="portal login")
    def login_status(self, obj: ContactPerson) -> str:
        return portal_login_status(obj) if obj.pk else "-"

    def has_invite_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return user.has_perm("billing.change_contactperson") and user.has_perm("accounts.add_user")

    @admin.action(description="Invite to the portal…", permissions=["invite"])
    def invite_to_portal(self, request: HttpRequest, queryset):
        form = action_form(InvitationForm, request)
        if action_confirmed(request) and form.is_valid():
            invited = 0
            # One contact at a time: a refused contact (e.g. a staff email) must not keep
            # the others from being invited.
            for contact in queryset.select_related("customer").order_by("pk"):
                try:
                    contact_invite(contact=contact, actor=request.user, request=request)
                except BillingError as error:
                    self.message_user(request, f"Not invited: {error.message}", messages.ERROR)
                else:
                    invited += 1
            if invited:
                self.message_user(
                    request,
                    f"Sent portal invitations to {_plural(invited, 'contact')}.",
                    messages.SUCCESS,
                )
            return None
        return action_confirmation_response(
            self,
            request,
            queryset.select_related("customer", "user"),
            action="invite_to_portal",
            title="Invite contacts to the portal",
            intro="Each contact below gets an email with a single-use link to set a password. "
            "Re-inviting someone whose invitation is pending makes the earlier link stop working.",
            form=form,
            columns=["Contact", "Customer", "Portal login"],
            row=lambda contact: [contact, contact.customer, portal_login_status(contact)],
            submit_label="Send invitations",
        )
