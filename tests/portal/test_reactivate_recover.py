"""Reactivating (in the term after dunning, or a new term optionally on another plan) and the
recovery page a payment-failed email links to (new card, open invoice paid, reactivated, in
one confirmation) — happy paths, declines, double submits and every refusal.
"""

import datetime
import re
from decimal import Decimal
from html import unescape

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.enums import CancelReason, ChangeTiming, InvoiceKind, InvoiceStatus, PaymentStatus
from billing.enums import SubscriptionStatus as S
from billing.errors import NotAllowed
from billing.models import (
    CreditNote,
    Event,
    Invoice,
    Notification,
    Payment,
    PaymentMethod,
    SandboxCharge,
    Subscription,
)
from billing.notifications import notification_send
from billing.selectors import invoice_balance
from billing.services.dunning import dunning_final_action
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import (
    subscription_cancel,
    subscription_create,
    subscription_reactivate,
)
from tests.factories import (
    CustomerFactory,
    PlanFactory,
    ProductFactory,
    SubscriptionFactory,
    UserFactory,
)
from tests.portal.payments_support import (
    hidden_value,
    reauthenticate,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

D = datetime.date
GOOD = "4242424242424242"
DECLINES = "4000000000000341"  # tokenizes, every charge fails
START = D(2026, 4, 5)  # terms run Apr 5 → May 5 (30 days)
TERM_END = D(2026, 5, 5)


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def travel():
    travellers = []

    def to(day: datetime.date) -> None:
        if travellers:
            travellers.pop().stop()
        traveller = time_machine.travel(
            datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC), tick=False
        )
        traveller.start()
        travellers.append(traveller)

    yield to
    for traveller in travellers:
        traveller.stop()


@pytest.fixture
def plans(organization):
    product = ProductFactory(name="Cloud")
    return {
        "basic": PlanFactory(product=product, code="basic", name="Basic", price=Decimal("10.00")),
        "pro": PlanFactory(product=product, code="pro", name="Pro", price=Decimal("30.00")),
    }


@pytest.fixture
def admin(client, organization):
    return sign_in(client, role="admin")


def card(customer, number=GOOD, **options) -> PaymentMethod:
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2030, cvc="123", **options
    )


def dunning_cancelled(travel, customer, plan) -> tuple[Subscription, Invoice]:
    """Live from START on a card that declines: the first charge fails (past due), and the
    dunning policy's final action cancels it two days later, within the term."""
    travel(START)
    card(customer, DECLINES)
    sub = subscription_create(customer=customer, plan=plan).subscription
    invoice = Invoice.objects.get(subscription=sub)
    assert Subscription.objects.get(pk=sub.pk).status == S.PAST_DUE
    travel(START + datetime.timedelta(days=2))
    dunning_final_action(invoice=invoice)
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_reason) == (S.CANCELLED, CancelReason.DUNNING)
    return sub, invoice


def past_due(travel, customer, plan) -> tuple[Subscription, Invoice]:
    travel(START)
    card(customer, DECLINES)
    sub = subscription_create(customer=customer, plan=plan).subscription
    travel(START + datetime.timedelta(days=2))
    return Subscription.objects.get(pk=sub.pk), Invoice.objects.get(subscription=sub)


def cancelled_by_customer(travel, customer, plan) -> Subscription:
    """Cancelled by the customer on the third day of its term (no credit): reactivating it
    starts a new term."""
    travel(START)
    card(customer)
    sub = subscription_create(customer=customer, plan=plan).subscription
    travel(START + datetime.timedelta(days=2))
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    return Subscription.objects.get(pk=sub.pk)


def reactivate_url(sub) -> str:
    return reverse("portal:subscription_reactivate", args=[sub.public_id])


def recover_url(sub) -> str:
    return reverse("portal:subscription_recover", args=[sub.public_id])


def submit(client, url, *, query=None, **fields):
    """Open the page, then confirm it as shown (plus ``fields``)."""
    page = client.get(url, query or {})
    assert page.status_code == 200
    html = page.content.decode()
    names = ["figures", "idempotency_key", "token"] + (["plan"] if 'name="plan"' in html else [])
    data = {name: hidden_value(html, name) for name in names}
    data.update(fields)
    return client.post(url, data), data


