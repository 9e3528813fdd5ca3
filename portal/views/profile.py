"""Company profile: the customer's details and contact persons. Everyone sees them; a portal
admin edits them when the merchant allows customer edits."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from billing.enums import PortalRole
from billing.errors import BillingError
from billing.models import ContactPerson
from portal.access import portal_view
from portal.profile_forms import ContactPersonForm, CustomerDetailsForm
from portal.services_profile import (
    contact_create,
    contact_delete,
    contact_update,
    customer_update_details,
)

EDITOR = {"role": PortalRole.ADMIN, "preference": "allow_customer_edit"}


def _form_error(form, error: BillingError) -> None:
    form.add_error(error.field if error.field in form.fields else None, error.message)


def _own_contact(portal, public_id) -> ContactPerson:
    """A contact of the signed-in customer itself (not of a branch), else 404."""
    return portal.get(ContactPerson.objects.filter(customer=portal.customer), public_id)


@portal_view()
def company(request):
    portal = request.portal
    context = {
        "customer": portal.customer,
        "contacts": portal.customer.contacts.order_by("-is_primary", "first_name", "id"),
        "can_edit": portal.can_manage and portal.preferences.allow_customer_edit,
    }
    return render(request, "portal/profile/company.html", context)


@portal_view(**EDITOR)
@require_http_methods(["GET", "POST"])
def company_edit(request):
    customer = request.portal.customer
    form = CustomerDetailsForm(request.POST or None, instance=customer)
    if request.method == "POST" and form.is_valid():
        try:
            customer = customer_update_details(
                customer=customer, details=form.details(), actor=request.user
            )
        except BillingError as error:
            _form_error(form, error)
        else:
            if request.htmx:
                context = {"customer": customer, "can_edit": True, "saved": True}
                return render(request, "portal/profile/company.html#details", context)
            messages.success(request, "Your company details were saved.")
            return redirect("portal:company")
    template = "portal/profile/company_edit.html"
    return render(request, f"{template}#details-form" if request.htmx else template, {"form": form})


@portal_view(**EDITOR)
@require_http_methods(["GET", "POST"])
def contact_add(request):
    form = ContactPersonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            contact = contact_create(
                customer=request.portal.customer, details=form.details(), actor=request.user
            )
        except BillingError as error:
            _form_error(form, error)
        else:
            messages.success(request, f"{contact.full_name} was added to your contacts.")
            return redirect("portal:company")
    return render(request, "portal/profile/contact_form.html", {"form": form, "contact": None})


@portal_view(**EDITOR)
@require_http_methods(["GET", "POST"])
def contact_edit(request, public_id):
    contact = _own_contact(request.portal, public_id)
    form = ContactPersonForm(request.POST or None, instance=contact)
    if request.method == "POST" and form.is_valid():
        try:
            contact_update(contact=contact, details=form.details(), actor=request.user)
        except BillingError as error:
            _form_error(form, error)
        else:
            messages.success(request, f"{form.cleaned_data['first_name']}'s details were saved.")
            return redirect("portal:company")
    return render(request, "portal/profile/contact_form.html", {"form": form, "contact": contact})


@portal_view(**EDITOR)
@require_http_methods(["GET", "POST"])
def contact_remove(request, public_id):
    contact = _own_contact(request.portal, public_id)
    error = None
    if request.method == "POST":
        try:
            contact_delete(contact=contact, actor=request.user)
        except BillingError as refused:
            error = refused.message
        else:
            messages.success(request, f"{contact.full_name} was removed from your contacts.")
            return redirect("portal:company")
    context = {"contact": contact, "error": error, "is_self": contact.user_id == request.user.pk}
    return render(
        request, "portal/profile/contact_remove.html", context, status=400 if error else 200
    )
