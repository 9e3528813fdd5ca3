"""Forms of the portal's account pages: statement range, company details, contact persons,
the message to the merchant and the review. They validate input only; business rules (the
last admin, duplicate emails, rate limits) live in portal.services_profile.
"""

import datetime

from django import forms

from billing.enums import PortalRole
from billing.models import ContactPerson, Customer
from portal.forms import DateInput
from portal.services_profile import (
    CONTACT_FIELDS,
    CUSTOMER_DETAIL_FIELDS,
    ContactDetails,
    CustomerDetails,
)
from portal.statements import PERIOD_CHOICES, period_range

ADDRESS_PARTS = ("line1", "line2", "city", "state", "postal_code", "country")


class StatementForm(forms.Form):
    """The statement's date range: a preset, or custom dates.

    The page submits ``period`` from the button pressed: one per preset, and "custom" for the
    dates (the first button, so Enter in a date field shows those dates). Without a period,
    dates given mean custom and no dates mean this month.
    """

    period = forms.ChoiceField(choices=PERIOD_CHOICES, required=False)
    start = forms.DateField(
        label="From",
        required=False,
        widget=DateInput,
        error_messages={"invalid": "Enter a date such as 2026-01-31."},
    )
    end = forms.DateField(
        label="To",
        required=False,
        widget=DateInput,
        error_messages={"invalid": "Enter a date such as 2026-01-31."},
    )
    customer = forms.ChoiceField(label="Customer", required=False)
    include_branches = forms.BooleanField(label="Include branches (consolidated)", required=False)

    def __init__(self, data=None, *, today: datetime.date, customers=()):
        """``customers``: (public id, name) pairs of the scope; one or none hides the choice."""
        super().__init__(data)
        self.today = today
        self.fields["start"].initial, self.fields["end"].initial = period_range("this_month", today)
        if len(customers) > 1:
            self.fields["customer"].choices = [("", "Your company"), *customers]
        else:
            del self.fields["customer"]
            del self.fields["include_branches"]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        period = cleaned.get("period") or ""
        if not period:
            dates_given = bool(self.data.get("start") or self.data.get("end"))
            period = "custom" if dates_given else "this_month"
        cleaned["period"] = period
        if period != "custom":
            cleaned["start"], cleaned["end"] = period_range(period, self.today)
            # Show the preset's dates in the date fields, ready to be adjusted.
            self.data = self.data.copy()
            self.data["start"], self.data["end"] = cleaned["start"], cleaned["end"]
            self.errors.pop("start", None)
            self.errors.pop("end", None)
            return cleaned
        if self.errors:
            return cleaned  # an unparsable date already has its message
        if start is None:
            self.add_error("start", "Enter the first day of the statement.")
        if end is None:
            self.add_error("end", "Enter the last day of the statement.")
        if start and end and start > end:
            self.add_error("start", "The start date is after the end date.")
        if end and end > self.today:
            self.add_error(
                "end", f"The statement cannot end after today ({self.today:%b %-d, %Y})."
            )
        if start and start.year < 1900:
            self.add_error("start", "Enter a date after 1900.")
        return cleaned

    def selection(self) -> tuple[datetime.date, datetime.date, bool]:
        """(start, end, include branches) of a valid form; this month for an unbound one."""
        if not self.is_bound:
            start, end = period_range("this_month", self.today)
            return start, end, False
        data = self.cleaned_data
        return data["start"], data["end"], bool(data.get("include_branches"))


class CustomerDetailsForm(forms.ModelForm):
    same_as_billing = forms.BooleanField(
        label="Shipping address is the same as the billing address", required=False
    )

    class Meta:
        model = Customer
        fields = list(CUSTOMER_DETAIL_FIELDS)
        labels = {
            "company_name": "Company name",
            "email": "Billing email",
            "billing_line1": "Street address",
            "billing_line2": "Address line 2",
            "billing_city": "City",
            "billing_state": "State / region",
            "billing_postal_code": "Postal code",
            "billing_country": "Country",
            "shipping_line1": "Street address",
            "shipping_line2": "Address line 2",
            "shipping_city": "City",
            "shipping_state": "State / region",
            "shipping_postal_code": "Postal code",
            "shipping_country": "Country",
        }
        help_texts = {"email": "Invoices go here unless contacts below receive documents."}
        widgets = {"email": forms.EmailInput(attrs={"autocomplete": "email"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        customer = self.instance
        self.fields["same_as_billing"].initial = all(
            getattr(customer, f"shipping_{part}") == getattr(customer, f"billing_{part}")
            for part in ADDRESS_PARTS
        )
        self.fields["phone"].widget.attrs["autocomplete"] = "tel"

    @property
    def billing_fields(self):
        return [self[f"billing_{part}"] for part in ADDRESS_PARTS]

    @property
    def shipping_fields(self):
        return [self[f"shipping_{part}"] for part in ADDRESS_PARTS]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("same_as_billing"):
            for part in ADDRESS_PARTS:
                cleaned[f"shipping_{part}"] = cleaned.get(f"billing_{part}", "")
                self.errors.pop(f"shipping_{part}", None)
        return cleaned

    def _post_clean(self):
        # The service writes the row; the form only validates input.
        pass

    def details(self) -> CustomerDetails:
        return CustomerDetails(**{name: self.cleaned_data[name] for name in CUSTOMER_DETAIL_FIELDS})


class ContactPersonForm(forms.ModelForm):
    class Meta:
        model = ContactPerson
        fields = list(CONTACT_FIELDS)
        labels = {
            "receives_documents": "Receives invoices, receipts and statements by email",
            "portal_role": "Portal role",
        }
        help_texts = {
            "receives_documents": "",
            "portal_role": "Takes effect for people with a portal login (logins are by invitation).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["portal_role"].choices = PortalRole.choices
        self.fields["email"].widget.attrs["autocomplete"] = "off"

    def _post_clean(self):
        # Uniqueness and the last-admin rule are the service's; it reports them on the field.
        pass

    def details(self) -> ContactDetails:
        return ContactDetails(**{name: self.cleaned_data[name] for name in CONTACT_FIELDS})


class ContactMessageForm(forms.Form):
    subject = forms.CharField(max_length=200)
    body = forms.CharField(
        label="Message", max_length=5000, widget=forms.Textarea(attrs={"rows": 6})
    )


RATING_CHOICES = [(str(n), f"{n} star{'s' if n > 1 else ''}") for n in range(5, 0, -1)]


class ReviewForm(forms.Form):
    rating = forms.TypedChoiceField(
        label="Your rating",
        choices=RATING_CHOICES,
        coerce=int,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose a rating from 1 to 5 stars."},
    )
    text = forms.CharField(
        label="Your review (optional)",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 5}),
    )