def new_card(number=GOOD):
    return {
        "method": "new",
        "number": number,
        "exp_month": "12",
        "exp_year": "30",
        "cvc": "123",
        "name": "Ada",
    }


def money(response, testid: str) -> Decimal:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', response.content.decode())
    assert match, f"no {testid} on the page"
    return Decimal(unescape(match.group(1)).replace("USD", "").replace(",", "").strip())


def state(sub) -> tuple:
    row = Subscription.objects.filter(pk=sub.pk).values().get()
    return (
        row,
        Invoice.objects.count(),
        tuple(Invoice.objects.order_by("pk").values_list("status", flat=True)),
        CreditNote.objects.count(),
        Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count(),
        tuple(PaymentMethod.objects.order_by("pk").values_list("pk", "is_default")),
    )


# ----------------------------------------------------------------------------- reactivate
def test_reactivate_out_of_term_shows_summary_then_invoices_and_charges(
    client, admin, plans, travel
):
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    travel(D(2026, 6, 10))

    bare = client.get(reactivate_url(sub))
    page = client.get(reactivate_url(sub), {"preview": "1"})
    assert 'data-testid="charges-deferred"' in bare.content.decode()
    assert 'hx-trigger="load, click"' in bare.content.decode()
    assert money(page, "reactivation-invoice-total") == Decimal("30.00")
    assert money(page, "total-due-now") == Decimal("30.00")
    assert "Jul 10, 2026" in text_of(page)
    response, _ = submit(client, reactivate_url(sub), query={"preview": "1"})

    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_start, sub.current_term_end) == (
        S.LIVE,
        D(2026, 6, 10),
        D(2026, 7, 10),
    )
    invoice = Invoice.objects.get(subscription=sub, period_start=D(2026, 6, 10))
    assert (invoice.total, invoice.status) == (Decimal("30.00"), InvoiceStatus.PAID)
    assert Event.objects.filter(subscription=sub, kind="subscription.reactivated").exists()
    assert f"Invoice {invoice.number} for USD 30.00: USD 30.00 was charged" in text_of(
        client.get(response["Location"])
    )


def test_reactivate_on_another_plan_preview_shows_both_steps_and_matches(
    client, admin, plans, travel
):
    sub = cancelled_by_customer(travel, admin.customer, plans["basic"])
    travel(D(2026, 6, 10))
    before = state(sub)

    page = client.get(reactivate_url(sub), {"plan": "pro"})
    partial = client.get(reactivate_url(sub), {"plan": "pro"}, headers={"HX-Request": "true"})
    assert state(sub) == before, "the preview left something behind"
    response, _ = submit(client, reactivate_url(sub), query={"plan": "pro"})

    assert "<html" not in partial.content.decode()
    assert 'id="reactivation"' in partial.content.decode()
    assert money(page, "reactivation-invoice-total") == Decimal("10.00")
    assert money(page, "change-invoice-total") == Decimal("20.00")
    assert money(page, "total-due-now") == Decimal("30.00")
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.plan.code, sub.status, sub.current_term_end) == ("pro", S.LIVE, D(2026, 7, 10))
    first = Invoice.objects.get(
        subscription=sub, kind=InvoiceKind.RECURRING, period_start=D(2026, 6, 10)
    )
    second = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert (first.total, second.total) == (Decimal("10.00"), Decimal("20.00"))
    assert first.status == second.status == InvoiceStatus.PAID
    assert sub.auto_charge  # the preview's temporary switch never survived


def test_reactivate_plan_choice_hidden_when_plan_changes_off(client, admin, plans, travel):
    set_preference(allow_plan_change=False)
    sub = cancelled_by_customer(travel, admin.customer, plans["basic"])

    page = client.get(reactivate_url(sub), {"plan": "pro"})

    assert 'name="plan"' not in page.content.decode().replace('type="hidden" name="plan"', "")
    assert money(page, "total-due-now") == Decimal("10.00")


