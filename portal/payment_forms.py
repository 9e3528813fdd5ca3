"""Forms of the paying pages: the card form, the pay confirmation, card choices, list filters.

The card number and CVC are validated for shape only (the gateway checks the rest) and are
never written back into a page: their widgets render empty, even when the form has errors.
"""

import re

from django import forms
from django.core.validators import RegexValidator
from django.views.decorators.debug import sensitive_variables

from billing.clock import billing_today
from billing.enums import PaymentStatus

NEW_CARD = "new"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_-]{8,100}$"
EXPIRY_PATTERN = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
CARD_FIELDS = ("number", "exp", "cvc", "name")


class NoEchoTextInput(forms.TextInput):
    """A text input that never renders a submitted value back (card number, CVC)."""

    def format_value(self, value):
        return None


class CardForm(forms.Form):
    """A card for the sandbox gateway, which tokenizes it and keeps none of the number."""

    use_required_attribute = False

    number = forms.CharField(
        label="Card number",
        max_length=23,
        required=False,
        widget=NoEchoTextInput(
            attrs={"autocomplete": "cc-number", "inputmode": "numeric", "spellcheck": "false"}
        ),
    )
    exp = forms.CharField(
        label="Expiry date (MM/YY)",
        max_length=7,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "cc-exp", "placeholder": "MM/YY"}),
    )
    cvc = forms.CharField(
        label="Security code (CVC)",
        max_length=4,
        required=False,
        widget=NoEchoTextInput(attrs={"autocomplete": "cc-csc", "inputmode": "numeric"}),
    )
    name = forms.CharField(
        label="Name on card",
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "cc-name"}),
    )

    # Whether the card fields must be filled in (the pay form asks only for "new card").
    card_required = True

    def clean(self):
        cleaned = super().clean()
        if self.card_required:
            self.clean_card(cleaned)
        return cleaned

    @sensitive_variables("cleaned", "digits", "cvc")
    def clean_card(self, cleaned: dict) -> None:
        digits = (cleaned.get("number") or "").replace(" ", "").replace("-", "")
        if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
            self.add_error("number", "Enter the card number as printed on the card.")
        else:
            cleaned["number"] = digits
        match = EXPIRY_PATTERN.match(cleaned.get("exp") or "")
        if match is None or not 1 <= int(match.group(1)) <= 12:
            self.add_error("exp", "Enter the expiry date as MM/YY, for example 04/29.")
        else:
            cleaned["exp_month"], cleaned["exp_year"] = int(match.group(1)), int(match.group(2))
        cvc = cleaned.get("cvc") or ""
        if not (cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
            self.add_error("cvc", "Enter the 3 or 4 digits on the back of the card.")

    @sensitive_variables("data")
    def card_details(self) -> dict:
        """Keyword arguments for billing.services.payment_methods.payment_method_add."""
        data = self.cleaned_data
        return {
            "number": data["number"],
            "exp_month": data["exp_month"],
            "exp_year": data["exp_year"],
            "cvc": data["cvc"],
            "cardholder_name": data.get("name", ""),
        }

    def add_gateway_error(self, error) -> None:
        """Show a gateway refusal next to the field it names (number, exp, cvc) or at the top."""
        field = error.field if error.field in self.fields else None
        self.add_error(field, error.message)


def card_choices(cards) -> list[tuple[str, str]]:
    """Radio choices naming each saved card as its owner knows it: brand, last 4, expiry."""
    today = billing_today()
    choices = []
    for card in cards:
        label = str(card)
        if (card.exp_year, card.exp_month) < (today.year, today.month):
            label += " — expired"
        elif card.is_default:
            label += " — default"
        choices.append((str(card.public_id), label))
    return choices


class PayForm(CardForm):
    """Confirm a payment: a saved card or a new one, with the key that makes it happen once."""

    idempotency_key = forms.CharField(
        widget=forms.HiddenInput, validators=[RegexValidator(IDEMPOTENCY_KEY_PATTERN)]
    )
    # Fingerprint of the amounts shown; confirming refuses if they changed meanwhile.
    summary = forms.CharField(widget=forms.HiddenInput, max_length=64)
    method = forms.ChoiceField(label="Pay with", widget=forms.RadioSelect, required=False)
    save_card = forms.BooleanField(
        label="Save this card for future payments",
        required=False,
        help_text="It becomes your default card and pays your subscriptions automatically.",
    )

    def __init__(
        self, *args, cards=(), charge_needed=True, can_save=True, saving_allowed=True, **kwargs
    ):
        """``saving_allowed``: the merchant lets customers keep cards (without it the form has
        no such choice); ``can_save``: this sign-in is recent enough to save one."""
        super().__init__(*args, **kwargs)
        self.cards = {str(card.public_id): card for card in cards}
        self.fields["method"].choices = [*card_choices(cards), (NEW_CARD, "A new card")]
        self.charge_needed = charge_needed
        self.saving_allowed = saving_allowed
        self.can_save = can_save and saving_allowed
        if not saving_allowed:
            del self.fields["save_card"]
        if not self.is_bound:
            default = next((c for c in cards if c.is_default), None)
            self.initial.setdefault(
                "method", str(default.public_id) if default else (NEW_CARD if not cards else "")
            )

    def clean(self):
        self.card_required = self.charge_needed and self.data.get("method") == NEW_CARD
        cleaned = super().clean()
        if self.charge_needed and not cleaned.get("method"):
            self.add_error("method", "Choose the card to pay with.")
        if cleaned.get("save_card") and self.card_required and not self.can_save:
            self.add_error(
                "save_card", "Confirm it's you first to save a card, or pay without saving it."
            )
        return cleaned

    @property
    def saved_card(self):
        method = self.cleaned_data.get("method")
        return None if method in (None, "", NEW_CARD) else self.cards[method]

    @property
    def wants_new_card(self) -> bool:
        return self.charge_needed and self.cleaned_data.get("method") == NEW_CARD


class AddCardForm(CardForm):
    make_default = forms.BooleanField(label="Make this my default card", required=False)
    use_for_subscriptions = forms.BooleanField(
        label="Use it for my subscriptions' automatic payments", required=False
    )


class ReplaceCardForm(CardForm):
    """Move everything from one card to another saved card or to a new one."""

    replacement = forms.ChoiceField(label="Replace with", widget=forms.RadioSelect)

    def __init__(self, *args, cards=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.cards = {str(card.public_id): card for card in cards}
        self.fields["replacement"].choices = [*card_choices(cards), (NEW_CARD, "A new card")]
        if not self.is_bound and not cards:
            self.initial["replacement"] = NEW_CARD

    def clean(self):
        self.card_required = self.data.get("replacement") == NEW_CARD
        return super().clean()

    @property
    def saved_card(self):
        choice = self.cleaned_data.get("replacement")
        return None if choice == NEW_CARD else self.cards[choice]


STATUS_FILTERS = [
    ("", "Any status"),
    (PaymentStatus.SUCCEEDED, "Succeeded"),
    (PaymentStatus.FAILED, "Failed"),
    (PaymentStatus.REFUNDED, "Refunded"),
]


class PaymentFilterForm(forms.Form):
    status = forms.ChoiceField(choices=STATUS_FILTERS, required=False)
    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    customer = forms.ChoiceField(label="Customer", required=False)

    def __init__(self, *args, customers=(), **kwargs):
        super().__init__(*args, **kwargs)
        if customers:
            self.fields["customer"].choices = [("", "All customers"), *customers]
        else:
            del self.fields["customer"]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date must not be before the start date.")
        return cleaned
