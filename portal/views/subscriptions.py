"""Subscriptions in the portal: the list, one subscription with its timeline, and what a
customer's admin may do with it — convert, extend or cancel a trial, cancel (with a reason and
at most one retention offer), pause and resume, automatic payments.

Availability has three gates, in this order: the merchant's preference (off: the action is
hidden and its URL is a 404, like a missing page), the contact's role (admin, else 403), the
subscription's state (a message saying why not). The services have the last word on the rules.

Actions that move money or dates show their figures first, computed by the service itself in
dry-run mode (DESIGN rule 5). The confirmation carries a digest of those figures; confirming
computes them again and runs the service only when they are still the ones shown. Each
confirmation also carries a one-time token, so a double submit changes the subscription once.
None of these views is atomic: card charges happen outside database transactions (rule 7).
"""

import datetime
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import astuple, dataclass, is_dataclass
from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import messages
from django.core import signing
from django.core.cache import cache
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.decorators import recent_login_required, recently_authenticated
from billing import selectors
from billing.clock import as_of, billing_today
from billing.enums import (
    CancelReason,
    ChangeTiming,
    CreditNoteReason,
    InvoiceStatus,
    PaymentStatus,
    PortalRole,
    SubscriptionStatus,
)
from billing.errors import BillingError
from billing.models import Customer, Event, Invoice, Organization, PaymentMethod, Subscription
from billing.money import ZERO
from billing.periods import start_of_day
from billing.pricing import PriceBook, configuration_of
from billing.services.payment_methods import CHARGEABLE_STATUSES
from billing.services.subscriptions import (
    ChangeRequest,
    ChargesSummary,
    merchant_cancelled,
    reactivation_is_in_term,
    subscription_cancel,
    subscription_cancel_undo,
    subscription_change,
    subscription_convert_trial,
    subscription_extend_trial,
    subscription_pause,
    subscription_pause_schedule,
    subscription_pause_unschedule,
    subscription_resume,
    subscription_set_auto_charge,
)
from portal.access import portal_view
from portal.models import RetentionOffer
from portal.subscription_forms import (
    AutoChargeForm,
    CancelForm,
    ConfirmForm,
    OnceForm,
    PauseForm,
    SubscriptionFilterForm,
)

S = SubscriptionStatus
ADMIN = PortalRole.ADMIN
PAGE_SIZE = 25
CURSOR_SALT = "portal.subscriptions.cursor"
TIMELINE_SIZE = 100
SHOWN_INVOICES = 10
ONCE_SECONDS = 24 * 60 * 60
ONE_DAY = datetime.timedelta(days=1)
FIGURES_CHANGED = "The figures changed, please review them and confirm again."
ALREADY_DONE = "That request was already carried out."
OUT_OF_DATE = "The page was out of date. Please try again."
# Service field names that a form calls differently.
FIELD_ALIASES = {"payment_method": "card"}
# Statuses a customer can still cancel from (the services decide the details).
CANCELLABLE = (S.FUTURE, S.IN_TRIAL, S.LIVE, S.NON_RENEWING, S.PAUSED, S.PAST_DUE, S.UNPAID)


