"""/portal/: the customer portal. Each area has its own URL module."""

from django.urls import path

from portal.views import dashboard

app_name = "portal"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
]
