"""Portal forms. They validate input only; business rules live in the services.

Choices that name customer data (subscriptions, branches, contacts) are built by the view from
rows already scoped by portal.access and carry public ids, so a value outside the customer's
scope is simply not a valid choice.
"""

from django import forms
from django.utils.choices import BaseChoiceIterator
from django.utils.html import conditional_escape, escape, format_html
from django.utils.safestring import mark_safe

STATUS_CHOICES = [
    ("", "Any status"),
    ("open", "Open (unpaid)"),
    ("overdue", "Overdue"),
    ("partially_paid", "Partially paid"),
    ("paid", "Paid"),
    ("void", "Void"),
]


def _attributes(attrs: dict) -> str:
    """HTML attributes in their given order, as django/forms/widgets/attrs.html writes them."""
    return "".join(
        f" {name}" if value is True else f' {name}="{conditional_escape(value)}"'
        for name, value in attrs.items()
        if value is not False and value is not None
    )


class DateInput(forms.DateInput):
    """The browser's date picker; its value is always ISO (YYYY-MM-DD). Rendered in Python, to
    the HTML of Django's input template (the list filters and the statement form show two)."""

    input_type = "date"

    def __init__(self, attrs=None):
        super().__init__(attrs=attrs, format="%Y-%m-%d")

    def render(self, name, value, attrs=None, renderer=None):
        value = self.format_value(value)
        shown = "" if value is None else f' value="{conditional_escape(value)}"'
        attributes = _attributes(self.build_attrs(self.attrs, attrs))
        return mark_safe(  # noqa: S308 (every part escaped)
            f'<input type="{self.input_type}" name="{conditional_escape(name)}"{shown}{attributes}>'
        )


class InlineSelect(forms.Select):
    """A select rendered in Python, to the HTML Django's templates would give it (less their
    whitespace). Django renders every option through a template of its own: a customer with
    hundreds of subscriptions would spend most of its invoice list drawing the filter's options,
    and every list page pays a template per widget. Flat choices only, as the portal's filters
    have.
    """

    def render(self, name, value, attrs=None, renderer=None):
        chosen = self.format_value(value)
        options = []
        for option_value, label in self.choices:
            key = "" if option_value is None else str(option_value)
            selected = key in chosen
            if selected:
                chosen = ()  # a single select marks its first match only, as Django does
            options.append(
                f'<option value="{escape(key)}"{" selected" if selected else ""}>'
                f"{conditional_escape(label)}</option>"
            )
        return format_html(
            '<select name="{}"{}>{}</select>',
            name,
            mark_safe(_attributes(self.build_attrs(self.attrs, attrs))),  # noqa: S308 (escaped)
            mark_safe("".join(options)),  # noqa: S308 (each option's parts escaped above)
        )


class FlatChoices(BaseChoiceIterator):
    """(value, label) pairs built from scoped rows, already in Django's normal form: passed as
    they are, so a field does not re-examine each of a customer's hundreds of subscriptions."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def __iter__(self):
        return iter(self.pairs)


class InvoiceFilterForm(forms.Form):
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False, widget=InlineSelect)
    issued_from = forms.DateField(label="Issued from", required=False, widget=DateInput)
    issued_to = forms.DateField(label="Issued to", required=False, widget=DateInput)
    subscription = forms.ChoiceField(required=False, widget=InlineSelect)
    customer = forms.ChoiceField(label="Branch", required=False, widget=InlineSelect)

    def __init__(self, data, subscriptions: dict, customers: dict):
        """``subscriptions`` and ``customers``: {public id: (pk, label)} inside the scope;
        no ``customers`` hides the branch filter (a customer without branches)."""
        super().__init__(data)
        self.subscription_ids = {key: pk for key, (pk, _label) in subscriptions.items()}
        self.customer_ids = {key: pk for key, (pk, _label) in customers.items()}
        self.fields["subscription"].choices = FlatChoices(
            [
                ("", "All subscriptions"),
                *((key, label) for key, (_pk, label) in subscriptions.items()),
            ]
        )
        if customers:
            self.fields["customer"].choices = FlatChoices(
                [("", "All branches"), *((key, label) for key, (_pk, label) in customers.items())]
            )
        else:
            del self.fields["customer"]

    def filters(self) -> dict:
        """Keyword arguments for billing.selectors.invoices_of. A field that did not validate
        is left out (and shown with its error), so the list still answers."""
        self.is_valid()
        chosen = self.cleaned_data
        return {
            "status": chosen.get("status", ""),
            "issued_from": chosen.get("issued_from"),
            "issued_to": chosen.get("issued_to"),
            "subscription_id": self.subscription_ids.get(chosen.get("subscription")),
            "customer_id": self.customer_ids.get(chosen.get("customer")),
        }

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("issued_from"), cleaned.get("issued_to")
        if start and end and start > end:
            self.add_error("issued_to", "The end date is before the start date.")
        return cleaned


class InvoiceForwardForm(forms.Form):
    contacts = forms.MultipleChoiceField(
        label="Send to",
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "required": "Choose at least one contact.",
            "invalid_choice": "Choose among your company's contacts.",
        },
    )

    def __init__(self, data=None, *, contacts):
        """``contacts``: the ContactPerson rows (with their customer) the invoice may go to."""
        super().__init__(data)
        self.contact_rows = {str(contact.public_id): contact for contact in contacts}
        # Contacts of a parent and a branch side by side: say whose each one is.
        several = len({contact.customer_id for contact in self.contact_rows.values()}) > 1
        self.fields["contacts"].choices = [
            (
                key,
                f"{contact.full_name} <{contact.email}>"
                + (f" · {contact.customer.display_name}" if several else ""),
            )
            for key, contact in self.contact_rows.items()
        ]

    def clean_contacts(self):
        return [self.contact_rows[key] for key in self.cleaned_data["contacts"]]