# ----------------------------------------------------------------------------- list
@require_safe
@portal_view(preference="show_subscriptions")
def subscription_list(request):
    portal = request.portal
    form = SubscriptionFilterForm(request.GET, **_filter_options(portal))
    rows, has_newer, has_older = selectors.subscription_keyset_page(
        selectors.subscriptions_of(portal.customer_ids, **form.filters()),
        size=PAGE_SIZE,
        older_than=_read_cursor(request.GET.get("older")),
        newer_than=_read_cursor(request.GET.get("newer")),
    )
    context = {"form": form, "subscriptions": rows, "today": billing_today()}
    context.update(_pagination(request, rows, has_newer=has_newer, has_older=has_older))
    template = "portal/subscriptions/list.html"
    partial = bool(request.htmx) and not request.htmx.history_restore_request
    response = render(request, f"{template}#table" if partial else template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _filter_options(portal) -> dict:
    """The plans of the visible subscriptions, and the branches (parents only): two queries."""
    plans = dict(
        portal.scope(Subscription.objects)
        .order_by("plan__name", "plan__code")
        .values_list("plan__code", "plan__name")
        .distinct()
    )
    customers = {}
    if portal.is_parent:
        names = dict(portal.visible)
        rows = Customer.objects.filter(pk__in=portal.customer_ids).values_list("pk", "public_id")
        customers = {
            str(public_id): (pk, names[pk])
            for pk, public_id in sorted(
                rows, key=lambda row: (row[0] != portal.customer.pk, names[row[0]])
            )
        }
    return {"plans": plans, "customers": customers}


def _cursor(subscription: Subscription) -> str:
    return signing.dumps([subscription.start_date.isoformat(), subscription.pk], salt=CURSOR_SALT)


def _read_cursor(token: str | None) -> tuple[datetime.date, int] | None:
    """The (start date, id) in a cursor, or None for a missing or tampered one (first page)."""
    if not token:
        return None
    try:
        day, pk = signing.loads(token, salt=CURSOR_SALT)
        return datetime.date.fromisoformat(day), int(pk)
    except (signing.BadSignature, ValueError, TypeError):
        return None


def _page_url(request, **cursor) -> str:
    query = request.GET.copy()
    for key in ("older", "newer"):
        query.pop(key, None)
    query.update(cursor)
    return f"{request.path}?{query.urlencode()}"


def _pagination(request, rows, *, has_newer: bool, has_older: bool) -> dict:
    return {
        "paged": bool(request.GET.get("older") or request.GET.get("newer")),
        "first_url": _page_url(request),
        "newer_url": _page_url(request, newer=_cursor(rows[0])) if rows and has_newer else "",
        "older_url": _page_url(request, older=_cursor(rows[-1])) if rows and has_older else "",
    }


# ----------------------------------------------------------------------------- detail
@require_safe
@portal_view(preference="show_subscriptions")
def subscription_detail(request, public_id):
    portal = request.portal
    sub = portal.get(
        Subscription.objects.select_related(
            "plan",
            "customer__group__price_list",
            "payment_method",
            "scheduled_change__plan",
            "scheduled_change__coupon",
        ),
        public_id,
    )
    organization, today = Organization.load(), billing_today()
    timeline, more_events = _timeline(
        sub, organization, everything=request.GET.get("timeline") == "all"
    )
    invoices, more_invoices = _recent_invoices(portal, sub)
    context = {
        "sub": sub,
        "today": today,
        "overview": selectors.subscription_overview(sub, organization=organization, today=today),
        "term_last_day": sub.current_term_end - ONE_DAY if sub.current_term_end else None,
        "timeline": timeline,
        "more_events": more_events,
        "invoices": invoices,
        "more_invoices": more_invoices,
        "can": available_actions(portal, sub),
        "dunning_in_term": reactivation_is_in_term(sub, today),
        "once": _new_token(),
    }
    return render(request, "portal/subscriptions/detail.html", context)


def _timeline(sub, organization, *, everything: bool) -> tuple[list[Event], bool]:
    """The subscription's events, newest first, each with who did it (one query), and
    whether older ones were left out."""
    events = Event.objects.filter(subscription=sub).select_related("actor_user__contact")
    events = events.order_by("-created_at", "-id")
    rows = list(events if everything else events[: TIMELINE_SIZE + 1])
    for event in rows:
        event.actor_label = _actor_label(event, organization)
    if everything:
        return rows, False
    return rows[:TIMELINE_SIZE], len(rows) > TIMELINE_SIZE


def _actor_label(event: Event, organization) -> str:
    if event.actor_kind == "system":
        return "Automatic (system)"
    if event.actor_kind == "staff":
        return f"{organization.name} staff"
    user = event.actor_user
    if user is None:
        return "A customer contact"
    contact = getattr(user, "contact", None)
    return (contact.full_name if contact else "") or user.get_full_name() or user.email


def _recent_invoices(portal, sub) -> tuple[list[Invoice] | None, bool]:
    """The newest invoices (None when the merchant hides invoices), and whether there are more."""
    if not portal.preferences.show_invoices:
        return None, False
    invoices = selectors.invoices_with_amounts(
        Invoice.objects.filter(subscription=sub).exclude(status=InvoiceStatus.DRAFT)
    )
    rows = list(invoices.order_by("-issue_date", "-id")[: SHOWN_INVOICES + 1])
    return rows[:SHOWN_INVOICES], len(rows) > SHOWN_INVOICES


# ----------------------------------------------------------------------------- availability
def cancel_timings(preferences, sub: Subscription) -> dict[str, str]:
    """{timing: label} of the ways this subscription may be cancelled; empty: none."""
    if sub.status == S.IN_TRIAL:
        if not preferences.allow_trial_cancel:
            return {}
        timings = {ChangeTiming.NOW: "Now: the trial ends today"}
        if sub.cancel_at is None and sub.trial_end:
            timings[ChangeTiming.TERM_END] = f"At the end of the trial ({sub.trial_end:%b %-d, %Y})"
        return timings
    timings = {}
    if sub.status in CANCELLABLE and preferences.allow_cancel_now:
        timings[ChangeTiming.NOW] = "Now"
    if sub.status == S.LIVE and sub.current_term_end and preferences.allow_cancel_at_term_end:
        last_day = sub.current_term_end - datetime.timedelta(days=1)
        timings[ChangeTiming.TERM_END] = (
            f"At the end of the term: the service runs until {last_day:%b %-d, %Y}"
        )
    return timings


def available_actions(portal, sub: Subscription) -> dict[str, bool]:
    """What the detail page offers this contact: preference on, role admin, state fitting."""
    prefs = portal.preferences
    if not portal.can_manage:
        return {}
    expired_trial = sub.status == S.EXPIRED and sub.cancel_reason == CancelReason.TRIAL_ENDED
    return {
        "convert": prefs.allow_trial_convert and sub.status == S.IN_TRIAL,
        "extend": prefs.allow_trial_extend
        and expired_trial
        and sub.trial_extensions_used < prefs.trial_extension_limit,
        "cancel": bool(cancel_timings(prefs, sub)),
        "undo_cancel": sub.cancel_at is not None
        and sub.status in (S.NON_RENEWING, S.IN_TRIAL)
        and not merchant_cancelled(sub),
        "pause": prefs.allow_pause and sub.status == S.LIVE,
        "change_resume": prefs.allow_pause and sub.status == S.PAUSED,
        "remove_pause": sub.status == S.LIVE and sub.pause_at is not None,
        "resume": prefs.allow_pause and sub.status == S.PAUSED,
        "auto_charge": prefs.allow_auto_charge_toggle and sub.status in CHARGEABLE_STATUSES,
        "change": sub.status in (S.LIVE, S.NON_RENEWING, S.IN_TRIAL),
        "reactivate": prefs.allow_reactivation
        and sub.status in (S.CANCELLED, S.EXPIRED)
        and not merchant_cancelled(sub),
    }


def _subscription(request, public_id) -> Subscription:
    return request.portal.get(
        Subscription.objects.select_related("plan", "customer", "payment_method"), public_id
    )


def _to_detail(sub):
    return redirect("portal:subscription_detail", sub.public_id)


# ----------------------------------------------------------------------------- confirming
@dataclass
class Step:
    """One action: its choices, its dry run (the figures shown) and its real run."""

    action: str
    options: dict  # the choices, as the digest covers them
    dry_run: Callable[[], object]  # a ChargesSummary or another dataclass of figures
    perform: Callable[[], tuple[int, str]]  # (message level, message)
    hidden: dict | None = None  # the form fields the confirmation posts back (default: options)


def _figures(preview) -> tuple:
    """What the customer is shown, as plain values (model instances reduced to their pk)."""
    if isinstance(preview, ChargesSummary):
        invoice = preview.invoice
        lines = (
            tuple(
                (line.kind, line.description, line.quantity, line.unit_price, line.amount)
                for line in invoice.lines
            )
            if invoice
            else ()
        )
        totals = (
            (
                invoice.subtotal,
                invoice.discount_total,
                invoice.tax_rate,
                invoice.tax_total,
                invoice.total,
            )
            if invoice
            else ()
        )
        return (
            lines,
            totals,
            preview.due_now,
            preview.credit,
            preview.credit_applied,
            preview.next_billing_date,
            preview.next_amount,
            preview.notes,
        )
    if is_dataclass(preview):
        return astuple(preview)
    return (preview,)


def figures_digest(sub: Subscription, step: Step, preview) -> str:
    shown = (str(sub.public_id), step.action, sorted(step.options.items()), _figures(preview))
    return hashlib.sha256(repr(shown).encode()).hexdigest()


def _new_token() -> str:
    return secrets.token_hex(16)


def _once_key(request, token: str) -> str:
    return f"portal:once:{request.user.pk}:{token}"


def _used(request, token: str) -> bool:
    return cache.get(_once_key(request, token)) is not None


def _claim(request, token: str) -> bool:
    """True the first time a token is used (atomic in the cache), False on a repeat."""
    return cache.add(_once_key(request, token), 1, ONCE_SECONDS)


def _confirm_flow(request, sub, step: Step, *, confirming: bool, form=None, defer=False):
    """The figures and, when confirming, the real run if they are unchanged. With ``defer``
    the figures are left for a second request (see ``_summary_page``).

    Returns (response, context): a redirect when the action ran (or had already run), else
    the context of the page to show, with ``error`` set when something was refused.
    """
    hidden = step.options if step.hidden is None else step.hidden
    context = {"hidden": hidden, "once": _new_token(), "deferred": defer}
    if defer:
        return None, context
    confirm = ConfirmForm(request.POST) if confirming else None
    if confirm is not None and confirm.is_valid() and _used(request, confirm.cleaned_data["once"]):
        # A repeat of a confirmation that already ran: its result, not a refusal of the
        # now-impossible action (converting a trial that is live by now).
        messages.info(request, ALREADY_DONE)
        return _to_detail(sub), context
    try:
        preview = step.dry_run()
    except BillingError as error:
        _refused(context, error, form)
        return None, context
    digest = figures_digest(sub, step, preview)
    context.update(preview=preview, figures=digest)
    if confirm is None:
        return None, context
    if not confirm.is_valid() or confirm.cleaned_data["figures"] != digest:
        context["error"] = FIGURES_CHANGED
        return None, context
    token = confirm.cleaned_data["once"]
    if not _claim(request, token):
        messages.info(request, ALREADY_DONE)
        return _to_detail(sub), context
    try:
        level, message = step.perform()
    except BillingError as error:
        cache.delete(_once_key(request, token))  # nothing happened: the same form may retry
        _refused(context, error, form)
        context.pop("figures", None)
        return None, context
    messages.add_message(request, level, message)
    return _to_detail(sub), context


def _refused(context: dict, error: BillingError, form) -> None:
    """A refusal next to the field it concerns, else at the top of the page."""
    field = FIELD_ALIASES.get(error.field or "", error.field)
    if form is not None and field in form.fields:
        form.add_error(field, error.message)
        context["error"] = "Please correct the marked field."
    else:
        context["error"] = error.message


def _run_once(request, sub, action: Callable[[], str], *, form=None):
    """A POST without figures (detail page buttons, automatic payments): run it once, then
    back to the subscription. With ``form``, a refusal returns None and marks the form."""
    token_form = OnceForm(request.POST)
    if not token_form.is_valid():
        if form is not None:
            form.add_error(None, OUT_OF_DATE)
            return None
        messages.error(request, OUT_OF_DATE)
        return _to_detail(sub)
    token = token_form.cleaned_data["once"]
    if not _claim(request, token):
        messages.info(request, ALREADY_DONE)
        return _to_detail(sub)
    try:
        text = action()
    except BillingError as error:
        cache.delete(_once_key(request, token))
        if form is None:
            messages.error(request, error.message)
            return _to_detail(sub)
        field = FIELD_ALIASES.get(error.field or "", error.field)
        form.add_error(field if field in form.fields else None, error.message)
        return None
    messages.success(request, text)
    return _to_detail(sub)


def _payment_message(outcome, done: str) -> tuple[int, str]:
    """The action's success, and what happened to the invoice it issued."""
    invoice, payment = outcome.invoice, outcome.payment
    if invoice is None:
        return messages.SUCCESS, done
    if payment is not None and payment.status == PaymentStatus.FAILED:
        reason = f" ({payment.failure_message})" if payment.failure_message else ""
        return (
            messages.WARNING,
            f"{done} But the card payment for invoice {invoice.number} failed{reason}: "
            "please pay it from the invoice page or update your card.",
        )
    invoice.refresh_from_db(fields=["status"])
    if invoice.status == InvoiceStatus.PAID:
        return messages.SUCCESS, f"{done} Invoice {invoice.number} is paid."
    return messages.SUCCESS, f"{done} Invoice {invoice.number} is open for payment."


# ----------------------------------------------------------------------------- trials
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="allow_trial_convert")
def subscription_convert(request, public_id):
    sub = _subscription(request, public_id)

    def perform():
        outcome = subscription_convert_trial(subscription=sub, actor=request.user)
        return _payment_message(outcome, "Your subscription is now live.")

    step = Step(
        "convert",
        {},
        dry_run=lambda: subscription_convert_trial(subscription=sub, dry_run=True).summary,
        perform=perform,
    )
    context = {"add_card_url": _add_card_url(request, sub)}
    return _summary_page(request, sub, step, "portal/subscriptions/convert.html", context)


