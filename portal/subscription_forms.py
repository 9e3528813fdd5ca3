"""Forms of the subscription pages: the list filters and the choices behind each action.

They validate input only (shapes, dates in range, a choice among the offered ones); whether an
action is possible at all is for the services to say. Choices naming customer data (branches,
cards) are built by the view from rows already scoped by portal.access and carry public ids.
"""

import datetime
import re

from django import forms

from billing.enums import ChangeTiming
from portal.forms import DateInput

# The status filter: some entries group several statuses, as customers think of them.
STATUS_FILTERS = {
    "current": ("Current (not ended)", None),
    "in_trial": ("In trial", ("in_trial",)),
    "live": ("Live", ("live",)),
    "non_renewing": ("Ending at term end", ("non_renewing",)),
    "paused": ("Paused", ("paused",)),
    "past_due": ("Payment overdue", ("past_due", "unpaid")),
    "future": ("Starting later", ("future",)),
    "ended": ("Cancelled or expired", ("cancelled", "expired")),
}
ENDED_STATUSES = ("cancelled", "expired")

# What a customer may say about why they leave. Stored with their own words on the subscription.
CANCEL_REASONS = [
    ("too_expensive", "It is too expensive"),
    ("not_using", "I do not use it enough"),
    ("missing_features", "It lacks features I need"),
    ("switching", "I am switching to another service"),
    ("problems", "I had technical problems"),
    ("temporary", "I only needed it for a while"),
    ("other", "Another reason"),
]