def test_reactivate_downgrade_refused_next_to_plan(client, admin, plans, travel):
    set_preference(allow_downgrades=False)
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    before = state(sub)

    page = client.get(reactivate_url(sub), {"plan": "basic"})

    assert re.search(r'id="id_plan-errors"[^>]*>Downgrades cannot be made', page.content.decode())
    assert 'data-testid="confirm"' not in page.content.decode()
    assert state(sub) == before


def test_reactivate_in_term_pays_open_invoice_first_then_keeps_billing_date(
    client, admin, plans, travel
):
    sub, invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    good = card(admin.customer)
    invoices = Invoice.objects.count()

    page = client.get(reactivate_url(sub))
    response, _ = submit(client, reactivate_url(sub), method=str(good.public_id))

    assert money(page, "invoice-balance") == Decimal("30.00")
    assert money(page, "total-due-now") == Decimal("30.00")
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_end, sub.anchor_date) == (S.LIVE, TERM_END, START)
    assert Invoice.objects.count() == invoices  # no new invoice
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert sub.payment_method_id == good.pk  # the card that paid now pays the subscription


def test_reactivate_in_term_with_new_card_saves_it_for_the_subscription(
    client, admin, plans, travel
):
    sub, invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    reauthenticate(client)

    response, _ = submit(client, reactivate_url(sub), **new_card("5555555555554444"))

    assert response.status_code == 302
    sub.refresh_from_db()
    assert sub.status == S.LIVE
    assert sub.payment_method.last4 == "4444" and sub.payment_method.is_default
    assert invoice_balance(invoice)[2] == 0


def test_reactivate_in_term_declined_card_shows_message_and_changes_nothing(
    client, admin, plans, travel
):
    sub, _invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    reauthenticate(client)
    before = state(sub)

    response, _ = submit(client, reactivate_url(sub), **new_card(DECLINES))

    assert response.status_code == 200
    assert "Your card was declined." in text_of(response)
    assert state(sub) == before