def _add_card_url(request, sub) -> str:
    """Where to add a card and come back, when this contact may add one for this customer."""
    portal = request.portal
    if sub.customer_id != portal.customer.pk or not (
        portal.can_pay and portal.preferences.allow_payment_method_changes
    ):
        return ""
    try:
        url = reverse("portal:payment_method_add")
    except NoReverseMatch:
        return ""
    return f"{url}?{urlencode({'next': request.path})}"


@require_POST
@portal_view(role=ADMIN, preference="allow_trial_extend")
def subscription_extend(request, public_id):
    sub = _subscription(request, public_id)
    limit = request.portal.preferences.trial_extension_limit

    def extend():
        extended = subscription_extend_trial(subscription=sub, limit=limit, actor=request.user)
        return f"Your trial is extended until {extended.trial_end:%b %-d, %Y}."

    return _run_once(request, sub, extend)


# ----------------------------------------------------------------------------- cancel
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="show_subscriptions")
def subscription_cancel_view(request, public_id):
    sub = _subscription(request, public_id)
    timings = cancel_timings(request.portal.preferences, sub)
    if not timings:
        if sub.status in CANCELLABLE:
            raise Http404  # the merchant does not let customers cancel this one
        messages.error(request, "This subscription has already ended.")
        return _to_detail(sub)
    if request.htmx and not recently_authenticated(request):
        # A live preview after the re-authentication lapsed: the whole page goes to it (htmx
        # would otherwise put the password page inside the preview).
        query = urlencode({"next": request.path})
        return HttpResponse(
            headers={"HX-Redirect": f"{reverse('accounts_reauthenticate')}?{query}"}
        )
    return _cancel_page(request, sub, timings)


