"""Staff actions that call the billing engine from the admin, through the real admin URLs.

Every action is a confirmation page at /admin/billing/<model>/<pk>/<slug>/: the page shows the
figures the service computes in dry-run mode, and the tests check that what confirming then
creates (invoices, credit notes, payments, refunds) matches those figures to the cent.
The sandbox gateway takes the card payments; the clock is frozen where dates matter.
"""

import datetime
import html
import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from billing.enums import (
    ActorKind,
    CancelReason,
    CreditNoteReason,
    InvoiceStatus,
    PaymentMode,
    PaymentStatus,
    RefundStatus,
    SubscriptionStatus,
)
from billing.models import (
    CreditAllocation,
    CreditNote,
    Event,
    Invoice,
    Payment,
    PaymentAllocation,
    Refund,
    ScheduledChange,
    Subscription,
)
from billing.money import format_money
from billing.selectors import customer_credit_balance, invoice_balance
from billing.services.credits import credit_note_issue
from billing.services.invoices import invoice_create_one_time
from billing.services.payment_methods import payment_method_add
from billing.services.payments import new_idempotency_key, payment_collect, payment_record_offline
from billing.services.subscriptions import (
    subscription_cancel,
    subscription_create,
    subscription_pause,
    subscription_renew,
)
from portal.models import PortalPreferences
from tests.factories import (
    CustomerFactory,
    InvoiceFactory,
    PlanFactory,
    SubscriptionFactory,
    UserFactory,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

S = SubscriptionStatus
D = datetime.date
GOOD_CARD = "4242424242424242"
FAILING_CARD = "4000000000000341"  # saves fine; every charge is declined (soft)
START = D(2026, 4, 5)  # live subscriptions start here: Apr 5 – May 5 is a 30-day term
FIGURE_RE = re.compile(
    r'<tr data-figure="(?P<key>[a-z_]+)"><th scope="row">[^<]*</th><td>(?P<value>[^<]*)</td></tr>'
)
DIGEST_RE = re.compile(r'name="_figures" value="([0-9a-f]{64})"')
KEY_RE = re.compile(r'name="_idempotency_key" value="(pay_[0-9a-f]{32})"')
ROWS_RE = re.compile(r'<table id="preview-rows">.*?<tbody>(.*?)</tbody>', re.S)
CELL_RE = re.compile(r"<td>([^<]*)</td>")


# ----------------------------------------------------------------------------- helpers
def set_preferences(**values) -> None:
    """Change the portal preferences the way the admin does (save() drops the cached row)."""
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


@pytest.fixture
def travel(time_machine):
    """Freeze the clock at noon UTC of a day (the organization's time zone is UTC)."""

    def to(day: datetime.date) -> None:
        time_machine.move_to(
            datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC), tick=False
        )

    return to


@pytest.fixture
def staff(client, staff_user, organization):
    """A staff client; ``staff()`` signs in again after travelling (sessions expire)."""

    def login() -> Client:
        return login_verified(client, staff_user)

    login()
    return login


def usd(amount) -> str:
    return format_money(Decimal(amount), "USD")


def url(obj, slug: str) -> str:
    opts = obj._meta
    return reverse(
        f"admin:{opts.app_label}_{opts.model_name}_{slug.replace('-', '_')}", args=[obj.pk]
    )


def change_url(obj) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def figures(response) -> dict[str, str]:
    page = response.content.decode()
    return {m["key"]: html.unescape(m["value"]) for m in FIGURE_RE.finditer(page)}


def preview_rows(response) -> list[list[str]]:
    match = ROWS_RE.search(response.content.decode())
    if match is None:
        return []
    return [
        [html.unescape(cell) for cell in CELL_RE.findall(row)]
        for row in match.group(1).split("</tr>")
        if "<td>" in row
    ]


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def show(client, target: str, **data):
    """POST the choices with "Update figures": the page with the service's dry-run figures."""
    response = client.post(target, {**data, "confirm": "yes", "_preview": "Update figures"})
    assert response.status_code == 200
    return response


def submit(client, target: str, shown, **data):
    """Press "Confirm" on the page ``shown`` (its figures digest and idempotency key go along)."""
    page = shown.content.decode()
    payload = {**data, "confirm": "yes"}
    if digest := DIGEST_RE.search(page):
        payload["_figures"] = digest.group(1)
    if key := KEY_RE.search(page):
        payload["_idempotency_key"] = key.group(1)
    return client.post(target, payload, follow=True)


def add_card(customer, number: str = GOOD_CARD):
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2030, cvc="123"
    )


def live_subscription(travel, *, price="30.00", card=GOOD_CARD, start=START, **kwargs):
    """A live monthly subscription started (and, with a card, paid) on ``start``."""
    travel(start)
    plan = PlanFactory(price=Decimal(price), **kwargs.pop("plan_fields", {}))
    customer = CustomerFactory()
    if card:
        add_card(customer, card)
    return subscription_create(customer=customer, plan=plan, **kwargs).subscription


def reload(obj):
    return type(obj).objects.get(pk=obj.pk)


def one_time_invoice(customer, amount="50.00", **kwargs) -> Invoice:
    return invoice_create_one_time(
        customer=customer, description="Consulting", unit_price=Decimal(amount), **kwargs
    )


def counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (
            Event,
            Invoice,
            Payment,
            PaymentAllocation,
            CreditNote,
            CreditAllocation,
            Refund,
            ScheduledChange,
        )
    }


# ----------------------------------------------------------------------------- the pages
@pytest.fixture
def world(travel, organization):
    """One object of each kind, each in a state where its actions are offered."""
    sub = live_subscription(travel, auto_charge=False)  # its first invoice stays open
    invoice = Invoice.objects.get(subscription=sub)
    customer = sub.customer
    payment = payment_record_offline(
        customer=customer, amount=Decimal("80.00"), mode=PaymentMode.CHECK, invoices=[]
    )
    return {"subscription": sub, "invoice": invoice, "customer": customer, "payment": payment}