def test_reactivate_in_term_without_payment_requirement_leaves_invoice_due(
    client, admin, plans, travel
):
    set_preference(reactivation_requires_payment=False)
    sub, invoice = dunning_cancelled(travel, admin.customer, plans["pro"])

    page = client.get(reactivate_url(sub))
    response, _ = submit(client, reactivate_url(sub))

    assert "stays due after reactivating" in text_of(page)
    assert 'name="number"' not in page.content.decode()
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_end) == (S.LIVE, TERM_END)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_reactivate_double_submit_reactivates_once(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    travel(D(2026, 6, 10))

    first, data = submit(client, reactivate_url(sub), query={"preview": "1"})
    second = client.post(reactivate_url(sub), data)

    assert first.status_code == second.status_code == 302
    assert Invoice.objects.filter(subscription=sub, period_start=D(2026, 6, 10)).count() == 1
    assert Event.objects.filter(subscription=sub, kind="subscription.reactivated").count() == 1


def test_reactivate_in_term_double_submit_charges_once(client, admin, plans, travel):
    sub, _invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    good = card(admin.customer)
    charges = SandboxCharge.objects.count()

    first, data = submit(client, reactivate_url(sub), method=str(good.public_id))
    other = Client()  # another session has no memory of the first: only the key protects
    sign_in(other, admin.customer, role="admin")
    second = other.post(reactivate_url(sub), data)

    assert first.status_code == 302 and second.status_code in (200, 302)
    assert SandboxCharge.objects.count() == charges + 1
    assert Event.objects.filter(subscription=sub, kind="subscription.reactivated").count() == 1


def test_reactivate_confirm_refused_when_figures_changed(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    page = client.get(reactivate_url(sub), {"preview": "1"})
    plans["pro"].price = Decimal("35.00")
    plans["pro"].save()
    before = state(sub)

    response = client.post(
        reactivate_url(sub),
        {
            name: hidden_value(page.content.decode(), name)
            for name in ("figures", "idempotency_key", "token", "plan")
        },
    )

    assert "The figures changed, please review." in text_of(response)
    assert money(response, "total-due-now") == Decimal("35.00")
    assert state(sub) == before


def test_reactivate_live_subscription_has_nothing_to_reactivate(client, admin, plans, travel):
    travel(START)
    card(admin.customer)
    sub = subscription_create(customer=admin.customer, plan=plans["pro"]).subscription
    before = state(sub)

    page = client.get(reactivate_url(sub))
    response = client.post(
        reactivate_url(sub), {"figures": "x", "idempotency_key": "pay_" + "0" * 32}
    )

    assert 'data-testid="flow-unavailable"' in page.content.decode()
    assert response.status_code == 200
    assert state(sub) == before


def test_reactivate_merchants_cancellation_is_refused_staff_may(client, admin, plans, travel):
    travel(START)
    card(admin.customer)
    sub = subscription_create(customer=admin.customer, plan=plans["pro"]).subscription
    travel(START + datetime.timedelta(days=2))
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW, reason=CancelReason.MERCHANT)
    travel(D(2026, 6, 10))
    before = state(sub)

    detail = client.get(reverse("portal:subscription_detail", args=[sub.public_id])).text
    page = client.get(reactivate_url(sub))
    response = client.post(
        reactivate_url(sub), {"figures": "x", "idempotency_key": "pay_" + "0" * 32}
    )

    assert 'data-testid="merchant-cancelled"' in detail and reactivate_url(sub) not in detail
    assert "We cancelled this subscription: please contact us to restore it." in text_of(page)
    assert response.status_code == 200
    assert state(sub) == before
    with pytest.raises(NotAllowed):
        subscription_reactivate(subscription=sub, actor=admin.user)
    assert state(sub) == before
    subscription_reactivate(subscription=sub, actor=UserFactory(staff=True))
    assert Subscription.objects.get(pk=sub.pk).status == S.LIVE


def test_reactivate_preference_off_is_404(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    set_preference(allow_reactivation=False)

    assert client.get(reactivate_url(sub)).status_code == 404
    assert client.post(reactivate_url(sub)).status_code == 404


def test_reactivate_subscriptions_module_off_is_404(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, admin.customer, plans["pro"])
    set_preference(show_subscriptions=False)

    assert client.get(reactivate_url(sub)).status_code == 404


@pytest.mark.parametrize("role", ["viewer", "payer"])
def test_reactivate_needs_admin_role(client, organization, plans, travel, role):
    contact = sign_in(client, role=role)
    sub = cancelled_by_customer(travel, contact.customer, plans["pro"])
    before = state(sub)

    assert client.get(reactivate_url(sub)).status_code == 403
    assert client.post(reactivate_url(sub)).status_code == 403
    assert state(sub) == before


def test_reactivate_other_customers_subscription_is_404(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, CustomerFactory(), plans["pro"])

    assert client.get(reactivate_url(sub)).status_code == 404
    assert client.post(reactivate_url(sub)).status_code == 404


def test_reactivate_without_csrf_token_is_refused(organization, plans, travel):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(browser, role="admin")
    sub = cancelled_by_customer(travel, contact.customer, plans["pro"])
    before = state(sub)

    assert browser.post(reactivate_url(sub), {}).status_code == 403
    assert state(sub) == before


def test_reactivate_on_the_day_its_term_was_invoiced_is_refused_cleanly(
    client, admin, plans, travel
):
    travel(START)
    card(admin.customer)
    sub = subscription_create(customer=admin.customer, plan=plans["basic"]).subscription
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    before = state(sub)

    page = client.get(reactivate_url(sub), {"plan": "pro"})
    response = client.post(reactivate_url(sub), {"figures": "x", "plan": "pro"})

    assert page.status_code == response.status_code == 200
    assert "cannot start today" in text_of(page)
    assert 'data-testid="confirm"' not in page.content.decode()
    assert state(sub) == before


def test_reactivate_get_changes_nothing(client, admin, plans, travel):
    sub = cancelled_by_customer(travel, admin.customer, plans["basic"])
    before = state(sub)

    client.get(reactivate_url(sub), {"plan": "pro", "figures": "x"})
    client.get(reactivate_url(sub))

    assert state(sub) == before


# ----------------------------------------------------------------------------- recover
def test_recover_past_due_new_card_pays_invoice_and_becomes_subscription_card(
    client, admin, plans, travel
):
    sub, invoice = past_due(travel, admin.customer, plans["pro"])
    reauthenticate(client)

    page = client.get(recover_url(sub))
    response, _ = submit(client, recover_url(sub), **new_card())

    assert money(page, "total-due-now") == Decimal("30.00")
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_end) == (S.LIVE, TERM_END)
    assert sub.payment_method.last4 == "4242" and sub.payment_method.is_default
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    text = text_of(client.get(response["Location"]))
    assert "Payment of USD 30.00 received" in text


def test_recover_dunning_cancelled_pays_and_reactivates_in_one_step(client, admin, plans, travel):
    sub, invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    reauthenticate(client)
    invoices = Invoice.objects.count()

    page = client.get(recover_url(sub))
    response, _ = submit(client, recover_url(sub), **new_card())

    assert "Pay USD 30.00 and reactivate" in text_of(page)
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.status, sub.current_term_start, sub.current_term_end) == (S.LIVE, START, TERM_END)
    assert sub.anchor_date == START
    assert Invoice.objects.count() == invoices
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert sub.payment_method.last4 == "4242"
    assert Event.objects.filter(subscription=sub, kind="subscription.reactivated").count() == 1