@recent_login_required
def _cancel_page(request, sub, timings):
    """One form (when, why) and one confirmation, behind a fresh re-authentication."""
    form = CancelForm(request.POST if request.method == "POST" else None, timings=timings)
    context = {"sub": sub, "form": form, "offer": _retention_offer(request.portal, sub)}
    if request.method == "POST" and form.is_valid():
        step = _cancel_step(request, sub, form.options())
        confirming = "confirm" in request.POST
        done, flow = _confirm_flow(request, sub, step, confirming=confirming, form=form)
        if done:
            return done
        context.update(flow, unpaid=_unpaid_invoices(sub))
    return _page(request, "portal/subscriptions/cancel.html", context)


def _cancel_step(request, sub, options: dict) -> Step:
    prefs = request.portal.preferences
    arguments = {
        "subscription": sub,
        "timing": options["timing"],
        "reason": CancelReason.CUSTOMER,
        "reason_text": CancelForm.reason_for_record(options),
        "credit_unused": options["timing"] == ChangeTiming.NOW and prefs.credit_on_cancel_now,
        "void_unpaid": prefs.void_unpaid_on_cancel,
    }

    def perform():
        outcome = subscription_cancel(**arguments, actor=request.user)
        cancelled = outcome.subscription
        if cancelled.status == S.CANCELLED:
            text = "Your subscription is cancelled."
        else:
            text = (
                f"Your subscription ends on {cancelled.cancel_at:%b %-d, %Y}. "
                "You can undo this until then."
            )
        if outcome.credit_note is not None:
            text += f" Credit note {outcome.credit_note.number} is issued for the unused time."
        return messages.SUCCESS, text + " We have sent you a confirmation by email."

    return Step(
        "cancel",
        options,
        dry_run=lambda: subscription_cancel(**arguments, dry_run=True).summary,
        perform=perform,
    )


