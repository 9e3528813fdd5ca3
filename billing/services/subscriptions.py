"""Every subscription transition (DESIGN rules 3, 4, 8–10, 12), each one atomic and evented.

Money-moving services take ``dry_run``: they compute their ``ChargesSummary`` under the same lock
with the same code and return it without writing (DESIGN rule 5: preview equals charge). A real
run builds the invoice or credit note from that very summary, commits, and only then charges the
card, outside the transaction (rule 7).
"""

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.bulk import bulk_update_rows
from billing.clock import billing_today
from billing.enums import (
    ActorKind,
    AddonKind,
    CancelReason,
    ChangeTiming,
    CreditNoteReason,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.errors import InvalidTransition, NotAllowed, ValidationFailed
from billing.lifecycle import assert_transition
from billing.models import (
    Addon,
    Coupon,
    CreditNote,
    Customer,
    Invoice,
    Organization,
    Payment,
    PaymentMethod,
    Plan,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    UsageRecord,
)
from billing.money import ZERO, percent_of, round_money
from billing.periods import Period, boundary, next_period, period_starting
from billing.pricing import (
    Configuration,
    LineDraft,
    PriceBook,
    Totals,
    configuration_of,
    coupon_initial_cycles,
    coupon_validate,
    period_charges,
    recurring_amount,
    setup_fee_line,
    totals,
)
from billing.proration import prorate
from billing.selectors import customer_credit_balance, invoice_balance, invoices_with_amounts
from billing.services.events import (
    actor_kind_for,
    event_build,
    event_record,
    events_record_many,
)

S = SubscriptionStatus
ACTIVE_TERM_STATUSES = (S.LIVE, S.NON_RENEWING, S.PAST_DUE)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ChargesSummary:
    """What an action does to the customer's money and dates — shown before, done after."""

    invoice: Totals | None = None  # invoiced now
    credit: Decimal = ZERO  # credit note issued now (tax included)
    credit_applied: Decimal = ZERO  # existing customer credit used on the invoice
    next_billing_date: datetime.date | None = None
    next_amount: Decimal | None = None  # the next regular invoice, tax included
    notes: tuple[str, ...] = ()

    @property
    def due_now(self) -> Decimal:
        return (self.invoice.total if self.invoice else ZERO) - self.credit_applied


@dataclass
class Outcome:
    subscription: Subscription
    summary: ChargesSummary
    invoice: Invoice | None = None
    credit_note: CreditNote | None = None
    payment: Payment | None = None
    dry_run: bool = False
    events: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def _lock(subscription: Subscription) -> Subscription:
    # of=("self",): lock only the subscription row. PostgreSQL refuses FOR UPDATE on the nullable
    # side of the outer joins the select_related below needs (group, price list, card).
    return (
        Subscription.objects.select_for_update(of=("self",), no_key=True)
        .select_related("plan", "customer__group__price_list", "payment_method")
        .get(pk=subscription.pk)
    )


def _book(customer: Customer) -> PriceBook:
    return PriceBook(customer, Organization.load())


def _set_status(sub: Subscription, new: str, *, message: str | None = None) -> str:
    assert_transition("subscription", sub.status, new, message)
    before, sub.status = sub.status, new
    return before


def _term(sub: Subscription) -> Period | None:
    if sub.current_term_start and sub.current_term_end:
        return Period(sub.current_term_start, sub.current_term_end)
    return None


def _first_period(plan: Plan, start: datetime.date) -> Period:
    return Period(start, boundary(start, plan.interval, plan.interval_count, 1))


def _next_amount(
    config: Configuration, book: PriceBook, period: Period, *, billed_now: bool = False
) -> Decimal:
    """The next regular invoice's total. ``billed_now``: this action invoices a term first,
    using up a cycle of each limited coupon (a once coupon no longer discounts the next one)."""
    used = 1 if billed_now else 0
    config = config.with_changes(
        coupons=tuple(
            (coupon, None if cycles is None else cycles - used)
            for coupon, cycles in config.coupons
            if cycles is None or cycles > used
        )
    )
    return period_charges(config, book, period).total


def _coupons_used_now(old: Configuration, new: Configuration) -> Configuration:
    """``new`` once the rest of this term is prorated with it: each limited coupon the change
    adds has discounted that prorated charge, its first use, so a once coupon does not discount
    the next renewal as well (the row is kept, with no cycle left)."""
    before = {coupon.pk for coupon, _cycles in old.coupons}
    return new.with_changes(
        coupons=tuple(
            (coupon, cycles - 1 if cycles is not None and coupon.pk not in before else cycles)
            for coupon, cycles in new.coupons
        )
    )


def _credit_applied(customer: Customer, invoice_total: Decimal) -> Decimal:
    return min(customer_credit_balance(customer), invoice_total) if invoice_total > 0 else ZERO


def _with_tax(amount: Decimal, book: PriceBook) -> Decimal:
    """A pre-tax credit plus the tax it carried, for credit notes that refund taxed charges."""
    return amount + percent_of(amount, book.tax_rate, book.currency)


def _record(
    sub, kind, description, actor, *, before=None, after=None, invoice=None, credit_note=None
):
    event_record(
        kind=kind,
        description=description,
        actor=actor,
        subscription=sub,
        invoice=invoice,
        credit_note=credit_note,
        before=before,
        after=after,
    )


def _issue(sub: Subscription, charges: Totals, kind: str, period: Period | None, actor) -> Invoice:
    from billing.services.invoices import invoice_issue

    return invoice_issue(
        customer=sub.customer,
        charges=charges,
        kind=kind,
        subscription=sub,
        period=period,
        actor=actor,
    )


def _credit_note(sub: Subscription, amount: Decimal, reason: str, memo: str, actor) -> CreditNote:
    from billing.services.credits import credit_note_issue, credits_apply_to_open_invoices

    note = credit_note_issue(
        customer=sub.customer,
        amount=amount,
        reason=reason,
        subscription=sub,
        memo=memo,
        actor=actor,
    )
    credits_apply_to_open_invoices(customer=sub.customer, actor=actor)
    return note


def invoice_attempt_key(invoice: Invoice, attempt: int = 0) -> str:
    """Deterministic, so a rerun after a crash reuses the key and can never charge twice."""
    return f"inv_{invoice.public_id.hex}_{attempt}"


def _charge(outcome: Outcome, actor, *, start_dunning: bool = True) -> Outcome:
    """After commit: charge the invoice's balance to the subscription's card, if it auto-charges."""
    from billing.services.dunning import dunning_start
    from billing.services.payments import payment_collect

    invoice, sub = outcome.invoice, outcome.subscription
    if invoice is None or outcome.dry_run:
        return outcome
    invoice.refresh_from_db()
    if invoice.status != InvoiceStatus.OPEN or invoice_balance(invoice)[2] <= 0:
        return outcome
    if not (sub.auto_charge and sub.payment_method_id):
        return outcome
    payment = payment_collect(
        payer=sub.customer,
        invoices=[invoice],
        method=sub.payment_method,
        idempotency_key=invoice_attempt_key(invoice),
        actor=actor,
    )
    outcome.payment = payment
    if payment.status == PaymentStatus.FAILED and start_dunning:
        dunning_start(invoice=invoice, payment=payment, actor=actor)
    outcome.subscription.refresh_from_db()
    return outcome


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ChangeRequest:
    """A desired configuration. ``None`` fields keep the current value."""

    plan: Plan | None = None
    quantity: int | None = None
    addons: Mapping[str, int] | None = None  # addon code → quantity (complete set; 0 removes)
    coupon_code: str | None = None  # add this coupon ("" keeps the current ones)


def _validate_quantity(plan: Plan, quantity: int) -> None:
    if quantity < plan.min_quantity:
        raise ValidationFailed(
            f"The {plan.name} plan needs a quantity of at least {plan.min_quantity}.",
            field="quantity",
        )
    if plan.max_quantity is not None and quantity > plan.max_quantity:
        raise ValidationFailed(
            f"The {plan.name} plan allows at most {plan.max_quantity}.", field="quantity"
        )


def _resolve_addons(plan: Plan, wanted: Mapping[str, int]) -> tuple[tuple[Addon, int], ...]:
    codes = [code for code, quantity in wanted.items() if quantity]
    addons = {
        a.code: a for a in Addon.objects.filter(code__in=codes).prefetch_related("applicable_plans")
    }
    result = []
    for code in sorted(codes):
        quantity = wanted[code]
        addon = addons.get(code)
        if addon is None or not addon.active or addon.kind != AddonKind.RECURRING:
            raise ValidationFailed(f"The addon {code} is not available.", field="addons")
        applicable = [p.pk for p in addon.applicable_plans.all()]
        if applicable and plan.pk not in applicable:
            raise ValidationFailed(
                f"{addon.name} is not available on the {plan.name} plan.", field="addons"
            )
        if quantity < 0 or (addon.max_quantity is not None and quantity > addon.max_quantity):
            raise ValidationFailed(
                f"That quantity of {addon.name} is not possible.", field="addons"
            )
        result.append((addon, quantity))
    return tuple(result)


def _resolve_coupon(code: str, plan: Plan, today: datetime.date) -> Coupon:
    coupon = Coupon.objects.filter(code__iexact=code.strip()).first()
    if coupon is None:
        raise ValidationFailed(f"There is no coupon {code.strip()!r}.", field="coupon")
    coupon_validate(coupon, plan, today=today)
    return coupon


def build_configuration(
    *, current: Configuration | None, request: ChangeRequest, today: datetime.date
) -> Configuration:
    """Validate a request against the catalog and return the full resulting configuration."""
    plan = request.plan or (current.plan if current else None)
    if plan is None:
        raise ValidationFailed("Choose a plan.", field="plan")
    if not plan.active and (current is None or plan.pk != current.plan.pk):
        raise ValidationFailed(f"The {plan.name} plan is not available.", field="plan")
    quantity = (
        request.quantity
        if request.quantity is not None
        else (current.quantity if current else plan.min_quantity)
    )
    _validate_quantity(plan, quantity)
    if request.addons is not None:
        addons = _resolve_addons(plan, request.addons)
    else:
        addons = current.addons if current else ()
        _resolve_addons(plan, {a.code: q for a, q in addons})  # still valid on the new plan?
    coupons = current.coupons if current else ()
    if request.coupon_code:
        coupon = _resolve_coupon(request.coupon_code, plan, today)
        if any(c.pk == coupon.pk for c, _ in coupons):
            raise ValidationFailed(f"The coupon {coupon.code} is already applied.", field="coupon")
        coupons = (*coupons, (coupon, coupon_initial_cycles(coupon)))
    return Configuration(plan, quantity, addons, coupons)


def _store_configuration(sub: Subscription, config: Configuration) -> None:
    sub.plan = config.plan
    sub.quantity = config.quantity
    sub.save(update_fields=["plan", "quantity", "updated_at"])
    wanted = {a.pk: q for a, q in config.addons}
    SubscriptionAddon.objects.filter(subscription=sub).exclude(addon_id__in=wanted).delete()
    for addon_id, quantity in wanted.items():
        SubscriptionAddon.objects.update_or_create(
            subscription=sub, addon_id=addon_id, defaults={"quantity": quantity}
        )
    existing = set(
        SubscriptionCoupon.objects.filter(subscription=sub).values_list("coupon_id", flat=True)
    )
    for coupon, cycles in config.coupons:
        if coupon.pk not in existing:
            SubscriptionCoupon.objects.create(
                subscription=sub, coupon=coupon, remaining_cycles=cycles
            )


def _describe(config: Configuration) -> dict:
    return {
        "plan": config.plan.code,
        "quantity": config.quantity,
        "addons": config.addon_quantities,
        "coupons": [c.code for c, _ in config.coupons],
    }


# ----------------------------------------------------------------------------- create
def subscription_create(
    *,
    customer: Customer,
    plan: Plan,
    quantity: int = 1,
    addons: Mapping[str, int] | None = None,
    coupon_code: str = "",
    start_date: datetime.date | None = None,
    trial: bool | None = None,
    auto_charge: bool = True,
    payment_method: PaymentMethod | None = None,
    actor=None,
    dry_run: bool = False,
) -> Outcome:
    """Start a subscription: in the future, in trial (plan's trial days), or live and invoiced."""
    organization = Organization.load()
    today = billing_today(organization)
    start = start_date or today
    if start < today:
        raise ValidationFailed("A subscription cannot start in the past.", field="start_date")
    config = build_configuration(
        current=None,
        request=ChangeRequest(
            plan=plan, quantity=quantity, addons=addons or {}, coupon_code=coupon_code
        ),
        today=today,
    )
    with_trial = plan.trial_days > 0 if trial is None else trial
    if with_trial and plan.trial_days == 0:
        raise ValidationFailed(f"The {plan.name} plan has no trial.", field="plan")
    method = payment_method or customer.payment_methods.filter(is_default=True).first()
    if method is not None and method.customer_id != customer.pk:
        raise NotAllowed("That card belongs to another customer.")
    book = PriceBook(customer, organization)
    charges = None
    trial_end = start + datetime.timedelta(days=plan.trial_days) if with_trial else None
    if start > today:
        # A future start keeps the trial choice on the row (its trial dates), so that
        # subscription_start honours trial=False on a plan with trial days, and vice versa.
        status, period, first_billing = S.FUTURE, None, trial_end or start
    elif with_trial:
        status, period, first_billing = S.IN_TRIAL, None, trial_end
    else:
        status, period = S.LIVE, _first_period(plan, start)
        first_billing = period.end
        setup = setup_fee_line(plan, book)
        charges = period_charges(config, book, period, extra_lines=[setup] if setup else [])
    summary = ChargesSummary(
        invoice=charges,
        credit_applied=_credit_applied(customer, charges.total) if charges else ZERO,
        next_billing_date=first_billing,
        next_amount=_next_amount(
            config,
            book,
            next_period(start, plan.interval, plan.interval_count, period)
            if period
            else _first_period(plan, first_billing),
            billed_now=charges is not None,
        ),
    )
    draft = Subscription(customer=customer, plan=plan, quantity=config.quantity, status=status)
    if dry_run:
        return Outcome(subscription=draft, summary=summary, dry_run=True)
    with transaction.atomic():
        sub = Subscription.objects.create(
            customer=customer,
            plan=plan,
            quantity=config.quantity,
            status=status,
            auto_charge=auto_charge and method is not None,
            payment_method=method,
            start_date=start,
            anchor_date=trial_end or start,
            current_term_start=period.start if period else None,
            current_term_end=period.end if period else None,
            trial_start=start if with_trial else None,
            trial_end=trial_end,
            remaining_billing_cycles=plan.billing_cycles,
        )
        _store_configuration(sub, config)
        _record(
            sub,
            "subscription.created",
            f"Subscription to {plan.name} created ({sub.get_status_display().lower()})",
            actor,
            after=_describe(config),
        )
        outcome = Outcome(subscription=sub, summary=summary)
        if charges is not None:
            outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
            _cycle_billed(sub)
    return _charge(outcome, actor)


def _consume_coupon_cycles(sub: Subscription) -> None:
    """One billed cycle used: count down limited coupons (once / N cycles)."""
    for row in SubscriptionCoupon.objects.select_for_update().filter(
        subscription=sub, remaining_cycles__gt=0
    ):
        row.remaining_cycles -= 1
        row.save(update_fields=["remaining_cycles"])


def _cycle_billed(sub: Subscription) -> None:
    """A full term was invoiced: count down limited coupons and the plan's billing cycles.

    Every term counts, the first included, so a plan of N billing cycles bills exactly N terms
    (the renewal after the N-th finds 0 left and cancels).
    """
    _consume_coupon_cycles(sub)
    if sub.remaining_billing_cycles:
        sub.remaining_billing_cycles -= 1
        sub.save(update_fields=["remaining_billing_cycles", "updated_at"])


def _begin_term(sub: Subscription, period: Period) -> list[str]:
    """Make ``period`` the subscription's term, anchored on its start (periods count from the
    anchor, rule 3); returns the fields to save."""
    sub.anchor_date = sub.current_term_start = period.start
    sub.current_term_end = period.end
    return ["anchor_date", "current_term_start", "current_term_end"]


def _start_term(
    sub: Subscription, start: datetime.date, book: PriceBook, *, setup_fee: bool
) -> tuple[Period, Totals]:
    """A new term beginning ``start`` (the anchor moves there) and its invoice's charges."""
    config = configuration_of(sub)
    period = _first_period(sub.plan, start)
    extra = [line for line in [setup_fee_line(sub.plan, book)] if line and setup_fee]
    return period, period_charges(config, book, period, extra_lines=extra)


def subscription_start(*, subscription: Subscription, actor=None) -> Outcome:
    """A future subscription's start date has come: trial or live with its first invoice."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.FUTURE or sub.start_date > today:
            raise InvalidTransition("This subscription is not due to start.")
        book = _book(sub.customer)
        outcome = Outcome(subscription=sub, summary=ChargesSummary())
        if sub.trial_end is not None:
            # subscription_create set the trial dates when the subscription was to have a trial.
            before = _set_status(sub, S.IN_TRIAL)
            sub.trial_start = sub.start_date
            sub.anchor_date = sub.trial_end
            sub.save(
                update_fields=["status", "trial_start", "trial_end", "anchor_date", "updated_at"]
            )
        else:
            before = _set_status(sub, S.LIVE)
            period, charges = _start_term(sub, sub.start_date, book, setup_fee=True)
            _begin_term(sub, period)
            sub.save(
                update_fields=[
                    "status",
                    "anchor_date",
                    "current_term_start",
                    "current_term_end",
                    "updated_at",
                ]
            )
            outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
            _cycle_billed(sub)
        _record(
            sub,
            "subscription.started",
            "Subscription started",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
    return _charge(outcome, actor)


# ----------------------------------------------------------------------------- trials
def subscription_convert_trial(
    *, subscription: Subscription, actor=None, dry_run: bool = False
) -> Outcome:
    """End the trial today: a first term from today, invoiced and charged; the subscription is live."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.IN_TRIAL:
            raise InvalidTransition("Only a subscription in trial can be converted.")
        book = _book(sub.customer)
        period, charges = _start_term(sub, today, book, setup_fee=True)
        config = configuration_of(sub)
        summary = _new_term_summary(
            sub,
            config,
            book,
            period,
            charges,
            f"Your trial ends today and your billing date becomes the {period.start.day}.",
        )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        before = _set_status(sub, S.LIVE)
        sub.trial_end = today
        sub.cancel_at = None
        _begin_term(sub, period)
        sub.save(
            update_fields=[
                "status",
                "trial_end",
                "cancel_at",
                "anchor_date",
                "current_term_start",
                "current_term_end",
                "updated_at",
            ]
        )
        _record(
            sub,
            "subscription.trial_converted",
            "Trial converted to a paid subscription",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
        outcome = Outcome(subscription=sub, summary=summary)
        outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
        _cycle_billed(sub)
    return _charge(outcome, actor)


def subscription_end_trial(*, subscription: Subscription, actor=None) -> Outcome:
    """The trial's last day has come (a job; safe to rerun). DESIGN rule 8's branches:

    auto-charge with a card → the first term is invoiced and charged: paid → live; declined →
    the invoice is voided and the subscription expires (extendable), or moves to the free plan
    when the merchant falls back to it. Without auto-charge → invoiced with payment terms, live.
    A cancellation scheduled for the trial end wins over all of them.
    """
    today = billing_today()
    organization = Organization.load()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.IN_TRIAL or sub.trial_end is None or sub.trial_end > today:
            raise InvalidTransition("This trial has not ended.")
        outcome = Outcome(subscription=sub, summary=ChargesSummary())
        if sub.cancel_at is not None and sub.cancel_at <= today:
            before = _set_status(sub, S.CANCELLED)
            sub.cancelled_at = timezone.now()
            sub.cancel_reason = sub.cancel_reason or CancelReason.CUSTOMER
            sub.save(update_fields=["status", "cancelled_at", "cancel_reason", "updated_at"])
            _record(
                sub,
                "subscription.cancelled",
                "Trial ended and the subscription was cancelled as scheduled",
                actor,
                before={"status": before},
                after={"status": sub.status},
            )
            return outcome
        can_charge = sub.auto_charge and sub.payment_method_id is not None
        if sub.auto_charge and not can_charge:
            return _trial_unpaid(sub, organization, actor, invoice=None)
        book = _book(sub.customer)
        period, charges = _start_term(sub, sub.trial_end, book, setup_fee=True)
        # A rerun after a crash finds the invoice it issued before and charges it by the same key.
        outcome.invoice = Invoice.objects.filter(
            subscription=sub, period_start=period.start, kind=InvoiceKind.RECURRING
        ).first()
        if outcome.invoice is None:
            # Cycles (coupons, billing cycles) count once the term is taken up, in
            # _activate_after_trial: an invoice voided because the card failed used none.
            outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
        if not can_charge:
            _activate_after_trial(sub, period, actor)
            return outcome
    outcome = _charge(outcome, actor, start_dunning=False)
    invoice = outcome.invoice
    invoice.refresh_from_db()
    payment_status = outcome.payment.status if outcome.payment else None
    with transaction.atomic():
        sub = _lock(outcome.subscription)
        if sub.status != S.IN_TRIAL:
            return outcome
        if invoice.status == InvoiceStatus.PAID:
            _activate_after_trial(sub, Period(invoice.period_start, invoice.period_end), actor)
        elif payment_status == PaymentStatus.FAILED:
            unpaid = _trial_unpaid(sub, organization, actor, invoice=invoice)
            unpaid.payment = outcome.payment
            return unpaid
        # Unknown outcome: still in trial until reconciliation settles the payment; rerun then.
    outcome.subscription = sub
    return outcome


def _activate_after_trial(sub: Subscription, period: Period, actor) -> None:
    before = _set_status(sub, S.LIVE)
    _begin_term(sub, period)
    sub.save(
        update_fields=[
            "status",
            "anchor_date",
            "current_term_start",
            "current_term_end",
            "updated_at",
        ]
    )
    _cycle_billed(sub)
    _record(
        sub,
        "subscription.trial_ended",
        "Trial ended; the subscription is live",
        actor,
        before={"status": before},
        after={"status": sub.status},
    )


def _trial_unpaid(
    sub: Subscription, organization: Organization, actor, *, invoice: Invoice | None
) -> Outcome:
    """A trial that could not be paid: expired (extendable), or on the free plan if configured."""
    from billing.services.invoices import invoice_void

    if invoice is not None and invoice.status == InvoiceStatus.OPEN:
        invoice = invoice_void(invoice=invoice, actor=actor, reason="trial payment failed")
    free_plan = organization.free_plan if organization.free_plan_fallback else None
    if free_plan is not None and free_plan.active:
        old_plan = sub.plan
        period = _first_period(free_plan, sub.trial_end)
        before = _set_status(sub, S.LIVE)
        sub.plan = free_plan
        _begin_term(sub, period)
        sub.save(
            update_fields=[
                "status",
                "plan",
                "anchor_date",
                "current_term_start",
                "current_term_end",
                "updated_at",
            ]
        )
        # Paid addons do not carry over to the free plan; everything else (history, cards) stays.
        SubscriptionAddon.objects.filter(subscription=sub).delete()
        _record(
            sub,
            "subscription.moved_to_free_plan",
            f"Trial ended unpaid; moved from {old_plan.name} to {free_plan.name}",
            actor,
            before={"plan": old_plan.code, "status": before},
            after={"plan": free_plan.code, "status": sub.status},
        )
    else:
        before = _set_status(sub, S.EXPIRED)
        sub.cancel_reason = CancelReason.TRIAL_ENDED
        sub.save(update_fields=["status", "cancel_reason", "updated_at"])
        _record(
            sub,
            "subscription.expired",
            "Trial ended without payment; the subscription expired",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
    return Outcome(subscription=sub, summary=ChargesSummary(), invoice=invoice)


def subscription_extend_trial(
    *, subscription: Subscription, limit: int, actor=None
) -> Subscription:
    """Give an expired trial another trial period (the plan's length), at most ``limit`` times."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.EXPIRED or sub.cancel_reason != CancelReason.TRIAL_ENDED:
            raise InvalidTransition("Only a trial that expired can be extended.")
        if sub.trial_extensions_used >= limit:
            raise NotAllowed("This trial cannot be extended again.")
        days = sub.plan.trial_days or 14
        before = _set_status(sub, S.IN_TRIAL)
        sub.trial_end = today + datetime.timedelta(days=days)
        sub.anchor_date = sub.trial_end
        sub.trial_extensions_used += 1
        sub.cancel_reason = ""
        sub.save(
            update_fields=[
                "status",
                "trial_end",
                "anchor_date",
                "trial_extensions_used",
                "cancel_reason",
                "updated_at",
            ]
        )
        _record(
            sub,
            "subscription.trial_extended",
            f"Trial extended to {sub.trial_end:%b %-d, %Y}",
            actor,
            before={"status": before},
            after={"status": sub.status, "trial_end": sub.trial_end.isoformat()},
        )
    return sub


# ----------------------------------------------------------------------------- changes
def _is_upgrade(old: Configuration, new: Configuration, book: PriceBook) -> bool:
    return (
        recurring_amount(new, book) > recurring_amount(old, book) or new.plan.price > old.plan.price
    )


def change_is_upgrade(*, subscription: Subscription, request: ChangeRequest) -> bool:
    today = billing_today()
    old = configuration_of(subscription)
    new = build_configuration(current=old, request=request, today=today)
    return _is_upgrade(old, new, _book(subscription.customer))


def _proration_charges(
    sub: Subscription, old: Configuration, new: Configuration, book: PriceBook, today: datetime.date
):
    """(invoice charges or None, credit amount incl. tax, new term or None, notes) of a change now."""
    term = _term(sub)
    interval_changes = (old.plan.interval, old.plan.interval_count) != (
        new.plan.interval,
        new.plan.interval_count,
    )
    days_left = term.days_left(today)
    old_amount = recurring_amount(old, book)
    credit_pre_tax = prorate(
        old_amount, days_left=days_left, days_in_term=term.days, currency=book.currency
    )
    if interval_changes:
        # Monthly ↔ yearly: the new term starts today at the full new price (rule 4).
        new_term = _first_period(new.plan, today)
        charge_lines = list(period_charges(new, book, new_term).lines)
        notes = (
            f"Your billing period changes; the new term starts today and renews on {new_term.end:%b %-d, %Y}.",
        )
    else:
        new_term = None
        new_amount = recurring_amount(new, book)
        charge = prorate(
            new_amount, days_left=days_left, days_in_term=term.days, currency=book.currency
        )
        charge_lines = [
            LineDraft(
                kind=InvoiceLineKind.PRORATION_CHARGE,
                description=f"{new.plan.name} × {new.quantity} for the rest of the term ({days_left} of {term.days} days)",
                quantity=Decimal(1),
                unit_price=charge,
                amount=charge,
                period_start=today,
                period_end=term.end,
                plan=new.plan,
            )
        ]
        notes = (f"Your billing date stays {term.end:%b %-d, %Y}.",)
    credit_line = LineDraft(
        kind=InvoiceLineKind.PRORATION_CREDIT,
        description=f"Unused time on {old.plan.name} × {old.quantity} ({days_left} of {term.days} days)",
        quantity=Decimal(1),
        unit_price=-credit_pre_tax,
        amount=-credit_pre_tax,
        period_start=today,
        period_end=term.end,
        plan=old.plan,
    )
    net = sum((line.amount for line in charge_lines), ZERO) - credit_pre_tax
    if credit_pre_tax == 0 and not charge_lines:
        return None, ZERO, new_term, notes
    if net > 0 or (net == 0 and interval_changes):
        lines = [credit_line, *charge_lines] if credit_pre_tax else charge_lines
        return totals(lines, book), ZERO, new_term, notes
    return None, _with_tax(-net, book), new_term, notes


def subscription_change(
    *,
    subscription: Subscription,
    request: ChangeRequest,
    timing: str = ChangeTiming.NOW,
    actor=None,
    dry_run: bool = False,
) -> Outcome:
    """Change plan, quantity, addons, coupon or billing frequency: now (prorated) or at term end."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status not in (S.LIVE, S.NON_RENEWING, S.IN_TRIAL):
            raise InvalidTransition("This subscription cannot be changed in its current state.")
        book = _book(sub.customer)
        old = configuration_of(sub)
        new = build_configuration(current=old, request=request, today=today)
        if _describe(new) == _describe(old):
            raise ValidationFailed("Nothing would change.")
        added = {coupon.pk for coupon, _ in new.coupons} - {coupon.pk for coupon, _ in old.coupons}
        if SubscriptionCoupon.objects.filter(subscription=sub, coupon__in=added).exists():
            # Used up (a once coupon after its invoice): redeeming it again would discount anew.
            raise ValidationFailed(
                "This subscription has already used that coupon.", field="coupon"
            )
        if sub.status == S.IN_TRIAL or timing == ChangeTiming.TERM_END:
            return _change_later(
                sub, old, new, book, today, actor, dry_run, in_trial=sub.status == S.IN_TRIAL
            )
        if timing != ChangeTiming.NOW:
            raise ValidationFailed("Choose when the change applies.", field="timing")
        charges, credit, new_term, notes = _proration_charges(sub, old, new, book, today)
        if new_term is None:
            new = _coupons_used_now(old, new)
        term = new_term or _term(sub)
        # Periods count from the anchor (rule 3): a term that starts on a clamped month end
        # (Feb 28 of a Jan 31 anchor) is not itself an anchor.
        anchor = new_term.start if new_term is not None else sub.anchor_date
        summary = ChargesSummary(
            invoice=charges,
            credit=credit,
            credit_applied=_credit_applied(sub.customer, charges.total) if charges else ZERO,
            next_billing_date=term.end,
            next_amount=_next_amount(
                new,
                book,
                next_period(anchor, new.plan.interval, new.plan.interval_count, term),
                billed_now=new_term is not None,
            ),
            notes=notes,
        )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        _store_configuration(sub, new)
        if new_term is not None:
            _begin_term(sub, new_term)
            if sub.cancel_at is not None:
                # Non-renewing: the new, paid term is the one that now ends the subscription.
                sub.cancel_at = new_term.end
            sub.save(
                update_fields=[
                    "anchor_date",
                    "current_term_start",
                    "current_term_end",
                    "cancel_at",
                    "updated_at",
                ]
            )
        ScheduledChange.objects.filter(subscription=sub).delete()
        outcome = Outcome(subscription=sub, summary=summary)
        _record(
            sub,
            "subscription.changed",
            "Subscription changed now (prorated)",
            actor,
            before=_describe(old),
            after=_describe(new),
        )
        if charges is not None:
            # Always a proration invoice, even when it opens a new term (interval change): the
            # term's recurring invoice may already exist for today (a change on the first day
            # of the term), and one recurring invoice per (subscription, period start) is the
            # renewal's exactly-once guard.
            outcome.invoice = _issue(
                sub, charges, InvoiceKind.PRORATION, new_term or Period(today, term.end), actor
            )
        if new_term is not None:
            # The new term was priced with the coupons in full: it uses up a coupon cycle.
            _consume_coupon_cycles(sub)
        if charges is None and credit > 0:
            outcome.credit_note = _credit_note(
                sub, credit, CreditNoteReason.PRORATION, "Plan change", actor
            )
    return _charge(outcome, actor)


def _change_later(sub, old, new, book, today, actor, dry_run, *, in_trial: bool) -> Outcome:
    if in_trial:
        # During a trial nothing is billed yet: the change applies at once, free of charge.
        first = _first_period(new.plan, sub.trial_end)
        summary = ChargesSummary(
            next_billing_date=sub.trial_end,
            next_amount=_next_amount(new, book, first),
            notes=("Nothing is charged during the trial.",),
        )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        _store_configuration(sub, new)
        _record(
            sub,
            "subscription.changed",
            "Subscription changed during the trial",
            actor,
            before=_describe(old),
            after=_describe(new),
        )
        return Outcome(subscription=sub, summary=summary)
    term = _term(sub)
    same_interval = (old.plan.interval, old.plan.interval_count) == (
        new.plan.interval,
        new.plan.interval_count,
    )
    # As _apply_scheduled_change will: the anchor stays unless the interval changes.
    following = (
        next_period(sub.anchor_date, new.plan.interval, new.plan.interval_count, term)
        if same_interval
        else _first_period(new.plan, term.end)
    )
    summary = ChargesSummary(
        next_billing_date=term.end,
        next_amount=_next_amount(new, book, following),
        notes=(f"The change applies on {term.end:%b %-d, %Y}; nothing is charged now.",),
    )
    if dry_run:
        return Outcome(subscription=sub, summary=summary, dry_run=True)
    coupon = next((c for c, _ in new.coupons if c.pk not in {o.pk for o, _ in old.coupons}), None)
    ScheduledChange.objects.update_or_create(
        subscription=sub,
        defaults={
            "plan": new.plan,
            "quantity": new.quantity,
            "addons": new.addon_quantities,
            "coupon": coupon,
            "requested_by": actor if actor is not None and actor.is_authenticated else None,
        },
    )
    _record(
        sub,
        "subscription.change_scheduled",
        f"Change scheduled for {term.end:%b %-d, %Y}",
        actor,
        before=_describe(old),
        after=_describe(new),
    )
    return Outcome(subscription=sub, summary=summary)


def subscription_scheduled_change_cancel(*, subscription: Subscription, actor=None) -> Subscription:
    with transaction.atomic():
        sub = _lock(subscription)
        deleted, _ = ScheduledChange.objects.filter(subscription=sub).delete()
        if not deleted:
            raise InvalidTransition("There is no scheduled change to cancel.")
        _record(sub, "subscription.change_unscheduled", "Scheduled change cancelled", actor)
    return sub


def _apply_scheduled_change(sub: Subscription, actor) -> bool:
    change = (
        ScheduledChange.objects.filter(subscription=sub).select_related("plan", "coupon").first()
    )
    if change is None:
        return False
    old = configuration_of(sub)
    coupons = old.coupons
    if change.coupon and all(c.pk != change.coupon.pk for c, _ in coupons):
        coupons = (*coupons, (change.coupon, coupon_initial_cycles(change.coupon)))
    addons = _resolve_addons(change.plan, change.addons)
    new = Configuration(change.plan, change.quantity, addons, coupons)
    _store_configuration(sub, new)
    if (old.plan.interval, old.plan.interval_count) != (new.plan.interval, new.plan.interval_count):
        sub.anchor_date = sub.current_term_end
        sub.save(update_fields=["anchor_date", "updated_at"])
    change.delete()
    _record(
        sub,
        "subscription.changed",
        "Scheduled change applied at the end of the term",
        actor,
        before=_describe(old),
        after=_describe(new),
    )
    return True


# ----------------------------------------------------------------------------- renewals
def _usage_lines(
    sub: Subscription, book: PriceBook, until: datetime.datetime
) -> tuple[list[LineDraft], list[int]]:
    """Unbilled metered usage before ``until``, one line per addon, billed in arrears."""
    records = list(
        UsageRecord.objects.filter(subscription=sub, invoice__isnull=True, used_at__lt=until)
        .select_related("addon")
        .order_by("addon__name", "pk")
    )
    by_addon: dict[int, tuple[Addon, Decimal]] = {}
    for record in records:
        addon, quantity = by_addon.get(record.addon_id, (record.addon, ZERO))
        by_addon[record.addon_id] = (addon, quantity + record.quantity)
    lines = []
    for addon, quantity in by_addon.values():
        price = book.unit_price(addon)
        lines.append(
            LineDraft(
                kind=InvoiceLineKind.USAGE,
                description=f"{addon.name}: {quantity.normalize():f} {addon.unit_name}(s) used",
                quantity=quantity,
                unit_price=price,
                amount=round_money(price * quantity, book.currency),
                addon=addon,
            )
        )
    return lines, [r.pk for r in records]


def subscription_renew(*, subscription: Subscription, actor=None) -> Outcome | None:
    """Bill the next period if the current term has ended (a job; idempotent).

    A scheduled cancellation or a non-renewing subscription is cancelled instead (its last
    term's metered usage invoiced); a scheduled change is applied first. The invoice is charged
    after commit. Returns ``None`` when nothing was due.
    """
    organization = Organization.load()
    with transaction.atomic():
        outcome = _renew_locked(subscription, organization, actor)
    return None if outcome is None else _charge(outcome, actor)


def _renew_locked(subscription: Subscription, organization: Organization, actor) -> Outcome | None:
    today = billing_today(organization)
    sub = _lock(subscription)
    term = _term(sub)
    if sub.status not in ACTIVE_TERM_STATUSES or term is None or term.end > today:
        return None
    if renewal_ends_term(sub, today):
        return _cancel_at_term_end(sub, organization, actor)
    _apply_scheduled_change(sub, actor)
    sub.refresh_from_db()
    book = PriceBook(sub.customer, organization)
    config = configuration_of(sub)
    period = period_starting(sub.anchor_date, sub.plan.interval, sub.plan.interval_count, term.end)
    usage, usage_ids = _usage_lines(sub, book, _start_of(period.start, organization))
    charges = period_charges(config, book, period, extra_lines=usage)
    try:
        with transaction.atomic():
            invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
    except IntegrityError:
        return None  # this period is already billed: the constraint is the last word
    UsageRecord.objects.filter(pk__in=usage_ids).update(invoice=invoice)
    sub.current_term_start, sub.current_term_end = period.start, period.end
    sub.save(update_fields=["current_term_start", "current_term_end", "updated_at"])
    _cycle_billed(sub)
    events_record_many([renewed_event(sub, invoice, period, actor)])
    return Outcome(
        subscription=sub,
        summary=ChargesSummary(invoice=charges, next_billing_date=period.end),
        invoice=invoice,
    )


def renewed_event(sub: Subscription, invoice: Invoice, period: Period, actor):
    return event_build(
        kind="subscription.renewed",
        description=f"Renewed until {period.end:%b %-d, %Y}",
        actor=actor,
        customer_id=sub.customer_id,
        subscription=sub,
        invoice=invoice,
        after={"term_start": period.start.isoformat(), "term_end": period.end.isoformat()},
    )


def renewal_ends_term(sub: Subscription, today: datetime.date) -> bool:
    """Whether the term ending now is the last: cancelled, non-renewing or out of cycles."""
    return (
        sub.status == S.NON_RENEWING
        or (sub.cancel_at is not None and sub.cancel_at <= today)
        or sub.remaining_billing_cycles == 0
    )


def _start_of(day: datetime.date, organization: Organization) -> datetime.datetime:
    from billing.periods import start_of_day

    return start_of_day(day, organization.zone)


def _cancel_at_term_end(sub: Subscription, organization: Organization, actor) -> Outcome:
    """Cancel at the end of the term; metered usage of the last term is still billed."""
    before = _set_status(sub, S.CANCELLED)
    sub.cancelled_at = timezone.now()
    sub.cancel_reason = sub.cancel_reason or CancelReason.CUSTOMER
    sub.save(update_fields=["status", "cancelled_at", "cancel_reason", "updated_at"])
    ScheduledChange.objects.filter(subscription=sub).delete()
    _record(
        sub,
        "subscription.cancelled",
        "Cancelled at the end of the term",
        actor,
        before={"status": before},
        after={"status": sub.status},
    )
    outcome = Outcome(subscription=sub, summary=ChargesSummary())
    book = PriceBook(sub.customer, organization)
    usage, usage_ids = _usage_lines(sub, book, _start_of(sub.current_term_end, organization))
    if usage:
        period = _term(sub)
        outcome.invoice = _issue(sub, totals(usage, book), InvoiceKind.USAGE, period, actor)
        UsageRecord.objects.filter(pk__in=usage_ids).update(invoice=outcome.invoice)
    return outcome


def usage_record(
    *,
    subscription: Subscription,
    addon: Addon,
    quantity: Decimal,
    idempotency_key: str,
    used_at: datetime.datetime | None = None,
) -> UsageRecord:
    """Record metered usage once per key; billed with the subscription's next invoice."""
    if addon.kind != AddonKind.METERED:
        raise ValidationFailed(f"{addon.name} is not metered.", field="addon")
    if quantity <= 0:
        raise ValidationFailed("Usage must be more than zero.", field="quantity")
    if subscription.status not in (*ACTIVE_TERM_STATUSES, S.IN_TRIAL):
        raise InvalidTransition("Usage can only be recorded on an active subscription.")
    record, _created = UsageRecord.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={
            "subscription": subscription,
            "addon": addon,
            "quantity": quantity,
            "used_at": used_at or timezone.now(),
        },
    )
    if record.subscription_id != subscription.pk or record.quantity != quantity:
        raise ValidationFailed("That usage key was already used for other usage.")
    return record


# ----------------------------------------------------------------------------- pause / resume
def subscription_pause_schedule(
    *,
    subscription: Subscription,
    pause_on: datetime.date,
    resume_on: datetime.date | None = None,
    credit_unused: bool = False,
    actor=None,
) -> Subscription:
    """Set (or change) the pause window; a pause starting today pauses now, in one transaction
    (``credit_unused``: credit the rest of the term, per the merchant's preference)."""
    today = billing_today()
    if pause_on < today:
        raise ValidationFailed("The pause cannot start in the past.", field="pause_on")
    if resume_on is not None and resume_on <= pause_on:
        raise ValidationFailed("Resume after the pause starts.", field="resume_on")
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status == S.PAUSED:
            if sub.paused_at is None or (resume_on is not None and resume_on <= today):
                raise ValidationFailed("Choose a resume date after today.", field="resume_on")
            sub.resume_at = resume_on
            sub.save(update_fields=["resume_at", "updated_at"])
            _record(
                sub,
                "subscription.pause_changed",
                "Resume date changed",
                actor,
                after={"resume_at": resume_on.isoformat() if resume_on else None},
            )
            return sub
        if sub.status != S.LIVE:
            raise InvalidTransition("Only a live subscription can be paused.")
        sub.pause_at, sub.resume_at = pause_on, resume_on
        sub.save(update_fields=["pause_at", "resume_at", "updated_at"])
        _record(
            sub,
            "subscription.pause_scheduled",
            f"Pause scheduled from {pause_on:%b %-d, %Y}"
            + (f" to {resume_on:%b %-d, %Y}" if resume_on else " until resumed"),
            actor,
            after={
                "pause_at": pause_on.isoformat(),
                "resume_at": resume_on.isoformat() if resume_on else None,
            },
        )
        if pause_on == today:
            return subscription_pause(
                subscription=sub, actor=actor, credit_unused=credit_unused
            ).subscription
    return sub


def subscription_pause_unschedule(*, subscription: Subscription, actor=None) -> Subscription:
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.LIVE or sub.pause_at is None:
            raise InvalidTransition("There is no scheduled pause to remove.")
        sub.pause_at = sub.resume_at = None
        sub.save(update_fields=["pause_at", "resume_at", "updated_at"])
        _record(sub, "subscription.pause_unscheduled", "Scheduled pause removed", actor)
    return sub


def subscription_pause(
    *, subscription: Subscription, actor=None, credit_unused: bool = False, dry_run: bool = False
) -> Outcome:
    """Pause now: no invoices while paused; a pending end-of-term change is discarded."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.LIVE:
            raise InvalidTransition("Only a live subscription can be paused.")
        book = _book(sub.customer)
        term = _term(sub)
        credit = ZERO
        if credit_unused and term is not None:
            credit = _with_tax(
                prorate(
                    recurring_amount(configuration_of(sub), book),
                    days_left=term.days_left(today),
                    days_in_term=term.days,
                    currency=book.currency,
                ),
                book,
            )
        summary = ChargesSummary(
            credit=credit, notes=("No invoices are issued while the subscription is paused.",)
        )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        before = _set_status(sub, S.PAUSED)
        sub.paused_at = today
        # Pausing now replaces any later scheduled start; the window begins today.
        sub.pause_at = today if sub.pause_at is None or sub.pause_at > today else sub.pause_at
        sub.save(update_fields=["status", "paused_at", "pause_at", "updated_at"])
        ScheduledChange.objects.filter(subscription=sub).delete()
        _record(
            sub,
            "subscription.paused",
            "Subscription paused",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
        outcome = Outcome(subscription=sub, summary=summary)
        if credit > 0:
            outcome.credit_note = _credit_note(
                sub, credit, CreditNoteReason.PAUSE, "Unused time while paused", actor
            )
    return outcome


def _same_term_summary(
    sub: Subscription, config: Configuration, book: PriceBook, term: Period, note: str
) -> ChargesSummary:
    """Back within the paid term (resume or in-term reactivation): nothing billed now."""
    return ChargesSummary(
        next_billing_date=term.end,
        next_amount=_next_amount(
            config,
            book,
            next_period(sub.anchor_date, sub.plan.interval, sub.plan.interval_count, term),
        ),
        notes=(note,),
    )


def _restart_term(
    sub: Subscription,
    config: Configuration,
    book: PriceBook,
    today: datetime.date,
    note: Callable[[Period], str],
):
    """(period, charges, summary) of a new term from today, for a resume or reactivation after
    the billing date. Refused when that term is already invoiced (cancelled on the day it was
    billed): a term is never billed twice."""
    period, charges = _start_term(sub, today, book, setup_fee=False)
    if Invoice.objects.filter(
        subscription=sub, period_start=period.start, kind=InvoiceKind.RECURRING
    ).exists():
        raise InvalidTransition(
            "This subscription's term starting today is already invoiced; contact us to restore it."
        )
    return period, charges, _new_term_summary(sub, config, book, period, charges, note(period))


def _new_term_summary(
    sub: Subscription,
    config: Configuration,
    book: PriceBook,
    period: Period,
    charges,
    note: str,
) -> ChargesSummary:
    """A term starting now and invoiced now (trial conversion, resume, reactivation)."""
    return ChargesSummary(
        invoice=charges,
        credit_applied=_credit_applied(sub.customer, charges.total),
        next_billing_date=period.end,
        next_amount=_next_amount(
            config,
            book,
            next_period(period.start, sub.plan.interval, sub.plan.interval_count, period),
            billed_now=True,
        ),
        notes=(note,),
    )


def subscription_resume(
    *, subscription: Subscription, actor=None, dry_run: bool = False
) -> Outcome:
    """Resume: before the billing date nothing changes; after it, a new term from today (rule 9)."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status != S.PAUSED:
            raise InvalidTransition("Only a paused subscription can be resumed.")
        book = _book(sub.customer)
        config = configuration_of(sub)
        term = _term(sub)
        if term is not None and today < term.end:
            summary = _same_term_summary(
                sub, config, book, term, f"Your billing date stays {term.end:%b %-d, %Y}."
            )
            period, charges = None, None
        else:
            period, charges, summary = _restart_term(
                sub,
                config,
                book,
                today,
                lambda _period: (
                    f"A new term starts today; your billing date becomes the {today.day}."
                ),
            )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        before = _set_status(sub, S.LIVE)
        sub.paused_at = sub.pause_at = sub.resume_at = None
        fields = ["status", "paused_at", "pause_at", "resume_at", "updated_at"]
        if period is not None:
            fields += _begin_term(sub, period)
        sub.save(update_fields=fields)
        _record(
            sub,
            "subscription.resumed",
            "Subscription resumed",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
        outcome = Outcome(subscription=sub, summary=summary)
        if charges is not None:
            outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
            _cycle_billed(sub)
    return _charge(outcome, actor)


# ----------------------------------------------------------------------------- cancel
def subscription_cancel(
    *,
    subscription: Subscription,
    timing: str = ChangeTiming.TERM_END,
    reason: str = CancelReason.CUSTOMER,
    reason_text: str = "",
    credit_unused: bool = False,
    void_unpaid: bool = False,
    actor=None,
    dry_run: bool = False,
) -> Outcome:
    """Cancel now (optional prorated credit; unpaid invoices voided or left open) or at term end."""
    from billing.services.invoices import invoice_void

    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        book = _book(sub.customer)
        term = _term(sub)
        unpaid = list(
            Invoice.objects.filter(subscription=sub, status=InvoiceStatus.OPEN).order_by("pk")
        )
        if timing == ChangeTiming.TERM_END:
            if sub.status == S.IN_TRIAL:
                end = sub.trial_end
            elif sub.status == S.LIVE and term is not None:
                end = term.end
            else:
                raise InvalidTransition(
                    "This subscription cannot be cancelled at the end of its term."
                )
            summary = ChargesSummary(
                notes=(f"The subscription stays active until {end:%b %-d, %Y} and is not renewed.",)
            )
            if dry_run:
                return Outcome(subscription=sub, summary=summary, dry_run=True)
            before = sub.status
            if sub.status == S.LIVE:
                _set_status(sub, S.NON_RENEWING)
            sub.cancel_at = end
            sub.cancel_reason, sub.cancel_reason_text = reason, reason_text[:2000]
            # A scheduled pause never applies to a subscription that is ending; an undo of the
            # cancellation must not bring it back either.
            sub.pause_at = sub.resume_at = None
            sub.save(
                update_fields=[
                    "status",
                    "cancel_at",
                    "cancel_reason",
                    "cancel_reason_text",
                    "pause_at",
                    "resume_at",
                    "updated_at",
                ]
            )
            _record(
                sub,
                "subscription.cancel_scheduled",
                f"Cancellation scheduled for {end:%b %-d, %Y}",
                actor,
                before={"status": before},
                after={"status": sub.status, "cancel_at": end.isoformat()},
            )
            return Outcome(subscription=sub, summary=summary)
        if timing != ChangeTiming.NOW:
            raise ValidationFailed("Choose when to cancel.", field="timing")
        # Before the dry run returns: a preview must refuse what the real run refuses (rule 5).
        assert_transition(
            "subscription", sub.status, S.CANCELLED, "This subscription is already cancelled."
        )
        credit = ZERO
        # Voiding the term's own invoice already takes back its whole charge (and returns what
        # was paid on it as credit); crediting the unused days on top would pay the customer
        # for time never paid for.
        term_invoice_voided = (
            void_unpaid
            and term is not None
            and any(term.start <= (i.period_start or term.end) < term.end for i in unpaid)
        )
        if (
            credit_unused
            and term is not None
            and sub.status in (S.LIVE, S.NON_RENEWING)
            and not term_invoice_voided
        ):
            credit = _with_tax(
                prorate(
                    recurring_amount(configuration_of(sub), book),
                    days_left=term.days_left(today),
                    days_in_term=term.days,
                    currency=book.currency,
                ),
                book,
            )
        notes = []
        if unpaid:
            notes.append(
                f"{len(unpaid)} unpaid invoice(s) will be voided."
                if void_unpaid
                else f"{len(unpaid)} unpaid invoice(s) remain due."
            )
        summary = ChargesSummary(credit=credit, notes=tuple(notes))
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        before = _set_status(sub, S.CANCELLED, message="This subscription is already cancelled.")
        sub.cancelled_at = timezone.now()
        sub.cancel_at = None
        sub.pause_at = sub.resume_at = None
        sub.cancel_reason, sub.cancel_reason_text = reason, reason_text[:2000]
        sub.save(
            update_fields=[
                "status",
                "cancelled_at",
                "cancel_at",
                "pause_at",
                "resume_at",
                "cancel_reason",
                "cancel_reason_text",
                "updated_at",
            ]
        )
        ScheduledChange.objects.filter(subscription=sub).delete()
        _record(
            sub,
            "subscription.cancelled",
            "Subscription cancelled",
            actor,
            before={"status": before},
            after={"status": sub.status, "reason": reason},
        )
        outcome = Outcome(subscription=sub, summary=summary)
        if void_unpaid:
            for invoice in unpaid:
                invoice_void(invoice=invoice, actor=actor, reason="subscription cancelled")
        if credit > 0:
            outcome.credit_note = _credit_note(
                sub, credit, CreditNoteReason.CANCELLATION, "Unused time after cancellation", actor
            )
    return outcome


def merchant_cancelled(sub: Subscription) -> bool:
    """Cancelled (or to be) by the merchant: theirs to undo, not the customer's."""
    return sub.cancel_reason == CancelReason.MERCHANT


def _refuse_customer_undoing_merchant(sub: Subscription, actor) -> None:
    if merchant_cancelled(sub) and actor_kind_for(actor) == ActorKind.CUSTOMER:
        raise NotAllowed("We cancelled this subscription: please contact us to keep it.")


def subscription_cancel_undo(*, subscription: Subscription, actor=None) -> Subscription:
    """Remove a scheduled cancellation (non-renewing → live, or a trial's); a customer cannot
    remove one the merchant made."""
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.cancel_at is None or sub.status not in (S.NON_RENEWING, S.IN_TRIAL):
            raise InvalidTransition("There is no scheduled cancellation to undo.")
        _refuse_customer_undoing_merchant(sub, actor)
        before = sub.status
        if sub.status == S.NON_RENEWING:
            _set_status(sub, S.LIVE)
        sub.cancel_at = None
        sub.cancel_reason = sub.cancel_reason_text = ""
        sub.save(
            update_fields=[
                "status",
                "cancel_at",
                "cancel_reason",
                "cancel_reason_text",
                "updated_at",
            ]
        )
        _record(
            sub,
            "subscription.cancel_unscheduled",
            "Scheduled cancellation removed",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
    return sub


# ----------------------------------------------------------------------------- reactivate
def reactivation_is_in_term(sub: Subscription, today: datetime.date) -> bool:
    term = _term(sub)
    return (
        sub.status == S.CANCELLED
        and sub.cancel_reason == CancelReason.DUNNING
        and term is not None
        and today < term.end
    )


def subscription_reactivate(
    *, subscription: Subscription, require_payment: bool = True, actor=None, dry_run: bool = False
) -> Outcome:
    """Back to live. In-term after dunning: same dates, no new invoice (the open one must be paid
    first when ``require_payment``). Otherwise: a new term from today with a new invoice."""
    today = billing_today()
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status not in (S.CANCELLED, S.EXPIRED):
            raise InvalidTransition("Only a cancelled or expired subscription can be reactivated.")
        _refuse_customer_undoing_merchant(sub, actor)
        book = _book(sub.customer)
        config = configuration_of(sub)
        if not sub.plan.active:
            raise ValidationFailed(
                f"The {sub.plan.name} plan is no longer available.", field="plan"
            )
        if reactivation_is_in_term(sub, today):
            term = _term(sub)
            if require_payment:
                unpaid = [
                    i
                    for i in Invoice.objects.filter(subscription=sub, status=InvoiceStatus.OPEN)
                    if invoice_balance(i)[2] > 0
                ]
                if unpaid:
                    raise NotAllowed("Pay the open invoice first, then reactivate.")
            summary = _same_term_summary(
                sub,
                config,
                book,
                term,
                f"Nothing is charged now; your billing date stays {term.end:%b %-d, %Y}.",
            )
            period = charges = None
        else:
            period, charges, summary = _restart_term(
                sub,
                config,
                book,
                today,
                lambda period: f"A new term starts today and renews on {period.end:%b %-d, %Y}.",
            )
        if dry_run:
            return Outcome(subscription=sub, summary=summary, dry_run=True)
        before = _set_status(sub, S.LIVE)
        sub.cancelled_at = None
        sub.cancel_at = None
        sub.cancel_reason = sub.cancel_reason_text = ""
        fields = [
            "status",
            "cancelled_at",
            "cancel_at",
            "cancel_reason",
            "cancel_reason_text",
            "updated_at",
        ]
        if period is not None:
            fields += _begin_term(sub, period)
        sub.save(update_fields=fields)
        _record(
            sub,
            "subscription.reactivated",
            "Subscription reactivated",
            actor,
            before={"status": before},
            after={"status": sub.status},
        )
        outcome = Outcome(subscription=sub, summary=summary)
        if charges is not None:
            outcome.invoice = _issue(sub, charges, InvoiceKind.RECURRING, period, actor)
            _cycle_billed(sub)
    return _charge(outcome, actor)


# ----------------------------------------------------------------------------- settings
def subscription_set_auto_charge(
    *, subscription: Subscription, enabled: bool, method: PaymentMethod | None = None, actor=None
) -> Subscription:
    """Turn automatic charging on (needs a saved card) or off (invoices are paid by hand)."""
    with transaction.atomic():
        sub = _lock(subscription)
        if enabled:
            method = (
                method
                or sub.payment_method
                or sub.customer.payment_methods.filter(is_default=True).first()
            )
            if method is None:
                raise ValidationFailed(
                    "Add a card before turning on automatic payments.", field="payment_method"
                )
            if method.customer_id != sub.customer_id:
                raise NotAllowed("That card belongs to another customer.")
            sub.payment_method = method
        before = sub.auto_charge
        sub.auto_charge = enabled
        sub.save(update_fields=["auto_charge", "payment_method", "updated_at"])
        _record(
            sub,
            "subscription.auto_charge",
            f"Automatic payments turned {'on' if enabled else 'off'}",
            actor,
            before={"auto_charge": before},
            after={"auto_charge": enabled},
        )
    return sub


def subscription_after_invoice_paid(*, invoice: Invoice, actor=None) -> None:
    """Paying by any route stops dunning: a past-due or unpaid subscription is live again once
    none of its invoices is left unpaid."""
    subscriptions_after_invoices_paid(invoices=[invoice], actor=actor)


def subscriptions_after_invoices_paid(*, invoices: list[Invoice], actor=None) -> None:
    """``subscription_after_invoice_paid`` for a batch of paid invoices, in a few queries."""
    paid = {i.subscription_id: i for i in invoices if i.subscription_id}
    subs = list(
        Subscription.objects.select_for_update(no_key=True)
        .filter(pk__in=paid, status__in=(S.PAST_DUE, S.UNPAID))
        .order_by("pk")
    )
    if not subs:
        return
    still_owing = set(
        invoices_with_amounts(
            Invoice.objects.filter(subscription__in=subs, status=InvoiceStatus.OPEN).exclude(
                pk__in=[i.pk for i in invoices]
            )
        )
        .filter(balance_due__gt=0)
        .values_list("subscription_id", flat=True)
    )
    recovered, events = [], []
    now = timezone.now()
    for sub in subs:
        if sub.pk in still_owing:
            continue
        before = _set_status(sub, S.LIVE)
        sub.updated_at = now
        recovered.append(sub)
        invoice = paid[sub.pk]
        events.append(
            event_build(
                kind="subscription.recovered",
                description=f"Invoice {invoice.number} paid; subscription live again",
                actor=actor,
                customer_id=sub.customer_id,
                subscription=sub,
                invoice=invoice,
                before={"status": before},
                after={"status": sub.status},
            )
        )
    bulk_update_rows(recovered, ["status", "updated_at"])
    events_record_many(events)