ALL_ACTIONS = [
    ("subscription", "charge"),
    ("subscription", "change-plan"),
    ("subscription", "pause"),
    ("subscription", "resume"),
    ("subscription", "cancel"),
    ("subscription", "undo-cancellation"),
    ("subscription", "reactivate"),
    ("subscription", "extend-trial"),
    ("invoice", "charge"),
    ("invoice", "record-payment"),
    ("invoice", "credit-note"),
    ("invoice", "mark-uncollectible"),
    ("invoice", "void"),
    ("customer", "one-time-charge"),
    ("customer", "record-payment"),
    ("customer", "credit-note"),
    ("payment", "refund"),
]


@pytest.mark.parametrize(("kind", "slug"), ALL_ACTIONS)
def test_action_page_get_renders_form_and_changes_nothing(staff, world, kind, slug):
    client = staff()
    obj = world[kind]
    before = counts()
    statuses = (reload(world["subscription"]).status, reload(world["invoice"]).status)

    response = client.get(url(obj, slug))

    assert response.status_code == 200
    assert response.templates[0].name == "admin/billing/object_action.html"
    page = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'href="{change_url(obj)}"' in page
    assert counts() == before
    assert (reload(world["subscription"]).status, reload(world["invoice"]).status) == statuses


@pytest.mark.parametrize(("kind", "slug"), ALL_ACTIONS)
def test_action_page_non_staff_user_redirected_to_admin_login(client, world, kind, slug):
    customer_user = UserFactory(email="someone@customer.test")
    client.force_login(customer_user)
    target = url(world[kind], slug)
    before = counts()

    got = client.get(target)
    posted = client.post(target, {"confirm": "yes", "amount": "1.00", "timing": "now"})

    for response in (got, posted):
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login"))
    assert counts() == before


def test_action_page_anonymous_redirected_to_admin_login(client, world):
    response = client.get(url(world["invoice"], "void"))

    assert response.status_code == 302
    assert response.url == f"{reverse('admin:login')}?next={url(world['invoice'], 'void')}"


def test_action_page_staff_without_permission_is_forbidden(client, world):
    clerk = UserFactory(email="clerk@northwind.example", is_staff=True)
    login_verified(client, clerk)
    before = counts()

    got = client.get(url(world["invoice"], "void"))
    posted = client.post(url(world["invoice"], "void"), {"confirm": "yes"})

    assert (got.status_code, posted.status_code) == (403, 403)
    assert counts() == before
    assert reload(world["invoice"]).status == InvoiceStatus.OPEN


def test_action_page_missing_object_redirects_with_message(staff, organization):
    client = staff()

    response = client.get(reverse("admin:billing_invoice_void", args=[987654]), follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:index")
    assert any("doesn’t exist" in m for m in messages_of(response))


def test_change_page_live_subscription_shows_buttons_for_its_actions(staff, world):
    client = staff()

    page = client.get(change_url(world["subscription"])).content.decode()

    for slug in ("charge", "change-plan", "pause", "cancel"):
        assert f'data-action="{slug}"' in page
        assert f'href="{url(world["subscription"], slug)}"' in page
    for slug in ("resume", "reactivate", "undo-cancellation", "extend-trial"):
        assert f'data-action="{slug}"' not in page


def test_change_page_finalized_invoice_shows_buttons_although_read_only(staff, world):
    client = staff()

    page = client.get(change_url(world["invoice"])).content.decode()

    for slug in ("charge", "record-payment", "credit-note", "mark-uncollectible", "void"):
        assert f'data-action="{slug}"' in page


def test_change_page_customer_and_payment_show_their_buttons(staff, world):
    client = staff()

    customer_page = client.get(change_url(world["customer"])).content.decode()
    payment_page = client.get(change_url(world["payment"])).content.decode()

    for slug in ("one-time-charge", "record-payment", "credit-note"):
        assert f'data-action="{slug}"' in customer_page
    assert 'data-action="refund"' in payment_page


def test_changelist_action_one_selected_redirects_to_confirmation_page(staff, world):
    client = staff()
    sub = world["subscription"]
    before = counts()

    response = client.post(
        reverse("admin:billing_subscription_changelist"),
        {"action": "open_pause", "_selected_action": [sub.pk]},
    )

    assert response.status_code == 302
    assert response.url == url(sub, "pause")
    assert counts() == before
    assert reload(sub).status == S.LIVE


def test_changelist_action_several_selected_warns_and_changes_nothing(staff, world):
    client = staff()
    other = one_time_invoice(world["customer"])  # paid at once from the customer's credit
    before = counts()

    response = client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": "open_void", "_selected_action": [world["invoice"].pk, other.pk]},
        follow=True,
    )

    assert any("select exactly one" in m for m in messages_of(response))
    assert counts() == before
    assert reload(world["invoice"]).status == InvoiceStatus.OPEN