def _unpaid_invoices(sub) -> list[Invoice]:
    return list(
        selectors.invoices_with_amounts(
            Invoice.objects.filter(subscription=sub, status=InvoiceStatus.OPEN)
        ).order_by("issue_date", "id")
    )


@dataclass(frozen=True)
class Offer:
    kind: str  # RetentionOffer.COUPON or RetentionOffer.PAUSE
    message: str
    coupon: object = None


def _retention_offer(portal, sub, *, offered_page: bool = True) -> Offer | None:
    """The merchant's one retention offer, when it can apply to this subscription. The cancel
    page leaves out a coupon the subscription already has; the stay page lets the service say
    so (one query less where the dry run already costs many)."""
    prefs = portal.preferences
    message = prefs.retention_message
    offer = prefs.retention_offer
    if (
        offer == RetentionOffer.COUPON
        and prefs.retention_coupon_id
        and sub.status in (S.LIVE, S.IN_TRIAL)
        and not (offered_page and sub.coupons.filter(coupon_id=prefs.retention_coupon_id).exists())
    ):
        return Offer(RetentionOffer.COUPON, message, prefs.retention_coupon)
    if offer == RetentionOffer.PAUSE and prefs.allow_pause and sub.status == S.LIVE:
        return Offer(RetentionOffer.PAUSE, message)
    return None


