"""Invoices in the portal: the filtered list, one invoice, its PDF and print view, forwarding.

Every invoice is resolved through request.portal (404 outside the customer's scope); drafts
are never shown. The list pages by keyset: the cursor is the last row's (issue date, id),
signed so a visitor can neither read nor forge it (it only ever narrows a scoped query anyway).
"""

import datetime

from django.contrib import messages
from django.core import signing
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_http_methods, require_safe

from billing import selectors
from billing.clock import billing_today
from billing.enums import InvoiceStatus
from billing.errors import BillingError
from billing.models import ContactPerson, Customer, Invoice, Organization, Subscription
from portal.access import portal_view
from portal.documents import pdf_response
from portal.formatting import short_date
from portal.forms import InvoiceFilterForm, InvoiceForwardForm
from portal.services import forward_recipients_allowed, invoice_forward

PAGE_SIZE = 25
# What a row of the list shows: loading whole rows (addresses, JSON snapshots) costs more than
# the query itself.
LIST_FIELDS = (
    "public_id",
    "number",
    "customer_id",
    "customer__display_name",
    "status",
    "currency",
    "issue_date",
    "due_date",
    "total",
)
CURSOR_SIGNER = signing.Signer(salt="portal.invoices.cursor")


def _invoices():
    """Finalized invoices with their amounts; scoped by request.portal.get at each use."""
    return selectors.invoices_with_amounts(
        Invoice.objects.exclude(status=InvoiceStatus.DRAFT)
    ).select_related("customer")


def _cursor(invoice: Invoice) -> str:
    # No timestamp in it (unlike signing.dumps): the same page always links the same cursors,
    # so a cached table equals a freshly rendered one.
    return CURSOR_SIGNER.sign_object([invoice.issue_date.isoformat(), invoice.pk])


def _read_cursor(token: str | None) -> tuple[datetime.date, int] | None:
    """The (issue date, id) in a cursor, or None for a missing or tampered one (first page)."""
    if not token:
        return None
    try:
        day, pk = CURSOR_SIGNER.unsign_object(token)
        return datetime.date.fromisoformat(day), int(pk)
    except (signing.BadSignature, ValueError, TypeError):
        return None


def _page_url(request, **cursor) -> str:
    """This list with the same filters and another cursor."""
    query = request.GET.copy()
    for key in ("older", "newer"):
        query.pop(key, None)
    query.update(cursor)
    return f"{request.path}?{query.urlencode()}"


def _filter_options(portal) -> tuple[dict, dict]:
    """{public id: (pk, label)} of the visible subscriptions, and of the branches (parents only).

    Plain rows, not model instances: a customer may hold hundreds of subscriptions.
    """
    rows = (
        portal.scope(Subscription.objects)
        .order_by("customer__display_name", "start_date", "id")
        .values_list(
            "public_id", "pk", "plan__name", "quantity", "customer__display_name", "start_date"
        )
    )
    subscriptions = {
        str(public_id): (
            pk,
            f"{plan} × {quantity}"
            + (f" · {customer_name}" if portal.is_parent else "")
            + (f" (since {short_date(start)})" if start else ""),
        )
        for public_id, pk, plan, quantity, customer_name, start in rows
    }
    customers = {}
    if portal.is_parent:
        names = dict(portal.visible)
        customers = {
            str(public_id): (pk, names[pk])
            for pk, public_id in Customer.objects.filter(pk__in=portal.customer_ids).values_list(
                "pk", "public_id"
            )
        }
        customers = dict(
            sorted(customers.items(), key=lambda item: item[1][0] != portal.customer.pk)
        )
    return subscriptions, customers


def _partial_requested(request) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _pagination(request, rows, *, has_newer: bool, has_older: bool) -> dict:
    return {
        "paged": bool(request.GET.get("older") or request.GET.get("newer")),
        "first_url": _page_url(request),
        "newer_url": _page_url(request, newer=_cursor(rows[0])) if rows and has_newer else "",
        "older_url": _page_url(request, older=_cursor(rows[-1])) if rows and has_older else "",
    }


def _table_key(request) -> tuple | None:
    """The unfiltered list's pages are cached, keyed by their (verified) cursors: a bounded
    set per customer. Filtered views, or unknown parameters, are computed each time."""
    if not set(request.GET) <= {"older", "newer"}:
        return None
    older, newer = request.GET.get("older"), request.GET.get("newer")
    return (request.path, _read_cursor(older), _read_cursor(newer), bool(older or newer))


@require_safe
@portal_view(preference="show_invoices")
def invoice_list(request):
    portal = request.portal
    today = billing_today()
    options = portal.cached("invoice-filters", (), lambda: _filter_options(portal), today=today)
    form = InvoiceFilterForm(request.GET, *options)

    def page() -> dict:
        invoices = selectors.invoices_of(portal.customer_ids, today=today, **form.filters())
        rows, has_newer, has_older = selectors.invoice_keyset_page(
            invoices.select_related("customer").only(*LIST_FIELDS),
            size=PAGE_SIZE,
            older_than=_read_cursor(request.GET.get("older")),
            newer_than=_read_cursor(request.GET.get("newer")),
        )
        context = {"invoices": rows}
        context.update(_pagination(request, rows, has_newer=has_newer, has_older=has_older))
        return context

    # Read only when the cached table is out of date (the template's bookscache).
    context = {
        "form": form,
        "page": SimpleLazyObject(page),
        "today": today,
        "books_key": _table_key(request),
    }
    template = "portal/invoices/list.html"
    response = render(
        request, f"{template}#table" if _partial_requested(request) else template, context
    )
    patch_vary_headers(response, ["HX-Request"])
    return response


@require_safe
@portal_view(preference="show_invoices")
def invoice_detail(request, public_id):
    invoice = request.portal.get(_invoices().select_related("subscription__plan"), public_id)
    context = selectors.invoice_document(invoice, organization=Organization.load())
    context["today"] = billing_today()
    return render(request, "portal/invoices/detail.html", context)


@require_safe
@portal_view(preference="show_invoices")
def invoice_pdf(request, public_id):
    invoice = request.portal.get(_invoices(), public_id)
    context = selectors.invoice_document(invoice, organization=Organization.load())
    return pdf_response("documents/invoice.html", context, filename=f"invoice-{invoice.number}")


@require_safe
@portal_view(preference="show_invoices")
def invoice_print(request, public_id):
    invoice = request.portal.get(_invoices(), public_id)
    context = selectors.invoice_document(invoice, organization=Organization.load())
    return render(request, "portal/invoices/print.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(preference="show_invoices")
def invoice_forward_view(request, public_id):
    portal = request.portal
    if not portal.preferences.allow_document_forward:
        raise Http404
    invoice = portal.get(_invoices(), public_id)
    # The invoice's customer and the parent it shares with, but only those this user may see.
    customer_ids = set(forward_recipients_allowed(invoice)) & set(portal.customer_ids)
    contacts = (
        ContactPerson.objects.filter(customer__in=customer_ids)
        .exclude(email="")
        .select_related("customer")
        .order_by("customer__display_name", "-is_primary", "first_name", "id")
    )
    form = InvoiceForwardForm(request.POST if request.method == "POST" else None, contacts=contacts)
    if form.is_valid():
        try:
            sent = invoice_forward(
                invoice=invoice, contacts=form.cleaned_data["contacts"], actor=request.user
            )
        except BillingError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(request, f"Invoice {invoice.number} was sent to {sent} contact(s).")
            return redirect("portal:invoice_detail", invoice.public_id)
    return render(request, "portal/invoices/forward.html", {"invoice": invoice, "form": form})