def test_confirm_with_stale_figures_shows_new_figures_and_changes_nothing(staff, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    client = staff()
    target = url(sub, "pause")
    shown = client.get(target)  # no credit: the preference is off
    before = counts()

    # The clerk ticks the credit but confirms the page showing the figures without it.
    response = submit(client, target, shown, credit_unused="on")

    assert response.status_code == 200
    assert any("The figures changed" in m for m in messages_of(response))
    assert figures(response)["credit"] == usd("15.00")
    assert counts() == before
    assert reload(sub).status == S.LIVE


# ----------------------------------------------------------------------------- cancel
def test_cancel_now_with_credit_and_void_credits_preview_amount_and_voids_unpaid(
    staff, staff_user, travel
):
    sub = live_subscription(travel)  # Apr 5 – May 5, 30 days, paid
    extra = one_time_invoice(sub.customer, "12.00", subscription=sub)
    travel(D(2026, 4, 20))  # 15 of 30 days left
    client = staff()
    target = url(sub, "cancel")
    choices = {"timing": "now", "reason": CancelReason.MERCHANT, "reason_text": "Closed account"}
    choices |= {"credit_unused": "on", "void_unpaid": "on"}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    assert figures(shown)["credit"] == usd("15.00")
    assert "1 unpaid invoice(s) will be voided." in shown.content.decode()
    sub.refresh_from_db()
    assert sub.status == S.CANCELLED
    assert (sub.cancel_reason, sub.cancel_reason_text) == (CancelReason.MERCHANT, "Closed account")
    assert reload(extra).status == InvoiceStatus.VOID
    note = CreditNote.objects.get(subscription=sub)
    assert usd(note.amount) == figures(shown)["credit"]
    assert note.reason == CreditNoteReason.CANCELLATION
    event = Event.objects.get(subscription=sub, kind="subscription.cancelled")
    assert (event.actor_kind, event.actor_user) == (ActorKind.STAFF, staff_user)
    assert done.redirect_chain[-1][0] == change_url(sub)
    assert f"Credit note {note.number} issued for {usd('15.00')}" in " ".join(messages_of(done))


def test_cancel_page_checkboxes_default_from_portal_preferences(staff, travel):
    sub = live_subscription(travel)
    set_preferences(credit_on_cancel_now=True, void_unpaid_on_cancel=True)
    client = staff()

    page = client.get(url(sub, "cancel")).content.decode()

    assert re.search(r'<input type="checkbox" name="credit_unused"[^>]* checked', page)
    assert re.search(r'<input type="checkbox" name="void_unpaid"[^>]* checked', page)
    assert re.search(r'value="term_end"[^>]* checked', page)


def test_cancel_page_preferences_off_leaves_checkboxes_unticked(staff, travel):
    sub = live_subscription(travel)
    client = staff()

    page = client.get(url(sub, "cancel")).content.decode()

    assert not re.search(r'<input type="checkbox" name="credit_unused"[^>]* checked', page)
    assert not re.search(r'<input type="checkbox" name="void_unpaid"[^>]* checked', page)


def test_cancel_at_term_end_schedules_cancellation_non_renewing(staff, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    client = staff()
    target = url(sub, "cancel")
    choices = {"timing": "term_end", "reason": CancelReason.CUSTOMER}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    assert "stays active until May 5, 2026" in shown.content.decode()
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_at) == (S.NON_RENEWING, D(2026, 5, 5))
    assert "Cancellation scheduled for 2026-05-05." in messages_of(done)
    assert not CreditNote.objects.exists()


def test_cancel_already_cancelled_shows_refusal_and_changes_nothing(staff, travel):
    sub = live_subscription(travel)
    subscription_cancel(subscription=sub, timing="now")
    client = staff()
    target = url(sub, "cancel")
    before = counts()

    shown = client.get(target)
    response = submit(client, target, shown, timing="now", reason=CancelReason.MERCHANT)

    assert response.status_code == 200
    assert "This subscription is already cancelled." in messages_of(response)
    assert counts() == before


def test_cancel_page_already_cancelled_refuses_before_confirming(staff, travel):
    # Preview equals charge, refusals included: the dry run must refuse what the run refuses.
    sub = live_subscription(travel)
    subscription_cancel(subscription=sub, timing="now")
    client = staff()

    response = client.get(url(sub, "cancel"))  # "now" is preselected for a cancelled one

    assert "This subscription is already cancelled." in messages_of(response)
    assert response.context["preview"] is None


def test_cancel_term_end_of_paused_subscription_shows_refusal(staff, travel):
    sub = live_subscription(travel)
    subscription_pause(subscription=sub)
    client = staff()
    before = counts()

    response = show(client, url(sub, "cancel"), timing="term_end", reason=CancelReason.MERCHANT)

    assert "This subscription cannot be cancelled at the end of its term." in messages_of(response)
    assert counts() == before
    assert reload(sub).status == S.PAUSED


# ----------------------------------------------------------------------------- undo
def test_undo_cancellation_scheduled_is_live_again(staff, staff_user, travel):
    sub = live_subscription(travel)
    subscription_cancel(subscription=sub, timing="term_end")
    client = staff()
    target = url(sub, "undo-cancellation")

    shown = client.get(target)
    done = submit(client, target, shown)

    assert "2026-05-05" in shown.content.decode()  # the scheduled date, among the facts
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_at) == (S.LIVE, None)
    event = Event.objects.get(subscription=sub, kind="subscription.cancel_unscheduled")
    assert event.actor_user == staff_user
    assert "Scheduled cancellation removed; the subscription renews on 2026-05-05." in (
        messages_of(done)
    )


def test_undo_cancellation_nothing_scheduled_shows_refusal(staff, travel):
    sub = live_subscription(travel)
    client = staff()
    before = counts()

    response = submit(client, url(sub, "undo-cancellation"), client.get(url(sub, "cancel")))

    assert "There is no scheduled cancellation to undo." in messages_of(response)
    assert counts() == before


# ----------------------------------------------------------------------------- reactivate
def test_reactivate_after_term_invoices_new_term_and_charges_preview_amounts(staff, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    subscription_cancel(subscription=sub, timing="now")
    travel(D(2026, 6, 1))
    client = staff()
    target = url(sub, "reactivate")

    shown = client.get(target)
    done = submit(client, target, shown)

    shown_figures = figures(shown)
    assert shown_figures["invoice_total"] == usd("30.00")
    assert shown_figures["next_billing_date"] == "2026-07-01"
    sub.refresh_from_db()
    assert sub.status == S.LIVE
    assert (sub.current_term_start, sub.current_term_end) == (D(2026, 6, 1), D(2026, 7, 1))
    invoice = Invoice.objects.get(subscription=sub, period_start=D(2026, 6, 1))
    assert usd(invoice.total) == shown_figures["invoice_total"]
    assert invoice.status == InvoiceStatus.PAID
    payment = Payment.objects.get(allocations__invoice=invoice)
    assert usd(payment.amount) == shown_figures["due_now"]
    message = " ".join(messages_of(done))
    assert f"Invoice {invoice.number} issued" in message
    assert f"receipt {payment.receipt_number}" in message


def test_reactivate_in_term_requiring_payment_refused_until_unticked(staff, travel, organization):
    travel(D(2026, 1, 20))
    sub = SubscriptionFactory(cancelled=True, cancel_reason=CancelReason.DUNNING)
    InvoiceFactory(customer=sub.customer, subscription=sub)  # open, 100.00
    client = staff()
    target = url(sub, "reactivate")
    before = counts()

    shown = client.get(target)  # the preference requires payment: ticked
    refused = submit(client, target, shown, require_payment="on")

    assert "Pay the open invoice first, then reactivate." in messages_of(shown)
    assert "Pay the open invoice first, then reactivate." in messages_of(refused)
    assert counts() == before
    assert reload(sub).status == S.CANCELLED

    unticked = show(client, target)
    done = submit(client, target, unticked)

    assert "Nothing is charged now" in unticked.content.decode()
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_end) == (S.LIVE, D(2026, 2, 15))
    assert Invoice.objects.filter(subscription=sub).count() == 1
    assert "Subscription reactivated." in messages_of(done)