@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="show_subscriptions")
def subscription_keep(request, public_id):
    """Accept the retention coupon: applied now (prorated), and the subscription stays."""
    sub = _subscription(request, public_id)
    offer = _retention_offer(request.portal, sub, offered_page=False)
    timings = cancel_timings(request.portal.preferences, sub)
    if offer is None or offer.kind != RetentionOffer.COUPON or not timings:
        raise Http404
    change = {
        "subscription": sub,
        "request": ChangeRequest(coupon_code=offer.coupon.code),
        "timing": ChangeTiming.NOW,
    }

    def perform():
        outcome = subscription_change(**change, actor=request.user)
        done = f"Coupon {offer.coupon.code} is applied. Thank you for staying!"
        return _payment_message(outcome, done)

    step = Step(
        "keep",
        {"coupon": offer.coupon.code},
        dry_run=lambda: subscription_change(**change, dry_run=True).summary,
        perform=perform,
    )
    return _summary_page(request, sub, step, "portal/subscriptions/keep.html", {"offer": offer})


@require_POST
@portal_view(role=ADMIN, preference="show_subscriptions")
def subscription_cancel_undo_view(request, public_id):
    sub = _subscription(request, public_id)

    def undo():
        subscription_cancel_undo(subscription=sub, actor=request.user)
        return "The scheduled cancellation is removed: your subscription continues."

    return _run_once(request, sub, undo)


