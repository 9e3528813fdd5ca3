"""Forms of the subscription change, reactivation and recovery pages, and the choices they offer.

What a customer may choose follows the merchant's portal preferences: which plans (the allowed
plans, or every active plan when none are listed), whether the quantity, addons, coupon and
billing frequency may change. Forms check the shape of the input only; the billing services
decide what is possible (STYLE 9) and their refusals are shown next to the field they name.

Every confirm form carries ``figures``, a digest of the figures the customer was shown (the
service's dry run, DESIGN rule 5): confirming recomputes them and refuses when they differ.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django import forms
from django.core.validators import RegexValidator
from django.db.models import Exists, OuterRef, Q
from django.views.decorators.debug import sensitive_variables

from billing.clock import billing_today
from billing.enums import AddonKind, ChangeTiming
from billing.models import Addon, Organization, PaymentMethod, Plan, Subscription
from billing.money import format_money
from billing.pricing import Configuration, PriceBook, configuration_of
from billing.services.subscriptions import ChangeRequest, ChargesSummary
from portal.models import PortalPreferences
from portal.payment_forms import IDEMPOTENCY_KEY_PATTERN, NEW_CARD, NoEchoTextInput

FIGURES_CHANGED = "The figures changed, please review."
# Direction-dependent timing preferences ("choice": the customer picks).
TIMING_CHOICE = "choice"
ADDON_PREFIX = "addon_"
MAX_QUANTITY = 1_000_000


# ----------------------------------------------------------------------------- choices
@dataclass(frozen=True)
class ChangeOptions:
    """What this customer may change on this subscription, with the customer's own prices."""

    current: Configuration
    book: PriceBook
    plans: tuple[Plan, ...]  # choosable plans, the current one included
    quantity: bool
    addons: tuple[Addon, ...]
    coupons: bool

    @property
    def plan_choice(self) -> bool:
        return len(self.plans) > 1

    @property
    def anything(self) -> bool:
        return self.plan_choice or self.quantity or bool(self.addons) or self.coupons

    def plan(self, code: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.code == code), None)

    def price_label(self, item: Plan | Addon, per: str) -> str:
        return f"{format_money(self.book.unit_price(item), self.book.currency)} per {per}"


def plans_offered(preferences: PortalPreferences, current: Plan) -> list[Plan]:
    """The current plan plus the plans the merchant lets customers move to, in one query.

    A plan change may pick any allowed plan billed as often as the current one; a billing
    frequency change picks the same product billed at another interval (Pro monthly ↔ Pro
    yearly). Allowed plans limit both; an empty list allows every active plan.
    """
    same_interval = Q(interval=current.interval, interval_count=current.interval_count)
    choosable = Q(pk__in=[])
    if preferences.allow_plan_change:
        choosable |= same_interval
        if preferences.allow_frequency_change:
            choosable |= ~same_interval
    elif preferences.allow_frequency_change:
        choosable |= Q(product_id=current.product_id) & ~same_interval
    through = PortalPreferences.allowed_plans.through.objects.filter(
        portalpreferences_id=preferences.pk
    )
    allowed = Q(Exists(through.filter(plan_id=OuterRef("pk")))) | ~Q(Exists(through))
    return list(
        Plan.objects.filter(Q(pk=current.pk) | (choosable & allowed & Q(active=True)))
        .select_related("product")
        .order_by("product__name", "position", "price", "code")
    )


def change_options(
    preferences: PortalPreferences, subscription: Subscription, *, plans_only: bool = False
) -> ChangeOptions:
    """The choices of the change page (subscription loaded with plan, customer, price list);
    ``plans_only``: just the plans (reactivating on another plan)."""
    current = (
        Configuration(subscription.plan, subscription.quantity)
        if plans_only
        else configuration_of(subscription)
    )
    plans = plans_offered(preferences, subscription.plan)
    addons: list[Addon] = []
    if preferences.allow_addon_change and not plans_only:
        addons = list(
            Addon.objects.filter(active=True, kind=AddonKind.RECURRING)
            .filter(Q(applicable_plans__isnull=True) | Q(applicable_plans__in=plans))
            .distinct()
            .order_by("name")
        )
        # An addon the subscription carries stays adjustable even if no longer on offer.
        known = {addon.pk for addon in addons}
        addons += [addon for addon, _quantity in current.addons if addon.pk not in known]
    return ChangeOptions(
        current=current,
        book=PriceBook(subscription.customer, Organization.load()),
        plans=tuple(plans),
        quantity=preferences.allow_quantity_change and not plans_only,
        addons=tuple(addons),
        coupons=preferences.allow_coupons and not plans_only,
    )