def test_reactivate_live_subscription_shows_refusal(staff, travel):
    sub = live_subscription(travel)
    client = staff()
    before = counts()

    response = client.get(url(sub, "reactivate"))

    assert "Only a cancelled or expired subscription can be reactivated." in messages_of(response)
    assert counts() == before


# ----------------------------------------------------------------------------- pause / resume
def test_pause_with_credit_issues_preview_credit_and_pauses(staff, staff_user, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 20))
    client = staff()
    target = url(sub, "pause")

    shown = show(client, target, credit_unused="on")
    done = submit(client, target, shown, credit_unused="on")

    sub.refresh_from_db()
    assert sub.status == S.PAUSED
    note = CreditNote.objects.get(subscription=sub)
    assert usd(note.amount) == figures(shown)["credit"] == usd("15.00")
    assert Event.objects.get(subscription=sub, kind="subscription.paused").actor_user == staff_user
    assert f"Subscription paused. Credit note {note.number}" in " ".join(messages_of(done))


def test_pause_page_credit_defaults_from_portal_preferences(staff, travel):
    sub = live_subscription(travel)
    set_preferences(credit_unused_pause_time=True)
    travel(D(2026, 4, 20))
    client = staff()

    shown = client.get(url(sub, "pause"))

    assert re.search(r'name="credit_unused"[^>]* checked', shown.content.decode())
    assert figures(shown)["credit"] == usd("15.00")


def test_pause_not_live_shows_refusal_and_changes_nothing(staff, travel):
    sub = live_subscription(travel)
    subscription_pause(subscription=sub)
    client = staff()
    target = url(sub, "pause")
    before = counts()

    shown = client.get(target)
    posted = submit(client, target, shown)

    for response in (shown, posted):
        assert "Only a live subscription can be paused." in messages_of(response)
    assert counts() == before


def test_resume_after_billing_date_invoices_new_term_as_previewed(staff, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 5, 20))
    client = staff()
    target = url(sub, "resume")

    shown = client.get(target)
    done = submit(client, target, shown)

    shown_figures = figures(shown)
    sub.refresh_from_db()
    assert sub.status == S.LIVE
    assert sub.current_term_end.isoformat() == shown_figures["next_billing_date"] == "2026-06-20"
    invoice = Invoice.objects.get(subscription=sub, period_start=D(2026, 5, 20))
    assert usd(invoice.total) == shown_figures["invoice_total"]
    assert [
        [line.description, usd(line.amount)] for line in invoice.lines.order_by("position")
    ] == [[row[0], row[3]] for row in preview_rows(shown)]
    assert invoice.status == InvoiceStatus.PAID
    assert "Subscription resumed." in " ".join(messages_of(done))


def test_resume_before_billing_date_charges_nothing(staff, travel):
    sub = live_subscription(travel)
    travel(D(2026, 4, 10))
    subscription_pause(subscription=sub)
    travel(D(2026, 4, 12))
    client = staff()
    target = url(sub, "resume")
    invoices_before = Invoice.objects.count()

    shown = client.get(target)
    submit(client, target, shown)

    assert figures(shown)["next_billing_date"] == "2026-05-05"
    assert "invoice_total" not in figures(shown)
    assert reload(sub).status == S.LIVE
    assert Invoice.objects.count() == invoices_before


# ----------------------------------------------------------------------------- extend trial
@pytest.fixture
def expired_trial(travel, organization):
    travel(D(2026, 1, 20))
    return SubscriptionFactory(
        expired=True,
        cancel_reason=CancelReason.TRIAL_ENDED,
        plan=PlanFactory(with_trial=True),
    )


def test_extend_trial_expired_trial_is_in_trial_again(staff, staff_user, expired_trial):
    client = staff()
    target = url(expired_trial, "extend-trial")

    shown = client.get(target)
    done = submit(client, target, shown)

    assert "0 of 1" in shown.content.decode()
    sub = reload(expired_trial)
    assert (sub.status, sub.trial_end, sub.trial_extensions_used) == (
        S.IN_TRIAL,
        D(2026, 2, 3),
        1,
    )
    event = Event.objects.get(subscription=sub, kind="subscription.trial_extended")
    assert event.actor_user == staff_user
    assert "Trial extended to 2026-02-03." in messages_of(done)


def test_extend_trial_limit_reached_shows_refusal(staff, expired_trial):
    Subscription.objects.filter(pk=expired_trial.pk).update(trial_extensions_used=1)
    client = staff()
    target = url(expired_trial, "extend-trial")
    before = counts()

    response = submit(client, target, client.get(target))

    assert "This trial cannot be extended again." in messages_of(response)
    assert counts() == before
    assert reload(expired_trial).status == S.EXPIRED


def test_extend_trial_limit_comes_from_portal_preferences(staff, expired_trial):
    Subscription.objects.filter(pk=expired_trial.pk).update(trial_extensions_used=1)
    set_preferences(trial_extension_limit=2)
    client = staff()
    target = url(expired_trial, "extend-trial")

    shown = client.get(target)
    submit(client, target, shown)

    assert "1 of 2" in shown.content.decode()
    assert reload(expired_trial).trial_extensions_used == 2


# ----------------------------------------------------------------------------- charge now
def test_subscription_charge_now_collects_open_invoice_with_saved_card(staff, staff_user, travel):
    sub = live_subscription(travel, auto_charge=False)
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.status == InvoiceStatus.OPEN
    client = staff()
    target = url(sub, "charge")

    shown = client.get(target)
    done = submit(client, target, shown)

    assert figures(shown)["charge_total"] == usd("30.00")
    assert preview_rows(shown) == [[invoice.number, invoice.due_date.isoformat(), usd("30.00")]]
    payment = Payment.objects.get(allocations__invoice=invoice)
    assert (payment.status, usd(payment.amount)) == (PaymentStatus.SUCCEEDED, usd("30.00"))
    assert payment.method_id == sub.payment_method_id
    assert payment.created_by == staff_user
    assert reload(invoice).status == InvoiceStatus.PAID
    assert f"receipt {payment.receipt_number}" in " ".join(messages_of(done))


