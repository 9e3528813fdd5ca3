"""The staff admin site: staff sign in through the portal's login (rate-limited, with MFA) and
every admin page requires a session verified with a one-time code."""

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpResponseRedirect
from django.urls import reverse


class BillingAdminSite(admin.AdminSite):
    site_header = "Billing admin"
    site_title = "Billing admin"
    index_title = "Merchant administration"

    def has_permission(self, request) -> bool:
        user = request.user
        return user.is_active and user.is_staff and user.is_verified()

    def login(self, request, extra_context=None):
        user = request.user
        if user.is_authenticated and user.is_staff and not user.is_verified():
            target = reverse("accounts_mfa_setup")
        else:
            target = reverse("account_login")
        next_url = request.GET.get("next") or reverse("admin:index")
        return HttpResponseRedirect(f"{target}?{urlencode({'next': next_url})}")


class BillingAdminConfig(AdminConfig):
    default_site = "config.admin.BillingAdminSite"
