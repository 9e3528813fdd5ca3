"""Statement of account: the page (with an htmx-refreshed body), a print view and a PDF."""

from django.http import HttpResponse
from django.shortcuts import render

from billing.clock import billing_today
from billing.models import Customer, Organization
from portal.access import Portal, portal_view
from portal.documents import pdf_response
from portal.profile_forms import StatementForm
from portal.statements import statement_for

PAGE = "portal/statements/statement.html"


def _statement_context(request) -> dict:
    """The form, and the statement when the form is valid. A customer parameter outside the
    scope (another company, a branch hidden from its parent) is a 404, as for any id."""
    portal: Portal = request.portal
    organization = Organization.load()
    chosen = request.GET.get("customer")
    customer = portal.visible_customer(chosen) if chosen else portal.customer
    choices = _customer_choices(portal)
    form = StatementForm(request.GET or None, today=billing_today(organization), customers=choices)
    context = {
        "form": form,
        "customer": customer,
        "organization": organization,  # the PDF is rendered without context processors
        "statement": None,
        "query": request.GET.urlencode(),
    }
    if form.is_bound and not form.is_valid():
        return context
    start, end, include_branches = form.selection()
    # Consolidation is the parent's own view: a branch chosen on its own stays on its own.
    if include_branches and customer.pk == portal.customer.pk and portal.is_parent:
        customers = portal.visible
    else:
        customers = ((customer.pk, customer.display_name),)
    context["statement"] = statement_for(
        customers=customers,
        start=start,
        end=end,
        currency=organization.base_currency,
        zone=organization.zone,
    )
    return context


def _customer_choices(portal: Portal) -> list[tuple[str, str]]:
    if not portal.is_parent:
        return []
    names = dict(portal.visible)
    rows = Customer.objects.filter(pk__in=portal.customer_ids).values_list("pk", "public_id")
    by_pk = {pk: str(public_id) for pk, public_id in rows}
    return [(by_pk[pk], names[pk]) for pk in portal.customer_ids if pk in by_pk]


@portal_view(preference="show_statements")
def statement(request):
    context = _statement_context(request)
    template = f"{PAGE}#statement" if request.htmx else PAGE
    return render(request, template, context)


@portal_view(preference="show_statements")
def statement_print(request):
    context = _statement_context(request)
    if context["statement"] is None:
        return render(request, PAGE, context, status=400)
    return render(request, "portal/statements/print.html", context)


@portal_view(preference="show_statements")
def statement_pdf(request) -> HttpResponse:
    context = _statement_context(request)
    statement = context["statement"]
    if statement is None:
        return render(request, PAGE, context, status=400)
    filename = f"statement {context['customer'].display_name} {statement.start} {statement.end}"
    return pdf_response("documents/statement.html", context, filename=filename)