def test_subscription_charge_now_past_due_paid_is_live_again(staff, travel):
    sub = live_subscription(travel, card=FAILING_CARD)
    assert reload(sub).status == S.PAST_DUE
    good = add_card(sub.customer)
    Subscription.objects.filter(pk=sub.pk).update(payment_method=good)
    client = staff()
    target = url(sub, "charge")

    submit(client, target, client.get(target))

    assert reload(sub).status == S.LIVE
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.PAID


def test_subscription_charge_now_declined_shows_failure_message(staff, travel):
    sub = live_subscription(travel, card=FAILING_CARD)
    invoice = Invoice.objects.get(subscription=sub)
    client = staff()
    target = url(sub, "charge")

    done = submit(client, target, client.get(target))

    failed = Payment.objects.filter(allocations__invoice=invoice).order_by("pk").last()
    assert failed.status == PaymentStatus.FAILED
    assert failed.failure_message
    assert any(failed.failure_message in m for m in messages_of(done))
    assert reload(invoice).status == InvoiceStatus.OPEN


def test_subscription_charge_now_double_submit_charges_once(staff, travel):
    sub = live_subscription(travel, auto_charge=False)
    client = staff()
    target = url(sub, "charge")
    shown = client.get(target)

    submit(client, target, shown)
    again = submit(client, target, shown)  # the same page posted twice

    assert Payment.objects.filter(mode=PaymentMode.CARD).count() == 1
    assert "This subscription has no unpaid invoices." in messages_of(again)


def test_subscription_charge_now_without_card_shows_refusal(staff, travel):
    sub = live_subscription(travel, card=None)
    client = staff()
    before = counts()

    response = submit(client, url(sub, "charge"), client.get(url(sub, "charge")))

    assert any("has no saved card" in m for m in messages_of(response))
    assert counts() == before


def test_subscription_charge_now_nothing_unpaid_shows_refusal(staff, travel):
    sub = live_subscription(travel)  # paid at creation
    client = staff()

    response = client.get(url(sub, "charge"))

    assert "This subscription has no unpaid invoices." in messages_of(response)


# ----------------------------------------------------------------------------- change plan
def test_change_plan_now_upgrade_invoices_and_charges_preview_amounts(staff, travel):
    sub = live_subscription(travel)  # 30.00 a month, Apr 5 – May 5
    bigger = PlanFactory(price=Decimal("60.00"), name="Bigger")
    travel(D(2026, 4, 20))  # 15 of 30 days left
    client = staff()
    target = url(sub, "change-plan")
    choices = {"plan": bigger.pk, "quantity": 1, "timing": "now"}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    shown_figures = figures(shown)
    assert shown_figures["invoice_total"] == usd("15.00")
    assert shown_figures["next_billing_date"] == "2026-05-05"
    sub.refresh_from_db()
    assert sub.plan == bigger
    invoice = Invoice.objects.filter(subscription=sub).order_by("pk").last()
    assert usd(invoice.total) == shown_figures["invoice_total"]
    assert [
        [line.description, usd(line.amount)] for line in invoice.lines.order_by("position")
    ] == [[row[0], row[3]] for row in preview_rows(shown)]
    payment = Payment.objects.get(allocations__invoice=invoice)
    assert usd(payment.amount) == shown_figures["due_now"]
    assert f"Invoice {invoice.number} issued" in " ".join(messages_of(done))

    # The next regular invoice is the amount the page announced.
    travel(D(2026, 5, 5))
    renewal = subscription_renew(subscription=sub).invoice
    assert usd(renewal.total) == shown_figures["next_amount"] == usd("60.00")


def test_change_plan_now_downgrade_issues_preview_credit_note(staff, travel):
    sub = live_subscription(travel)  # 30.00 a month, paid
    smaller = PlanFactory(price=Decimal("10.00"))
    travel(D(2026, 4, 20))  # 15 of 30 days left: (30 - 10) × 15 / 30 = 10.00 back
    client = staff()
    target = url(sub, "change-plan")
    choices = {"plan": smaller.pk, "quantity": 1, "timing": "now"}
    invoices_before = Invoice.objects.count()

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    assert "invoice_total" not in figures(shown)
    note = CreditNote.objects.get(subscription=sub)
    assert usd(note.amount) == figures(shown)["credit"] == usd("10.00")
    assert note.reason == CreditNoteReason.PRORATION
    assert Invoice.objects.count() == invoices_before
    assert reload(sub).plan == smaller
    assert f"Credit note {note.number} issued for {usd('10.00')}" in " ".join(messages_of(done))


def test_change_plan_at_term_end_schedules_change_without_charge(staff, travel):
    sub = live_subscription(travel)
    bigger = PlanFactory(price=Decimal("60.00"))
    travel(D(2026, 4, 20))
    client = staff()
    target = url(sub, "change-plan")
    choices = {"plan": bigger.pk, "quantity": 2, "timing": "term_end"}
    invoices_before = Invoice.objects.count()

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    assert figures(shown)["next_amount"] == usd("120.00")
    change = ScheduledChange.objects.get(subscription=sub)
    assert (change.plan, change.quantity) == (bigger, 2)
    assert Invoice.objects.count() == invoices_before
    assert reload(sub).plan != bigger
    assert "Change scheduled for 2026-05-05." in messages_of(done)


def test_change_quantity_above_plan_maximum_shows_error_next_to_quantity(staff, travel):
    sub = live_subscription(travel, plan_fields={"max_quantity": 3})
    travel(D(2026, 4, 20))
    client = staff()
    before = counts()

    response = show(client, url(sub, "change-plan"), plan=sub.plan_id, quantity=5, timing="now")

    assert "allows at most 3" in " ".join(response.context["form"].errors["quantity"])
    assert counts() == before
    assert reload(sub).quantity == 1