RADIO = {"class": "form-check-input"}
TOKEN_PATTERN = re.compile(r"^[0-9a-f]{32}$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class SubscriptionFilterForm(forms.Form):
    status = forms.ChoiceField(required=False)
    plan = forms.ChoiceField(required=False)
    customer = forms.ChoiceField(label="Branch", required=False)

    def __init__(self, data, *, plans: dict, customers: dict):
        """``plans``: {code: name} of the plans the visible subscriptions use; ``customers``:
        {public id: (pk, name)} of the visible customers, empty to hide the branch filter."""
        super().__init__(data)
        self.customer_ids = {key: pk for key, (pk, _name) in customers.items()}
        self.fields["status"].choices = [
            ("", "Any status"),
            *((key, label) for key, (label, _statuses) in STATUS_FILTERS.items()),
        ]
        self.fields["plan"].choices = [("", "All plans"), *plans.items()]
        if customers:
            self.fields["customer"].choices = [
                ("", "All branches"),
                *((key, name) for key, (_pk, name) in customers.items()),
            ]
        else:
            del self.fields["customer"]

    def filters(self) -> dict:
        """Keyword arguments for billing.selectors.subscriptions_of; a field that did not
        validate is left out (and shown with its error), so the list still answers."""
        self.is_valid()
        chosen = self.cleaned_data
        status = chosen.get("status", "")
        return {
            "statuses": STATUS_FILTERS[status][1] if status else None,
            "current_only": status == "current",
            "plan_code": chosen.get("plan") or None,
            "customer_id": self.customer_ids.get(chosen.get("customer")),
        }


class OnceForm(forms.Form):
    """The one-time token every action form carries, so a double submit acts once."""

    once = forms.RegexField(regex=TOKEN_PATTERN, widget=forms.HiddenInput)


class ConfirmForm(OnceForm):
    """A confirmation also carries the digest of the figures the customer saw, so the action
    runs only on those figures."""

    figures = forms.RegexField(regex=DIGEST_PATTERN, widget=forms.HiddenInput)


class CancelForm(forms.Form):
    timing = forms.ChoiceField(
        label="When should it end?",
        widget=forms.RadioSelect(attrs=RADIO),
        error_messages={"required": "Choose when the subscription ends."},
    )
    reason = forms.ChoiceField(
        label="Why are you leaving? (optional)",
        choices=CANCEL_REASONS,
        widget=forms.RadioSelect(attrs=RADIO),
        required=False,
    )
    reason_text = forms.CharField(
        label="Anything else you want to tell us? (optional)",
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, data=None, *, timings: dict[str, str], **kwargs):
        """``timings``: {ChangeTiming value: label} of the timings this subscription offers."""
        super().__init__(data, **kwargs)
        self.fields["timing"].choices = list(timings.items())
        if len(timings) == 1:
            self.fields["timing"].initial = next(iter(timings))

    def options(self) -> dict:
        """The validated choices, as the confirmation carries them."""
        return {
            "timing": self.cleaned_data["timing"],
            "reason": self.cleaned_data["reason"],
            "reason_text": self.cleaned_data["reason_text"].strip(),
        }

    @staticmethod
    def reason_for_record(options: dict) -> str:
        """The survey answer and the customer's words, as the subscription keeps them."""
        label = dict(CANCEL_REASONS).get(options.get("reason", ""), "")
        text = options.get("reason_text", "")
        return ": ".join(part for part in (label, text) if part)


PAUSE_TODAY, PAUSE_ON_DATE, PAUSE_AT_TERM_END = "today", "date", "term_end"
RESUME_ON_DATE, RESUME_MANUALLY = "date", "manual"


class PauseForm(forms.Form):
    """When a live subscription pauses and when it resumes; a paused one chooses only the
    resume date. Pause dates reach at most the end of the current term (the figures of a later
    pause depend on renewals that have not happened yet)."""

    pause_when = forms.ChoiceField(
        label="Pause",
        widget=forms.RadioSelect(attrs=RADIO),
        choices=[
            (PAUSE_TODAY, "Today"),
            (PAUSE_ON_DATE, "On a date"),
            (PAUSE_AT_TERM_END, "At the end of the current term"),
        ],
        initial=PAUSE_TODAY,
        error_messages={"required": "Choose when the pause starts."},
    )
    pause_on = forms.DateField(label="Pause date", required=False, widget=DateInput)
    resume_when = forms.ChoiceField(
        label="Resume",
        widget=forms.RadioSelect(attrs=RADIO),
        choices=[(RESUME_ON_DATE, "On a date"), (RESUME_MANUALLY, "When I resume it")],
        initial=RESUME_MANUALLY,
        error_messages={"required": "Choose when the subscription resumes."},
    )
    resume_on = forms.DateField(label="Resume date", required=False, widget=DateInput)

    def __init__(
        self,
        data=None,
        *,
        today: datetime.date,
        term_end: datetime.date | None,
        paused: bool,
        **kwargs,
    ):
        super().__init__(data, **kwargs)
        self.today, self.term_end, self.paused = today, term_end, paused
        if paused:
            del self.fields["pause_when"], self.fields["pause_on"]
        if term_end is not None and not paused:
            self.fields["pause_when"].choices = [
                (PAUSE_TODAY, "Today"),
                (PAUSE_ON_DATE, "On a date"),
                (PAUSE_AT_TERM_END, f"At the end of the current term ({term_end:%b %-d, %Y})"),
            ]

    def clean(self):
        cleaned = super().clean()
        pause_on = self._pause_date(cleaned)
        cleaned["pause_date"] = pause_on
        resume_on = None
        if cleaned.get("resume_when") == RESUME_ON_DATE:
            resume_on = cleaned.get("resume_on")
            if resume_on is None and "resume_on" not in self.errors:
                self.add_error("resume_on", "Enter the date the subscription resumes.")
            elif resume_on is not None and pause_on is not None and resume_on <= pause_on:
                self.add_error("resume_on", "The resume date must be after the pause starts.")
        cleaned["resume_date"] = resume_on
        return cleaned

    def _pause_date(self, cleaned) -> datetime.date | None:
        if self.paused:
            return self.today
        when = cleaned.get("pause_when")
        if when == PAUSE_TODAY:
            return self.today
        if when == PAUSE_AT_TERM_END:
            return self.term_end or self.today
        if when != PAUSE_ON_DATE:
            return None
        day = cleaned.get("pause_on")
        if day is None:
            if "pause_on" not in self.errors:
                self.add_error("pause_on", "Enter the date the pause starts.")
            return None
        if day < self.today:
            self.add_error("pause_on", "The pause cannot start in the past.")
            return None
        if self.term_end is not None and day > self.term_end:
            self.add_error(
                "pause_on",
                f"Choose a date up to the end of the current term ({self.term_end:%b %-d, %Y}).",
            )
            return None
        return day

    def options(self) -> dict:
        """The choices as exact dates, in this form's own fields, for the confirmation (a
        pause "today" confirmed tomorrow is then refused, not moved)."""
        pause_on, resume_on = self.cleaned_data["pause_date"], self.cleaned_data["resume_date"]
        options = {} if self.paused else {"pause_when": PAUSE_ON_DATE, "pause_on": pause_on}
        options["resume_when"] = RESUME_ON_DATE if resume_on else RESUME_MANUALLY
        options["resume_on"] = resume_on or ""
        return {key: str(value) for key, value in options.items()}


class AutoChargeForm(forms.Form):
    enabled = forms.TypedChoiceField(
        label="Automatic payments",
        widget=forms.RadioSelect(attrs=RADIO),
        choices=[("on", "On: charge my card when an invoice is issued"), ("off", "Off")],
        coerce=lambda value: value == "on",
        error_messages={"required": "Choose on or off."},
    )
    card = forms.ChoiceField(label="Card to charge", required=False)

    def __init__(self, data=None, *, cards, **kwargs):
        """``cards``: the subscription's customer's saved cards."""
        super().__init__(data, **kwargs)
        self.cards = {str(card.public_id): card for card in cards}
        self.fields["card"].choices = [
            (
                key,
                f"{card.brand} •••• {card.last4} (expires {card.exp_month:02d}/{card.exp_year})"
                + (" · default" if card.is_default else ""),
            )
            for key, card in self.cards.items()
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("enabled") and not cleaned.get("card"):
            if self.cards:
                self.add_error("card", "Choose the card to charge.")
            else:
                self.add_error("card", "Add a card before turning on automatic payments.")
        return cleaned

    @property
    def chosen_card(self):
        return self.cards.get(self.cleaned_data.get("card") or "")


TIMING_LABELS = {ChangeTiming.NOW: "Now", ChangeTiming.TERM_END: "At the end of the term"}