def plan_choices(options: ChangeOptions) -> list:
    """Plans grouped by product (an <optgroup> each), labelled with price and frequency."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for plan in options.plans:
        label = f"{plan.name} — {options.price_label(plan, plan.interval_label)}"
        if plan.pk == options.current.plan.pk:
            label += " (current)"
        groups.setdefault(plan.product.name, []).append((plan.code, label))
    if len(groups) == 1:
        return next(iter(groups.values()))
    return list(groups.items())


# ----------------------------------------------------------------------------- figures
def summary_figures(summary: ChargesSummary | None) -> tuple:
    """Every amount and date of a charges summary, in a stable, comparable form."""
    if summary is None:
        return ()
    invoice = summary.invoice
    lines = ()
    totals = ()
    if invoice is not None:
        lines = tuple(
            (
                line.kind,
                line.description,
                str(line.quantity),
                str(line.unit_price),
                str(line.amount),
            )
            for line in invoice.lines
        )
        totals = tuple(
            str(value)
            for value in (
                invoice.subtotal,
                invoice.discount_total,
                invoice.tax_rate,
                invoice.tax_total,
                invoice.total,
            )
        )
    return (
        lines,
        totals,
        str(summary.credit),
        str(summary.credit_applied),
        str(summary.due_now),
        str(summary.next_billing_date),
        str(summary.next_amount),
        summary.notes,
    )


def figures_digest(*parts) -> str:
    """A digest of what the page shows; the confirm form carries it back."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def request_figures(request: ChangeRequest) -> tuple:
    return (
        request.plan.code if request.plan else None,
        request.quantity,
        tuple(sorted((request.addons or {}).items())) if request.addons is not None else None,
        (request.coupon_code or "").strip().lower(),
    )


# ----------------------------------------------------------------------------- change form
class SubscriptionChangeForm(forms.Form):
    """Plan (and billing frequency), quantity, addons, coupon and timing of one change."""

    use_required_attribute = False

    plan = forms.ChoiceField(
        label="Plan",
        required=False,
        help_text="Plans billed at another interval change your billing frequency.",
        error_messages={"invalid_choice": "That plan is not available for a change."},
    )
    quantity = forms.IntegerField(
        label="Quantity", min_value=1, max_value=MAX_QUANTITY, required=False
    )
    coupon = forms.CharField(
        label="Coupon code",
        required=False,
        max_length=60,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    timing = forms.ChoiceField(
        label="When should the change apply?",
        choices=ChangeTiming.choices,
        widget=forms.RadioSelect,
        required=False,
    )
    figures = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)
    # Names this form's confirmation, so a second submit shows the first one's result.
    token = forms.CharField(
        widget=forms.HiddenInput,
        required=False,
        validators=[RegexValidator(IDEMPOTENCY_KEY_PATTERN)],
    )

    def __init__(self, data=None, *, options: ChangeOptions, **kwargs):
        super().__init__(data, **kwargs)
        self.options = options
        self.addons_error = ""
        current = options.current
        if options.plan_choice:
            self.fields["plan"].choices = plan_choices(options)
            self.fields["plan"].initial = current.plan.code
        else:
            del self.fields["plan"]
        if options.quantity:
            self.fields["quantity"].initial = current.quantity
            plan = options.plan(self.data.get("plan", "")) if self.is_bound else None
            plan = plan or current.plan
            limits = f"at least {plan.min_quantity}"
            if plan.max_quantity is not None:
                limits = f"from {plan.min_quantity} to {plan.max_quantity}"
            self.fields["quantity"].help_text = f"The {plan.name} plan allows {limits}."
        else:
            del self.fields["quantity"]
        if not options.coupons:
            del self.fields["coupon"]
        carried = current.addon_quantities
        for addon in options.addons:
            self.fields[ADDON_PREFIX + addon.code] = forms.IntegerField(
                label=addon.name,
                min_value=0,
                max_value=addon.max_quantity or MAX_QUANTITY,
                required=False,
                initial=carried.get(addon.code, 0),
                help_text=f"{options.price_label(addon, addon.unit_name)} each billing period. "
                "0 removes it.",
            )

    @property
    def addon_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(ADDON_PREFIX)]

    def field_error(self, name: str | None, message: str) -> None:
        """A service's refusal next to the field it names, or at the top of the form."""
        if name == "addons" and self.addon_fields:
            self.addons_error = message
        elif name in self.fields and name not in ("figures", "token"):
            self.add_error(name, message)
        else:
            self.add_error(None, message)

    def change_request(self) -> ChangeRequest:
        """What the customer asked for; ``None`` keeps a part as it is."""
        data, current = self.cleaned_data, self.options.current
        plan = self.options.plan(data["plan"]) if "plan" in self.fields else None
        if plan is not None and plan.pk == current.plan.pk:
            plan = None
        quantity = data.get("quantity") if "quantity" in self.fields else None
        if quantity == current.quantity:
            quantity = None
        addons = None
        if self.options.addons:
            wanted = dict(current.addon_quantities)
            for addon in self.options.addons:
                wanted[addon.code] = data.get(ADDON_PREFIX + addon.code) or 0
            if {code: q for code, q in wanted.items() if q} != current.addon_quantities:
                addons = wanted
        coupon = (data.get("coupon") or "").strip() or None
        return ChangeRequest(plan=plan, quantity=quantity, addons=addons, coupon_code=coupon)

    def changed_part(self, request: ChangeRequest) -> str:
        """The field a refusal of the change's direction belongs next to."""
        if request.plan is not None:
            return "plan" if "plan" in self.fields else ""
        if request.quantity is not None:
            return "quantity"
        if request.addons is not None:
            return "addons"
        return "coupon"

    def clean_plan(self):
        """The plan's code; none posted keeps the current plan."""
        code = self.cleaned_data["plan"] or self.options.current.plan.code
        if self.options.plan(code) is None:
            raise forms.ValidationError("That plan is not available for a change.")
        return code