def test_change_nothing_chosen_confirmed_shows_refusal(staff, travel):
    sub = live_subscription(travel)
    client = staff()
    target = url(sub, "change-plan")
    before = counts()

    response = submit(
        client, target, client.get(target), plan=sub.plan_id, quantity=1, timing="now"
    )

    assert "Nothing would change." in messages_of(response)
    assert counts() == before


# ----------------------------------------------------------------------------- invoices
@pytest.fixture
def open_invoice(travel, organization):
    travel(D(2026, 4, 5))
    return one_time_invoice(CustomerFactory(), "50.00")


def test_void_partly_paid_invoice_returns_payment_as_credit(staff, staff_user, open_invoice):
    payment_record_offline(
        customer=open_invoice.customer,
        amount=Decimal("20.00"),
        mode=PaymentMode.CASH,
        invoices=[open_invoice],
    )
    client = staff()
    target = url(open_invoice, "void")

    shown = client.get(target)
    done = submit(client, target, shown, reason="Sent by mistake")

    assert figures(shown) == {
        "balance_due": usd("30.00"),
        "returned_credit": usd("20.00"),
    }
    assert reload(open_invoice).status == InvoiceStatus.VOID
    assert usd(customer_credit_balance(open_invoice.customer)) == usd("20.00")
    event = Event.objects.get(invoice=open_invoice, kind="invoice.voided")
    assert (event.actor_user, "Sent by mistake" in event.description) == (staff_user, True)
    assert f"Invoice {open_invoice.number} voided." in messages_of(done)


def test_void_paid_invoice_shows_refusal_and_changes_nothing(staff, open_invoice):
    payment_record_offline(
        customer=open_invoice.customer, amount=Decimal("50.00"), mode=PaymentMode.CASH
    )
    client = staff()
    target = url(open_invoice, "void")
    before = counts()

    response = submit(client, target, client.get(target), reason="")

    assert "Only an unpaid invoice can be voided." in messages_of(response)
    assert counts() == before
    assert reload(open_invoice).status == InvoiceStatus.PAID


def test_mark_uncollectible_open_invoice_writes_balance_off(staff, staff_user, open_invoice):
    client = staff()
    target = url(open_invoice, "mark-uncollectible")

    shown = client.get(target)
    done = submit(client, target, shown)

    assert figures(shown) == {"balance_due": usd("50.00")}
    assert reload(open_invoice).status == InvoiceStatus.UNCOLLECTIBLE
    event = Event.objects.get(invoice=open_invoice, kind="invoice.uncollectible")
    assert event.actor_user == staff_user
    assert f"Invoice {open_invoice.number} marked uncollectible." in messages_of(done)


def test_mark_uncollectible_void_invoice_shows_refusal(staff, open_invoice):
    Invoice.objects.filter(pk=open_invoice.pk).update(status=InvoiceStatus.VOID)
    client = staff()
    target = url(open_invoice, "mark-uncollectible")
    before = counts()

    response = submit(client, target, client.get(target))

    assert "Only an open invoice can be marked uncollectible." in messages_of(response)
    assert counts() == before


def test_invoice_record_payment_defaults_to_balance_and_pays_it(staff, staff_user, open_invoice):
    client = staff()
    target = url(open_invoice, "record-payment")
    choices = {"amount": "50.00", "mode": PaymentMode.BANK_TRANSFER}
    choices |= {"reference": "TRX-981", "received_on": "2026-04-04"}

    shown = client.get(target)
    done = submit(client, target, shown, **choices)

    page = shown.content.decode()
    assert 'name="amount" value="50.00"' in page
    assert 'name="received_on" value="2026-04-05"' in page
    assert figures(shown)["applied"] == usd("50.00")
    payment = Payment.objects.get(customer=open_invoice.customer)
    assert (payment.amount, payment.mode, payment.reference) == (
        Decimal("50.00"),
        PaymentMode.BANK_TRANSFER,
        "TRX-981",
    )
    assert payment.received_on == D(2026, 4, 4)
    assert payment.created_by == staff_user
    assert reload(open_invoice).status == InvoiceStatus.PAID
    assert (
        f"Payment recorded: receipt {payment.receipt_number} for {usd('50.00')}. "
        f"Invoice {open_invoice.number} is paid."
    ) in messages_of(done)


def test_invoice_record_payment_overpaid_keeps_rest_as_credit(staff, open_invoice):
    client = staff()
    target = url(open_invoice, "record-payment")
    choices = {"amount": "80.00", "mode": PaymentMode.CHECK, "received_on": "2026-04-05"}

    shown = show(client, target, **choices)
    submit(client, target, shown, **choices)

    shown_figures = figures(shown)
    assert shown_figures["balance_after"] == usd(invoice_balance(open_invoice)[2]) == usd("0")
    assert shown_figures["left_as_credit"] == usd(customer_credit_balance(open_invoice.customer))
    assert shown_figures["left_as_credit"] == usd("30.00")


@pytest.mark.parametrize("amount", ["0", "-5.00"])
def test_invoice_record_payment_bad_amount_shows_error_and_records_nothing(
    staff, open_invoice, amount
):
    client = staff()
    target = url(open_invoice, "record-payment")
    choices = {"amount": amount, "mode": PaymentMode.CASH, "received_on": "2026-04-05"}
    before = counts()

    response = submit(client, target, show(client, target, **choices), **choices)

    assert response.context["form"].errors["amount"] == ["The amount must be more than zero."]
    assert counts() == before
    assert reload(open_invoice).status == InvoiceStatus.OPEN


def test_invoice_credit_note_applied_pays_down_balance_as_previewed(
    staff, staff_user, open_invoice
):
    client = staff()
    target = url(open_invoice, "credit-note")
    choices = {"amount": "20.00", "reason": CreditNoteReason.BILLING_ERROR, "memo": "Discount"}
    choices |= {"apply_credit": "on"}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    note = CreditNote.objects.get(invoice=open_invoice)
    shown_figures = figures(shown)
    assert usd(note.amount) == shown_figures["credit_note_amount"] == usd("20.00")
    assert (note.reason, note.memo) == (CreditNoteReason.BILLING_ERROR, "Discount")
    _paid, credited, balance = invoice_balance(open_invoice)
    assert usd(credited) == shown_figures["applied"]
    assert usd(balance) == shown_figures["balance_after"] == usd("30.00")
    assert (
        usd(customer_credit_balance(open_invoice.customer))
        == (shown_figures["customer_credit_after"])
    )
    event = Event.objects.get(credit_note=note, kind="credit_note.issued")
    assert event.actor_user == staff_user
    assert (
        f"Credit note {note.number} issued for {usd('20.00')}. "
        f"{usd('20.00')} applied to invoice {open_invoice.number}."
    ) in messages_of(done)


