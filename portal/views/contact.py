"""Writing to the merchant: the contact form and reviews."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from billing.errors import BillingError
from portal.access import portal_view
from portal.profile_forms import ContactMessageForm, ReviewForm
from portal.services_profile import TooManyMessages, contact_message_send, review_create


@portal_view(preference="allow_contact_form")
@require_http_methods(["GET", "POST"])
def contact(request):
    form = ContactMessageForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            contact_message_send(
                customer=request.portal.customer,
                author=request.user,
                subject=form.cleaned_data["subject"],
                body=form.cleaned_data["body"],
            )
        except BillingError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
            # htmx swaps only successful responses; the full page says what happened.
            status = 429 if isinstance(error, TooManyMessages) and not request.htmx else 200
        else:
            if request.htmx:
                return render(request, "portal/contact/contact.html#sent", {})
            messages.success(request, "Thank you, your message was sent. We will reply by email.")
            return redirect("portal:contact")
    template = "portal/contact/contact.html"
    return render(
        request, f"{template}#form" if request.htmx else template, {"form": form}, status=status
    )


@portal_view(preference="allow_reviews")
@require_http_methods(["GET", "POST"])
def review(request):
    form = ReviewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            review_create(
                customer=request.portal.customer,
                author=request.user,
                rating=form.cleaned_data["rating"],
                text=form.cleaned_data["text"],
            )
        except BillingError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            if request.htmx:
                return render(request, "portal/contact/review.html#thanks", {})
            messages.success(request, "Thank you for your review.")
            return redirect("portal:review")
    template = "portal/contact/review.html"
    return render(request, f"{template}#form" if request.htmx else template, {"form": form})