def is_nothing(request: ChangeRequest) -> bool:
    return (
        request.plan is None
        and request.quantity is None
        and request.addons is None
        and not request.coupon_code
    )


# ----------------------------------------------------------------------------- paying
class CardPaymentForm(forms.Form):
    """Pay with a saved card or a new one (tokenized by the gateway; number and CVC are never
    rendered back), under an idempotency key that makes the charge happen once."""

    use_required_attribute = False

    method = forms.ChoiceField(label="Pay with", widget=forms.RadioSelect, required=False)
    number = forms.CharField(
        label="Card number",
        max_length=23,
        required=False,
        widget=NoEchoTextInput(
            attrs={"autocomplete": "cc-number", "inputmode": "numeric", "spellcheck": "false"}
        ),
    )
    exp_month = forms.IntegerField(
        label="Expiry month (MM)",
        min_value=1,
        max_value=12,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "cc-exp-month", "inputmode": "numeric"}),
    )
    exp_year = forms.IntegerField(
        label="Expiry year (YY)",
        min_value=0,
        max_value=2999,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "cc-exp-year", "inputmode": "numeric"}),
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
    idempotency_key = forms.CharField(
        widget=forms.HiddenInput, validators=[RegexValidator(IDEMPOTENCY_KEY_PATTERN)]
    )
    figures = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def __init__(
        self,
        data=None,
        *,
        cards: Iterable[PaymentMethod] = (),
        charge_needed: bool = True,
        new_card_allowed: bool = True,
        **kwargs,
    ):
        super().__init__(data, **kwargs)
        cards = list(cards)
        self.cards = {str(card.public_id): card for card in cards}
        self.charge_needed = charge_needed
        self.new_card_allowed = new_card_allowed
        choices = [(key, _card_label(card)) for key, card in self.cards.items()]
        if new_card_allowed:
            choices.append((NEW_CARD, "A new card"))
        self.fields["method"].choices = choices
        if not self.is_bound:
            # After a failed payment a new card is the likely fix; else the default card.
            default = next((c for c in cards if c.is_default), cards[0] if cards else None)
            if new_card_allowed:
                self.initial.setdefault("method", NEW_CARD)
            elif default is not None:
                self.initial.setdefault("method", str(default.public_id))

    def clean(self):
        cleaned = super().clean()
        if not self.charge_needed:
            return cleaned
        method = cleaned.get("method")
        if not method:
            self.add_error("method", "Choose the card to pay with.")
        elif method == NEW_CARD:
            self._clean_card(cleaned)
        return cleaned

    @sensitive_variables("cleaned", "digits", "cvc")
    def _clean_card(self, cleaned: dict) -> None:
        digits = (cleaned.get("number") or "").replace(" ", "").replace("-", "")
        if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
            self.add_error("number", "Enter the card number as printed on the card.")
        else:
            cleaned["number"] = digits
        if cleaned.get("exp_month") is None and "exp_month" not in self.errors:
            self.add_error("exp_month", "Enter the expiry month, 1 to 12.")
        if cleaned.get("exp_year") is None and "exp_year" not in self.errors:
            self.add_error("exp_year", "Enter the expiry year, for example 29.")
        cvc = cleaned.get("cvc") or ""
        if not (cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
            self.add_error("cvc", "Enter the 3 or 4 digits on the back of the card.")

    @property
    def wants_new_card(self) -> bool:
        return self.charge_needed and self.cleaned_data.get("method") == NEW_CARD

    @property
    def saved_card(self) -> PaymentMethod | None:
        return self.cards.get(self.cleaned_data.get("method") or "")

    @sensitive_variables("data")
    def card_details(self) -> dict:
        """Keyword arguments for billing.services.payment_methods.payment_method_add."""
        data = self.cleaned_data
        return {
            "number": data["number"],
            "exp_month": data["exp_month"],
            "exp_year": data["exp_year"],
            "cvc": data["cvc"],
            "cardholder_name": data.get("name") or "",
        }

    def add_gateway_error(self, error) -> None:
        """A gateway refusal next to the card field it names (its "exp" is our month field)."""
        name = {"exp": "exp_month"}.get(error.field, error.field)
        self.add_error(name if name in self.fields else None, error.message)


def _card_label(card: PaymentMethod) -> str:
    today = billing_today()
    label = str(card)
    if (card.exp_year, card.exp_month) < (today.year, today.month):
        label += " — expired"
    elif card.is_default:
        label += " — default"
    return label


class ReactivateForm(CardPaymentForm):
    """Confirm a reactivation or a recovery: the plan previewed (if another one), the figures
    shown, and — when an invoice must be paid first — the card."""

    plan = forms.CharField(widget=forms.HiddenInput, required=False, max_length=60)
    token = forms.CharField(
        widget=forms.HiddenInput,
        required=False,
        validators=[RegexValidator(IDEMPOTENCY_KEY_PATTERN)],
    )


class ReactivationPlanForm(forms.Form):
    """The plan to reactivate on. Submitted by GET: choosing only re-runs the preview."""

    use_required_attribute = False

    plan = forms.ChoiceField(
        label="Plan",
        required=False,
        help_text="Another plan restarts the subscription on its current plan and changes it "
        "at once, prorated, in the same step; the summary shows both.",
    )

    def __init__(self, data=None, *, options: ChangeOptions, **kwargs):
        super().__init__(data, **kwargs)
        self.options = options
        self.fields["plan"].choices = plan_choices(options)
        self.fields["plan"].initial = options.current.plan.code

    def clean_plan(self):
        code = self.cleaned_data.get("plan") or ""
        if code and self.options.plan(code) is None:
            raise forms.ValidationError("That plan is not available.")
        return code

    @property
    def chosen(self) -> Plan | None:
        """Another plan than the current one, or None (call is_valid() first)."""
        plan = self.options.plan(getattr(self, "cleaned_data", {}).get("plan") or "")
        return None if plan is None or plan.pk == self.options.current.plan.pk else plan


@dataclass
class Figures:
    """The money of a reactivation or recovery page, in the order it happens: the open
    invoices paid now, the reactivation, then the plan change (if another plan)."""

    invoices: list = field(default_factory=list)  # (invoice, balance charged now)
    reactivation: ChargesSummary | None = None
    change: ChargesSummary | None = None
    plan_code: str = ""
    term_end: object = None  # the billing date an in-term reactivation keeps

    @property
    def invoices_total(self) -> Decimal:
        return sum((amount for _invoice, amount in self.invoices), Decimal("0.00"))

    @property
    def due_now(self) -> Decimal:
        total = self.invoices_total
        for summary in (self.reactivation, self.change):
            if summary is not None:
                total += summary.due_now
        return total

    @property
    def digest(self) -> str:
        return figures_digest(
            tuple((str(invoice.public_id), str(amount)) for invoice, amount in self.invoices),
            summary_figures(self.reactivation),
            summary_figures(self.change),
            self.plan_code,
            str(self.term_end),
        )