def test_invoice_credit_note_not_applied_stays_customer_credit(staff, open_invoice):
    client = staff()
    target = url(open_invoice, "credit-note")
    choices = {"amount": "20.00", "reason": CreditNoteReason.GOODWILL}

    shown = show(client, target, **choices)
    submit(client, target, shown, **choices)

    assert figures(shown)["balance_after"] == usd(invoice_balance(open_invoice)[2])
    assert figures(shown)["customer_credit_after"] == usd(
        customer_credit_balance(open_invoice.customer)
    )
    assert usd(customer_credit_balance(open_invoice.customer)) == usd("20.00")


def test_invoice_credit_note_above_total_shows_error_next_to_amount(staff, open_invoice):
    client = staff()
    target = url(open_invoice, "credit-note")
    choices = {"amount": "60.00", "reason": CreditNoteReason.BILLING_ERROR, "apply_credit": "on"}
    before = counts()

    response = submit(client, target, show(client, target, **choices), **choices)

    assert "cannot exceed what is left to credit" in response.context["form"].errors["amount"][0]
    assert counts() == before


def test_invoice_credit_note_applied_to_paid_invoice_issues_nothing(staff, open_invoice):
    payment_record_offline(
        customer=open_invoice.customer, amount=Decimal("50.00"), mode=PaymentMode.CASH
    )
    client = staff()
    target = url(open_invoice, "credit-note")
    choices = {"amount": "10.00", "reason": CreditNoteReason.REFUND, "apply_credit": "on"}
    before = counts()

    response = submit(client, target, show(client, target, **choices), **choices)

    assert "Credit can only be applied to an unpaid invoice." in messages_of(response)
    assert counts() == before  # the credit note was rolled back with the failed application


def test_invoice_charge_now_default_card_pays_preview_amount(staff, staff_user, open_invoice):
    card = add_card(open_invoice.customer)
    client = staff()
    target = url(open_invoice, "charge")

    shown = client.get(target)
    done = submit(client, target, shown)

    assert figures(shown) == {"card": str(card), "charge_total": usd("50.00")}
    payment = Payment.objects.get(allocations__invoice=open_invoice)
    assert (payment.status, payment.method, usd(payment.amount)) == (
        PaymentStatus.SUCCEEDED,
        card,
        figures(shown)["charge_total"],
    )
    assert reload(open_invoice).status == InvoiceStatus.PAID
    assert Event.objects.get(payment=payment, kind="payment.succeeded").actor_user == staff_user
    assert f"receipt {payment.receipt_number}" in " ".join(messages_of(done))


def test_invoice_charge_now_declined_shows_failure_message(staff, open_invoice):
    add_card(open_invoice.customer, FAILING_CARD)
    client = staff()
    target = url(open_invoice, "charge")

    done = submit(client, target, client.get(target))

    payment = Payment.objects.get(allocations__invoice=open_invoice)
    assert payment.status == PaymentStatus.FAILED
    assert any(payment.failure_message in m for m in messages_of(done))
    assert reload(open_invoice).status == InvoiceStatus.OPEN


def test_invoice_charge_now_without_default_card_shows_refusal(staff, open_invoice):
    client = staff()
    before = counts()

    response = submit(client, url(open_invoice, "charge"), client.get(url(open_invoice, "charge")))

    assert "The customer has no default card to charge." in messages_of(response)
    assert counts() == before


# ----------------------------------------------------------------------------- customers
def test_customer_one_time_charge_invoices_preview_lines_and_totals(staff, staff_user, travel):
    travel(D(2026, 4, 5))
    customer = CustomerFactory(tax_rate=Decimal("10"))
    credit_note_issue(customer=customer, amount=Decimal("10.00"), reason=CreditNoteReason.GOODWILL)
    client = staff()
    target = url(customer, "one-time-charge")
    choices = {"description": "Onboarding workshop", "unit_price": "19.99", "quantity": "3"}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    shown_figures = figures(shown)
    assert preview_rows(shown) == [["Onboarding workshop", "3", usd("19.99"), usd("59.97")]]
    assert shown_figures["tax"] == usd("6.00")
    invoice = Invoice.objects.get(customer=customer)
    assert usd(invoice.total) == shown_figures["invoice_total"] == usd("65.97")
    assert usd(invoice.tax_total) == shown_figures["tax"]
    line = invoice.lines.get()
    assert (line.description, usd(line.amount)) == ("Onboarding workshop", usd("59.97"))
    _paid, credited, balance = invoice_balance(invoice)
    assert usd(credited) == shown_figures["credit_applied"] == usd("10.00")
    assert usd(balance) == shown_figures["due_now"] == usd("55.97")
    assert Event.objects.get(invoice=invoice, kind="invoice.issued").actor_user == staff_user
    assert any(
        f"Invoice {invoice.number} issued for {usd('65.97')}" in m for m in messages_of(done)
    )


@pytest.mark.parametrize(
    ("field", "choices", "message"),
    [
        ("unit_price", {"unit_price": "0", "quantity": "1"}, "The amount must be more than zero."),
        ("quantity", {"unit_price": "10", "quantity": "0"}, "The quantity must be more than zero."),
        (
            "unit_price",
            {"unit_price": "999999999", "quantity": "99999"},
            "The amount is too large for one invoice line.",
        ),
    ],
)
def test_customer_one_time_charge_bad_amount_shows_error_and_invoices_nothing(
    staff, organization, field, choices, message
):
    customer = CustomerFactory()
    client = staff()
    target = url(customer, "one-time-charge")
    choices = {"description": "Workshop", **choices}
    before = counts()

    response = submit(client, target, show(client, target, **choices), **choices)

    assert response.context["form"].errors[field] == [message]
    assert counts() == before


