from django.shortcuts import render
from django.utils.functional import SimpleLazyObject

from billing import selectors
from billing.clock import billing_today
from billing.enums import InvoiceStatus, PaymentStatus, SubscriptionStatus
from billing.models import Invoice, Payment, Subscription
from portal.access import portal_view
from portal.charts import billed_and_paid_chart, last_months

RENEWING = (SubscriptionStatus.LIVE, SubscriptionStatus.PAST_DUE)
# What the dashboard's tables show: whole rows (addresses, JSON snapshots) cost more to load.
INVOICE_FIELDS = (
    "public_id",
    "number",
    "customer__display_name",
    "status",
    "issue_date",
    "due_date",
    "total",
)
RENEWAL_FIELDS = (
    "plan__name",
    "quantity",
    "customer__display_name",
    "current_term_end",
)


@portal_view()
def dashboard(request):
    portal = request.portal
    ids = portal.customer_ids
    today = billing_today()
    months = last_months(today)
    recent_invoices = (
        selectors.invoices_with_amounts(
            Invoice.objects.filter(customer__in=ids).exclude(status=InvoiceStatus.DRAFT)
        )
        .select_related("customer")
        .only(*INVOICE_FIELDS)
        .order_by("-issue_date", "-id")[:5]
    )
    context = {
        "today": today,
        # What the cached part varies on besides the books: the pay-all button.
        "books_key": (portal.can_pay, request.path),
        # Lazy, like the querysets: read only when the cached dashboard is out of date.
        "totals": SimpleLazyObject(
            lambda: selectors.money_figures(ids, customer_id=portal.customer.pk, today=today)
        ),
        "renewals": Subscription.objects.filter(customer__in=ids, status__in=RENEWING)
        .select_related("plan", "customer")
        .only(*RENEWAL_FIELDS)
        .order_by("current_term_end", "id")[:5],
        "recent_invoices": recent_invoices,
        "recent_payments": Payment.objects.filter(customer__in=ids, status=PaymentStatus.SUCCEEDED)
        .only("receipt_number", "received_on", "method_label", "amount")
        .order_by("-received_on", "-id")[:5],
        "chart": SimpleLazyObject(
            lambda: billed_and_paid_chart(
                selectors.monthly_activity(ids, first_month=months[0]), months
            )
        ),
    }
    return render(request, "portal/dashboard.html", context)
