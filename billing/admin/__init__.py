"""The merchant staff admin (``/admin/``): every billing model, one module per aggregate.

Admin actions call services (``billing.services``, ``accounts.services``); the screens only
write what is plain configuration. Money that moved, finalized documents and the audit trail
are read-only here.
"""

from django.contrib import admin

from billing.admin import (  # noqa: F401 (importing registers the ModelAdmins)
    catalog,
    customers,
    events,
    invoices,
    organization,
    payments,
    sandbox,
    subscriptions,
)

admin.site.site_header = "Billing admin"
admin.site.site_title = "Billing admin"
admin.site.index_title = "Billing"