def test_customer_record_payment_pays_open_invoices_oldest_first(staff, travel):
    travel(D(2026, 4, 5))
    customer = CustomerFactory()
    older = one_time_invoice(customer, "30.00")
    travel(D(2026, 4, 8))
    newer = one_time_invoice(customer, "50.00")
    client = staff()
    target = url(customer, "record-payment")
    choices = {"amount": "60.00", "mode": PaymentMode.BANK_TRANSFER, "received_on": "2026-04-08"}

    shown = client.get(target)
    assert 'name="amount" value="80.00"' in shown.content.decode()  # all that is outstanding
    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    payment = Payment.objects.get(customer=customer)
    allocations = [
        [a.invoice.number, a.invoice.due_date.isoformat(), usd(a.amount)]
        for a in payment.allocations.select_related("invoice").order_by("invoice__due_date")
    ]
    assert allocations == [[row[0], row[1], row[3]] for row in preview_rows(shown)]
    assert allocations == [
        [older.number, older.due_date.isoformat(), usd("30.00")],
        [newer.number, newer.due_date.isoformat(), usd("30.00")],
    ]
    assert figures(shown)["left_as_credit"] == usd("0.00")
    assert reload(older).status == InvoiceStatus.PAID
    assert invoice_balance(newer)[2] == Decimal("20.00")
    assert any(f"receipt {payment.receipt_number}" in m for m in messages_of(done))


def test_customer_credit_note_applied_to_open_invoices_as_previewed(staff, staff_user, travel):
    travel(D(2026, 4, 5))
    customer = CustomerFactory()
    invoice = one_time_invoice(customer, "50.00")
    client = staff()
    target = url(customer, "credit-note")
    choices = {"amount": "70.00", "reason": CreditNoteReason.GOODWILL, "apply_credit": "on"}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    note = CreditNote.objects.get(customer=customer)
    shown_figures = figures(shown)
    assert usd(note.amount) == shown_figures["credit_note_amount"]
    assert shown_figures["applied"] == usd("50.00")
    assert reload(invoice).status == InvoiceStatus.PAID
    assert usd(customer_credit_balance(customer)) == shown_figures["customer_credit_after"]
    assert Event.objects.get(credit_note=note, kind="credit_note.issued").actor_user == staff_user
    assert any(f"Credit note {note.number} issued" in m for m in messages_of(done))


def test_customer_credit_note_bad_amount_shows_error_and_issues_nothing(staff, organization):
    customer = CustomerFactory()
    client = staff()
    target = url(customer, "credit-note")
    choices = {"amount": "0", "reason": CreditNoteReason.GOODWILL}
    before = counts()

    response = submit(client, target, show(client, target, **choices), **choices)

    assert response.context["form"].errors["amount"] == [
        "A credit note must be for more than zero."
    ]
    assert counts() == before


# ----------------------------------------------------------------------------- refunds
def test_refund_offline_overpayment_defaults_to_unapplied_part(staff, staff_user, open_invoice):
    payment = payment_record_offline(
        customer=open_invoice.customer, amount=Decimal("80.00"), mode=PaymentMode.CHECK
    )
    client = staff()
    target = url(payment, "refund")

    shown = client.get(target)
    done = submit(client, target, shown, amount="30.00", reason="Overpaid")

    assert 'name="amount" value="30.00"' in shown.content.decode()
    assert figures(shown)["refund_amount"] == usd("30.00")
    refund = Refund.objects.get(payment=payment)
    assert (refund.status, usd(refund.amount), refund.reason) == (
        RefundStatus.SUCCEEDED,
        usd("30.00"),
        "Overpaid",
    )
    assert refund.created_by == staff_user
    assert customer_credit_balance(open_invoice.customer) == Decimal("0.00")
    assert any("Refund of" in m and "succeeded" in m for m in messages_of(done))


def test_refund_card_payment_from_credit_note_goes_through_gateway(staff, open_invoice):
    card = add_card(open_invoice.customer)
    payment = payment_collect(
        payer=open_invoice.customer,
        invoices=[open_invoice],
        method=card,
        idempotency_key=new_idempotency_key(),
    )
    note = credit_note_issue(
        customer=open_invoice.customer,
        amount=Decimal("50.00"),
        reason=CreditNoteReason.REFUND,
        invoice=open_invoice,
    )
    client = staff()
    target = url(payment, "refund")
    choices = {"amount": "50.00", "reason": "Service not delivered", "credit_note": note.pk}

    shown = show(client, target, **choices)
    done = submit(client, target, shown, **choices)

    assert figures(shown)["refund_from"] == f"credit note {note.number}"
    refund = Refund.objects.get(payment=payment)
    assert (refund.status, refund.credit_note, usd(refund.amount)) == (
        RefundStatus.SUCCEEDED,
        note,
        figures(shown)["refund_amount"],
    )
    assert refund.gateway_reference
    assert reload(payment).status == PaymentStatus.REFUNDED
    assert any(f"from credit note {note.number}" in m for m in messages_of(done))


def test_refund_beyond_unapplied_without_credit_note_shows_service_rule(staff, open_invoice):
    payment = payment_record_offline(
        customer=open_invoice.customer, amount=Decimal("50.00"), mode=PaymentMode.CASH
    )
    client = staff()
    target = url(payment, "refund")
    before = counts()

    response = submit(client, target, show(client, target, amount="10.00"), amount="10.00")

    error = response.context["form"].errors["amount"][0]
    assert "To refund a paid invoice, issue a credit note for it and refund that." in error
    assert counts() == before


def test_refund_failed_payment_shows_refusal(staff, open_invoice):
    add_card(open_invoice.customer, FAILING_CARD)
    payment = payment_collect(
        payer=open_invoice.customer,
        invoices=[open_invoice],
        method=open_invoice.customer.payment_methods.get(),
        idempotency_key=new_idempotency_key(),
    )
    client = staff()
    target = url(payment, "refund")
    before = counts()

    response = submit(client, target, show(client, target, amount="5.00"), amount="5.00")

    assert "Only a succeeded payment can be refunded." in messages_of(response)
    assert counts() == before