def test_recover_with_declining_card_shows_message_and_changes_nothing_else(
    client, admin, plans, travel
):
    sub, _invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    reauthenticate(client)
    before = state(sub)

    response, _ = submit(client, recover_url(sub), **new_card(DECLINES))

    assert response.status_code == 200
    assert "Your card was declined." in text_of(response)
    assert state(sub) == before
    sub.refresh_from_db()
    assert sub.status == S.CANCELLED and sub.payment_method.last4 == "0341"


def test_recover_declined_then_good_card_succeeds_with_a_fresh_key(client, admin, plans, travel):
    sub, invoice = past_due(travel, admin.customer, plans["pro"])
    reauthenticate(client)

    declined, _ = submit(client, recover_url(sub), **new_card(DECLINES))
    data = {
        name: hidden_value(declined.content.decode(), name)
        for name in ("figures", "idempotency_key", "token")
    }
    response = client.post(recover_url(sub), {**data, **new_card()})

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


def test_recover_double_submit_charges_once(client, admin, plans, travel):
    sub, _invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    reauthenticate(client)
    charges = SandboxCharge.objects.count()

    first, data = submit(client, recover_url(sub), **new_card())
    second = client.post(recover_url(sub), data)

    assert first.status_code == second.status_code == 302
    assert SandboxCharge.objects.count() == charges + 1
    assert PaymentMethod.objects.filter(customer=admin.customer, last4="4242").count() == 1


def test_recover_new_card_needs_recent_sign_in_confirmation(client, admin, plans, travel):
    sub, _invoice = past_due(travel, admin.customer, plans["pro"])
    before = state(sub)

    page = client.get(recover_url(sub))
    response, _ = submit(client, recover_url(sub), **new_card())

    assert 'name="number"' not in page.content.decode()
    assert "confirm it's you" in text_of(page).replace("’", "'")
    assert response.status_code == 200
    assert state(sub) == before


def test_recover_as_payer_pays_but_leaves_reactivation_to_an_admin(
    client, organization, plans, travel
):
    payer = sign_in(client, role="payer")
    sub, invoice = dunning_cancelled(travel, payer.customer, plans["pro"])
    good = card(payer.customer)

    page = client.get(recover_url(sub))
    response, _ = submit(client, recover_url(sub), method=str(good.public_id))

    assert "only an account admin can reactivate" in text_of(page)
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert Subscription.objects.get(pk=sub.pk).status == S.CANCELLED


def test_recover_with_nothing_to_do_says_so(client, admin, plans, travel):
    travel(START)
    card(admin.customer)
    sub = subscription_create(customer=admin.customer, plan=plans["pro"]).subscription
    before = state(sub)

    page = client.get(recover_url(sub))
    client.post(recover_url(sub), {"figures": "x", "idempotency_key": "pay_" + "1" * 32})

    assert 'data-testid="nothing-to-recover"' in page.content.decode()
    assert state(sub) == before


