"""The choices staff make on the confirmation pages of the billing actions (``object_actions``).

Forms check the input only (a number is a number, a date is a date); whether the amount may be
credited, refunded or recorded is the services' call, and their refusal is shown next to the
field it names. Field names follow the services' ``BillingError.field`` names for that reason.
"""

from django import forms
from django.db.models import QuerySet

from billing.enums import CancelReason, ChangeTiming, CreditNoteReason, PaymentMode
from billing.models import CreditNote, Plan

MONEY_FIELD = {"max_digits": 14, "decimal_places": 2}
# Services refuse a zero or negative amount with their own message; the form accepts any number.
OFFLINE_PAYMENT_MODES = [
    (mode.value, mode.label) for mode in PaymentMode if mode != PaymentMode.CARD
]
STAFF_CANCEL_REASONS = [
    (CancelReason.MERCHANT.value, CancelReason.MERCHANT.label),
    (CancelReason.CUSTOMER.value, CancelReason.CUSTOMER.label),
]


class NoChoicesForm(forms.Form):
    """Nothing to choose: the page explains what happens and asks for confirmation."""


class SubscriptionCancelForm(forms.Form):
    timing = forms.ChoiceField(
        label="When",
        choices=ChangeTiming.choices,
        widget=forms.RadioSelect,
        help_text="At the end of the term the subscription is non-renewing until then, and the "
        "cancellation can still be undone.",
    )
    reason = forms.ChoiceField(choices=STAFF_CANCEL_REASONS)
    reason_text = forms.CharField(
        label="Note", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    credit_unused = forms.BooleanField(
        label="Credit the unused part of the term",
        required=False,
        help_text="Cancelling now only: a prorated credit note, applied to open invoices.",
    )
    void_unpaid = forms.BooleanField(
        label="Void the subscription's unpaid invoices",
        required=False,
        help_text="Cancelling now only. Unticked, they stay open and due.",
    )


class SubscriptionReactivateForm(forms.Form):
    require_payment = forms.BooleanField(
        label="Require the open invoice to be paid first",
        required=False,
        help_text="Only for a subscription cancelled by dunning and still within its term.",
    )


class SubscriptionPauseForm(forms.Form):
    credit_unused = forms.BooleanField(
        label="Credit the unused part of the term",
        required=False,
        help_text="A prorated credit note for the days left in the current term.",
    )


class SubscriptionChangeForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.none(), empty_label=None)
    quantity = forms.IntegerField(min_value=1)
    timing = forms.ChoiceField(label="When", choices=ChangeTiming.choices, widget=forms.RadioSelect)

    def __init__(self, *args, plans: QuerySet[Plan], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].queryset = plans


class InvoiceVoidForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=200,
        help_text="Recorded in the invoice's history.",
    )


class OfflinePaymentForm(forms.Form):
    amount = forms.DecimalField(**MONEY_FIELD)
    mode = forms.ChoiceField(label="Received by", choices=OFFLINE_PAYMENT_MODES)
    reference = forms.CharField(
        required=False, max_length=100, help_text="Bank reference, check number…"
    )
    received_on = forms.DateField(help_text="YYYY-MM-DD.")


class CreditNoteForm(forms.Form):
    amount = forms.DecimalField(**MONEY_FIELD)
    reason = forms.ChoiceField(choices=CreditNoteReason.choices)
    memo = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    apply_credit = forms.BooleanField(required=False)

    def __init__(self, *args, apply_label: str, apply_help: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["apply_credit"].label = apply_label
        self.fields["apply_credit"].help_text = apply_help


class OneTimeChargeForm(forms.Form):
    description = forms.CharField(max_length=300)
    unit_price = forms.DecimalField(max_digits=19, decimal_places=4)
    quantity = forms.DecimalField(max_digits=12, decimal_places=4)

    def clean(self):
        cleaned = super().clean()
        unit_price, quantity = cleaned.get("unit_price"), cleaned.get("quantity")
        # An invoice amount has 12 digits before the point; a bigger one cannot be stored.
        if unit_price is not None and quantity is not None and abs(unit_price * quantity) >= 10**12:
            self.add_error("unit_price", "The amount is too large for one invoice line.")
        return cleaned


class CreditNoteChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: CreditNote) -> str:
        remaining = getattr(obj, "remaining", None)
        left = f", {obj.currency} {remaining} left" if remaining is not None else ""
        return f"{obj.number} ({obj.get_reason_display().lower()}{left})"


class RefundForm(forms.Form):
    amount = forms.DecimalField(**MONEY_FIELD)
    reason = forms.CharField(required=False, max_length=300)
    credit_note = CreditNoteChoiceField(
        queryset=CreditNote.objects.none(),
        required=False,
        empty_label="(none: refund the payment's unapplied part)",
        help_text="To refund a paid invoice, issue a credit note for it, then refund from that "
        "credit note.",
    )

    def __init__(self, *args, credit_notes: QuerySet[CreditNote], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["credit_note"].queryset = credit_notes