# ----------------------------------------------------------------------------- pause / resume
@dataclass(frozen=True)
class PausePreview:
    pause_on: datetime.date
    resume_on: datetime.date | None
    pauses_now: bool
    credit: Decimal  # credit note for the unused part of the term (preference)
    outlook: selectors.ResumeOutlook | None  # None: until the customer resumes


@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="allow_pause")
def subscription_pause_view(request, public_id):
    sub = _subscription(request, public_id)
    if sub.status not in (S.LIVE, S.PAUSED):
        messages.error(request, "Only a live subscription can be paused.")
        return _to_detail(sub)
    today = billing_today()
    form = PauseForm(
        request.POST if request.method == "POST" else None,
        today=today,
        term_end=sub.current_term_end,
        paused=sub.status == S.PAUSED,
        initial=_pause_initial(sub),
    )
    context = {"sub": sub, "form": form, "today": today}
    if request.method == "POST" and form.is_valid():
        step = _pause_step(request, sub, form, today)
        confirming = "confirm" in request.POST
        done, flow = _confirm_flow(request, sub, step, confirming=confirming, form=form)
        if done:
            return done
        context.update(flow)
    return _page(request, "portal/subscriptions/pause.html", context)


def _pause_initial(sub) -> dict:
    """The current schedule, so "Change" starts from it."""
    initial = {}
    if sub.pause_at and sub.status == S.LIVE:
        initial.update(pause_when="date", pause_on=sub.pause_at)
    if sub.resume_at:
        initial.update(resume_when="date", resume_on=sub.resume_at)
    return initial


def _pause_step(request, sub, form, today) -> Step:
    prefs = request.portal.preferences
    pause_on, resume_on = form.cleaned_data["pause_date"], form.cleaned_data["resume_date"]
    credit_unused = prefs.credit_unused_pause_time
    hidden = form.options()
    options = {**hidden, "credit": credit_unused}

    def preview() -> PausePreview:
        credit = ZERO
        if sub.status == S.LIVE:
            # The service's own figure, as of the pause date (the job pauses then).
            with as_of(start_of_day(pause_on, Organization.load().zone)):
                credit = subscription_pause(
                    subscription=sub, credit_unused=credit_unused, dry_run=True
                ).summary.credit
        outlook = None
        if resume_on is not None:
            configuration = configuration_of(sub)
            book = PriceBook(sub.customer, Organization.load())
            outlook = selectors.resume_outlook(sub, configuration, book, resume_on)
        pauses_now = sub.status == S.LIVE and pause_on == today
        return PausePreview(pause_on, resume_on, pauses_now, credit, outlook)

    def perform():
        return messages.SUCCESS, _pause(
            sub, pause_on, resume_on, credit_unused, today, request.user
        )

    return Step("pause", options, dry_run=preview, perform=perform, hidden=hidden)


def _pause(sub, pause_on, resume_on, credit_unused: bool, today, actor) -> str:
    until = f" until {resume_on:%b %-d, %Y}" if resume_on else " until you resume it"
    if sub.status == S.PAUSED:
        subscription_pause_schedule(
            subscription=sub, pause_on=today, resume_on=resume_on, actor=actor
        )
        return f"Your subscription stays paused{until}."
    subscription_pause_schedule(
        subscription=sub,
        pause_on=pause_on,
        resume_on=resume_on,
        credit_unused=credit_unused,
        actor=actor,
    )
    if pause_on > today:
        return f"Your subscription pauses on {pause_on:%b %-d, %Y}{until}."
    text = f"Your subscription is paused{until}."
    note = sub.credit_notes.filter(reason=CreditNoteReason.PAUSE).order_by("-id").first()
    if credit_unused and note is not None:
        text += f" Credit note {note.number} is issued for the unused time."
    return text


