"""Building blocks shared by the staff admin: singletons, view-only screens, links, dates."""

import datetime
import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from billing.models import Customer, Organization

MONEY = models.DecimalField(max_digits=14, decimal_places=2)
ZERO = models.Value(Decimal("0.00"), output_field=MONEY)
TIMESTAMPS = ("created_at", "updated_at")
# Addresses typed without a scheme are https (Django 6's default; silences its warning now).
URL_FIELD_HTTPS = {models.URLField: {"assume_scheme": "https"}}


def organization_today(request: HttpRequest | None = None) -> datetime.date:
    """Today in the organization's time zone (billing dates are calendar dates there).

    Cached on the request: the changelist, its filters and its columns ask more than once.
    """
    cached = getattr(request, "_billing_organization_today", None)
    if cached is not None:
        return cached
    zone_name = Organization.objects.filter(pk=1).values_list("time_zone", flat=True).first()
    try:
        zone = zoneinfo.ZoneInfo(zone_name or settings.TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    today = timezone.localdate(timezone=zone)
    if request is not None:
        request._billing_organization_today = today
    return today


def admin_change_url(obj: models.Model) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def admin_changelist_url(model: type[models.Model], **params) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def admin_link(obj: models.Model | None, text: str | None = None) -> str:
    if obj is None:
        return "-"
    return format_html('<a href="{}">{}</a>', admin_change_url(obj), text or str(obj))


class SingletonModelAdmin(admin.ModelAdmin):
    """The settings row that exists once (pk 1): its changelist is its change page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        # load() creates the row with its defaults the first time anyone looks.
        obj = self.model.load()
        return HttpResponseRedirect(admin_change_url(obj))

    def response_post_save_change(self, request: HttpRequest, obj):
        # There is no list to return to: stay on the settings page.
        return HttpResponseRedirect(admin_change_url(obj))


class ViewOnlyAdminMixin:
    """Staff may look, never add, change or delete (ledgers, audit trails, gateway books)."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyTabularInline(ViewOnlyAdminMixin, admin.TabularInline):
    """A list of related rows shown for context; they are written elsewhere."""

    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        # Every shown field, so that non-editable ones (created_at) never reach a form.
        return [
            *super().get_readonly_fields(request, obj),
            *flatten_fieldsets(self.get_fieldsets(request, obj)),
        ]


class CustomerListFilter(admin.SimpleListFilter):
    """Narrow a list to one customer, set by the links on the customer's page.

    Listing every customer in the sidebar would not scale (a select of 100,000 names and a
    DISTINCT over the table on every page view), so the sidebar only shows the chosen one;
    to find a customer, search by name or email.
    """

    title = "customer"
    parameter_name = "customer"
    # Subclasses point this at the customer through a relation, e.g. "payment__customer".
    customer_field = "customer"

    def lookups(self, request, model_admin):
        value = self.value()
        if not value or not value.isdigit():
            return []
        customer = Customer.objects.filter(pk=value).only("display_name").first()
        return [(value, str(customer))] if customer else []

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{f"{self.customer_field}__pk": int(value)})
