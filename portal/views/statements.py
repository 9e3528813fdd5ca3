"""Statement of account: the page (with an htmx-refreshed body), a print view and a PDF.

The page shows the movements ``PAGE_SIZE`` at a time (``?page=``), each page starting from the
balance brought forward; the print view and the PDF show them all.
"""

import functools
import uuid
from typing import NamedTuple

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.utils.http import urlencode

from billing.clock import billing_today
from billing.models import Customer, Organization
from portal.access import Portal, portal_view
from portal.documents import pdf_response
from portal.formatting import amount_text, short_date
from portal.profile_forms import StatementForm
from portal.statements import PAGE_SIZE, statement_for

PAGE = "portal/statements/statement.html"
# The statement's query parameters, and how many of its pages are cached (books_cache).
SELECTION = {"period", "start", "end", "customer", "include_branches", "page"}
CACHED_PAGES = 20
# Stands for a public id in a URL reversed once per page, not once per line.
_ANY_ID = uuid.UUID(int=0)


class StatementRow(NamedTuple):
    """One movement as the statement page's table prints it."""

    day: str
    reference: str
    url: str  # the invoice or payment, when the customer may open it; else ""
    description: str
    customer: str
    amount: str
    balance: str


def _statement_rows(statement, preferences) -> list[StatementRow]:
    """The page's lines formatted here once, instead of by a template tag or filter per cell."""
    links = {}
    if preferences.show_invoices:
        url = reverse("portal:invoice_detail", args=[_ANY_ID])
        links.update(dict.fromkeys(("invoice", "void"), url))
    if preferences.show_payments:
        url = reverse("portal:payment_detail", args=[_ANY_ID])
        links.update(dict.fromkeys(("payment", "refund"), url))
    any_id = str(_ANY_ID)
    rows = []
    for line in statement.lines:
        movement = line.movement
        link = links.get(movement.kind)
        rows.append(
            StatementRow(
                day=short_date(movement.day),
                reference=movement.reference,
                url=link.replace(any_id, str(movement.public_id)) if link else "",
                description=movement.description,
                customer=line.customer_name,
                amount=amount_text(line.amount),
                balance=amount_text(line.balance),
            )
        )
    return rows


def _page_number(request) -> int:
    """The page asked for; anything but a positive number is the first."""
    try:
        return max(int(request.GET.get("page", 1)), 1)
    except ValueError:
        return 1


def _statement_context(request, *, paged: bool) -> dict:
    """The form, and the statement when the form is valid (one page of it when ``paged``). A
    customer parameter outside the scope (another company, a branch hidden from its parent) is
    a 404, as for any id."""
    portal: Portal = request.portal
    organization = Organization.load()
    chosen = request.GET.get("customer")
    customer = portal.visible_customer(chosen) if chosen else portal.customer
    choices = _customer_choices(portal)
    today = billing_today(organization)
    form = StatementForm(request.GET or None, today=today, customers=choices)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "customer": customer,
        "organization": organization,  # the PDF is rendered without context processors
        "has_statement": False,
        "today": today,
        "query": query.urlencode(),  # the statement's selection, without the page
    }
    if form.is_bound and not form.is_valid():
        return context
    start, end, include_branches = form.selection()
    # Consolidation is the parent's own view: a branch chosen on its own stays on its own.
    if include_branches and customer.pk == portal.customer.pk and portal.is_parent:
        customers = portal.visible
    else:
        customers = ((customer.pk, customer.display_name),)

    page = _page_number(request) if paged else 1
    period = form.cleaned_data["period"] if form.is_bound else "this_month"
    link_query = context["query"]
    context["books_key"] = None
    # Presets' first pages are cached, keyed by the canonical selection (a bounded set per
    # customer); custom dates, later pages and unknown parameters are computed each time.
    if paged and period != "custom" and page <= CACHED_PAGES and set(request.GET) <= SELECTION:
        canonical = {"period": period}
        if chosen:
            canonical["customer"] = str(customer.public_id)
        if include_branches:
            canonical["include_branches"] = "on"
        link_query = urlencode(canonical)
        context["books_key"] = (request.path, period, customer.pk, include_branches, page)

    def compute_statement():
        return statement_for(
            customers=customers,
            start=start,
            end=end,
            currency=organization.base_currency,
            zone=organization.zone,
            page=page,
            page_size=PAGE_SIZE if paged else None,
        )

    context["has_statement"] = True
    if not paged:
        context["statement"] = compute_statement()
        return context

    @functools.cache
    def sheet():
        statement = compute_statement()
        rows = _statement_rows(statement, portal.preferences)
        links = _page_links(request.path, link_query, statement) if statement.paged else {}
        return statement, rows, links

    # The page reads these only when its cached statement is out of date (bookscache).
    context["statement"] = SimpleLazyObject(lambda: sheet()[0])
    context["statement_rows"] = SimpleLazyObject(lambda: sheet()[1])
    context["pages"] = SimpleLazyObject(lambda: sheet()[2])
    return context


def _page_links(path: str, query: str, statement) -> dict:
    """First, previous, next and last page of the statement ("" where there is none)."""

    def url(page: int) -> str:
        return f"{path}?{query}&page={page}" if query else f"{path}?page={page}"

    first_line = (statement.page - 1) * PAGE_SIZE + 1
    return {
        "first": "" if statement.first_page else url(1),
        "previous": "" if statement.first_page else url(statement.page - 1),
        "next": "" if statement.last_page else url(statement.page + 1),
        "last": "" if statement.last_page else url(statement.pages),
        "first_line": first_line,
        "last_line": first_line + len(statement.lines) - 1,
    }


def _customer_choices(portal: Portal) -> list[tuple[str, str]]:
    if not portal.is_parent:
        return []
    names = dict(portal.visible)
    rows = Customer.objects.filter(pk__in=portal.customer_ids).values_list("pk", "public_id")
    by_pk = {pk: str(public_id) for pk, public_id in rows}
    return [(by_pk[pk], names[pk]) for pk in portal.customer_ids if pk in by_pk]


@portal_view(preference="show_statements")
def statement(request):
    context = _statement_context(request, paged=True)
    template = f"{PAGE}#statement" if request.htmx else PAGE
    return render(request, template, context)


@portal_view(preference="show_statements")
def statement_print(request):
    context = _statement_context(request, paged=False)
    if not context["has_statement"]:
        return render(request, PAGE, context, status=400)
    return render(request, "portal/statements/print.html", context)


@portal_view(preference="show_statements")
def statement_pdf(request) -> HttpResponse:
    context = _statement_context(request, paged=False)
    if not context["has_statement"]:
        return render(request, PAGE, context, status=400)
    statement = context["statement"]
    filename = f"statement {context['customer'].display_name} {statement.start} {statement.end}"
    return pdf_response("documents/statement.html", context, filename=filename)