@require_POST
@portal_view(role=ADMIN, preference="allow_pause")
def subscription_pause_remove(request, public_id):
    sub = _subscription(request, public_id)

    def remove():
        subscription_pause_unschedule(subscription=sub, actor=request.user)
        return "The scheduled pause is removed."

    return _run_once(request, sub, remove)


@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="allow_pause")
def subscription_resume_view(request, public_id):
    sub = _subscription(request, public_id)

    def perform():
        outcome = subscription_resume(subscription=sub, actor=request.user)
        return _payment_message(outcome, "Your subscription is live again.")

    step = Step(
        "resume",
        {},
        dry_run=lambda: subscription_resume(subscription=sub, dry_run=True).summary,
        perform=perform,
    )
    return _summary_page(request, sub, step, "portal/subscriptions/resume.html", {})


# ----------------------------------------------------------------------------- auto-charge
@require_http_methods(["GET", "HEAD", "POST"])
@portal_view(role=ADMIN, preference="allow_auto_charge_toggle")
def subscription_auto_charge(request, public_id):
    sub = _subscription(request, public_id)
    if sub.status not in CHARGEABLE_STATUSES:
        messages.error(request, "This subscription has ended: nothing is charged any more.")
        return _to_detail(sub)
    form = _auto_charge_form(request, sub)
    if request.method == "POST" and form.is_valid():
        enabled, card = form.cleaned_data["enabled"], form.chosen_card

        def change():
            subscription_set_auto_charge(
                subscription=sub, enabled=enabled, method=card, actor=request.user
            )
            if enabled:
                return f"Automatic payments are on: invoices are charged to {card}."
            return "Automatic payments are off: invoices are sent to you to pay."

        done = _run_once(request, sub, change, form=form)
        if done:
            return done
    context = {"sub": sub, "form": form, "once": _new_token()}
    context["add_card_url"] = _add_card_url(request, sub)
    return render(request, "portal/subscriptions/auto_charge.html", context)


def _auto_charge_form(request, sub) -> AutoChargeForm:
    """The choice, starting from the current one; the cards are the subscription's customer's
    (a parent managing a branch chooses among the branch's cards)."""
    cards = list(
        PaymentMethod.objects.filter(customer_id=sub.customer_id).order_by(
            "-is_default", "-created_at", "-id"
        )
    )
    chosen = sub.payment_method or next((card for card in cards if card.is_default), None)
    return AutoChargeForm(
        request.POST if request.method == "POST" else None,
        cards=cards,
        initial={
            "enabled": "on" if sub.auto_charge else "off",
            "card": str(chosen.public_id) if chosen else "",
        },
    )


# ----------------------------------------------------------------------------- rendering
def _summary_page(request, sub, step: Step, template: str, context: dict):
    """A summary page whose figures cost the service's dry run, the dearest read here: the
    bare page answers at once and asks for them (htmx on load, or a button without script),
    so that every page stays within its query budget. ``?preview=1`` and confirming compute
    them; htmx gets the summary alone."""
    asked = request.method == "POST" or bool(request.GET.get("preview"))
    done, flow = _confirm_flow(
        request, sub, step, confirming=request.method == "POST", defer=not asked
    )
    if done:
        return done
    context.update(flow, sub=sub, preview_url=f"{request.path}?preview=1")
    partial = request.htmx and request.method == "GET" and not request.htmx.history_restore_request
    response = render(request, f"{template}#summary" if partial else template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _page(request, template: str, context: dict):
    """The page, or only its preview for htmx (the form asks for it on every change)."""
    if request.htmx and request.method == "POST" and "confirm" not in request.POST:
        response = render(request, f"{template}#preview", context)
    else:
        response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response