def test_recover_payments_preference_off_is_404(client, admin, plans, travel):
    sub, _invoice = past_due(travel, admin.customer, plans["pro"])
    set_preference(allow_payments=False)

    assert client.get(recover_url(sub)).status_code == 404


def test_recover_viewer_is_403(client, organization, plans, travel):
    viewer = sign_in(client, role="viewer")
    sub, _invoice = past_due(travel, viewer.customer, plans["pro"])

    assert client.get(recover_url(sub)).status_code == 403
    assert client.post(recover_url(sub)).status_code == 403


def test_recover_other_customers_subscription_is_404(client, admin, plans, travel):
    sub, _invoice = past_due(travel, CustomerFactory(), plans["pro"])

    assert client.get(recover_url(sub)).status_code == 404


def test_recover_requires_sign_in(plans, travel):
    sub, _invoice = past_due(travel, CustomerFactory(), plans["pro"])

    response = Client().get(recover_url(sub))

    assert response.status_code == 302 and "/accounts/" in response["Location"]


def test_recover_card_number_is_never_echoed_or_stored(client, admin, plans, travel):
    sub, _invoice = past_due(travel, admin.customer, plans["pro"])
    reauthenticate(client)

    response, _ = submit(client, recover_url(sub), **{**new_card(), "cvc": "12"})

    assert response.status_code == 200
    assert GOOD not in response.content.decode()
    assert "Enter the 3 or 4 digits" in text_of(response)


def test_recover_page_query_count_is_small_and_constant(organization, plans, travel):
    counts = []
    for extra in (1, 40):
        browser = Client()
        contact = sign_in(browser, role="admin")
        sub, _invoice = past_due(travel, contact.customer, plans["pro"])
        for _ in range(extra):
            card(contact.customer)
            SubscriptionFactory(customer=contact.customer, plan=plans["basic"])
        url = recover_url(sub)
        browser.get(url)
        with CaptureQueriesContext(connection) as queries:
            assert browser.get(url).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 10, counts


def test_reactivate_pages_query_count_is_small_and_constant(organization, plans, travel):
    counts = []
    for extra in (1, 40):
        browser = Client()
        contact = sign_in(browser, role="admin")
        in_term, _invoice = dunning_cancelled(travel, contact.customer, plans["pro"])
        new_term = cancelled_by_customer(travel, contact.customer, plans["basic"])
        for _ in range(extra):
            card(contact.customer)
            SubscriptionFactory(customer=contact.customer, plan=plans["basic"])
        row = []
        for url in (reactivate_url(in_term), reactivate_url(new_term)):
            browser.get(url)
            with CaptureQueriesContext(connection) as queries:
                assert browser.get(url).status_code == 200
            row.append(len(queries))
        counts.append(row)
    assert counts[0] == counts[1], counts
    assert max(counts[0]) <= 10, counts


# ----------------------------------------------------------------------------- email
def test_payment_failed_email_links_to_the_recovery_page(admin, plans, travel, settings):
    settings.SITE_URL = "https://billing.example.test"
    sub, _invoice = past_due(travel, admin.customer, plans["pro"])
    notification = Notification.objects.get(kind="payment_failed", subscription=sub)

    notification_send(notification_id=notification.pk)

    message = mail.outbox[-1]
    link = f"https://billing.example.test{recover_url(sub)}"
    assert link in message.body
    assert f'href="{link}"' in message.alternatives[0][0]


def test_payment_failed_email_after_dunning_cancel_says_so_and_links_recovery(
    admin, plans, travel, settings
):
    settings.SITE_URL = "https://billing.example.test"
    sub, _invoice = dunning_cancelled(travel, admin.customer, plans["pro"])
    notification = Notification.objects.get(kind="payment_failed", subscription=sub)

    notification_send(notification_id=notification.pk)

    body = mail.outbox[-1].body
    assert "subscription was cancelled after the last retry" in body
    assert "before May 5, 2026 and it is reactivated with the same billing date" in body
    assert f"https://billing.example.test{recover_url(sub)}" in body
    assert "stays active while we retry" not in body
