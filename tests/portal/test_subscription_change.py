"""The change page: plan, billing frequency, quantity, addons and coupon, now (prorated) or at
the end of the term, with a live preview computed by the service's dry run; cancelling a
scheduled change; and every refusal (preferences, roles, scope, status, figures changed).
"""

import datetime
import re
from decimal import Decimal
from html import unescape

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.enums import (
    ChangeTiming,
    CreditNoteReason,
    InvoiceKind,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.models import (
    CreditNote,
    Event,
    Invoice,
    Payment,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
)
from billing.services.subscriptions import (
    ChangeRequest,
    subscription_cancel,
    subscription_change,
    subscription_create,
)
from portal.models import PortalPreferences
from tests.factories import (
    AddonFactory,
    CouponFactory,
    CustomerFactory,
    PlanFactory,
    ProductFactory,
    SubscriptionFactory,
)
from tests.portal.payments_support import (
    hidden_value,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

S = SubscriptionStatus
D = datetime.date
START, CHANGE_DAY = D(2026, 4, 5), D(2026, 4, 15)  # a 30-day term, 20 days left on the change day


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def travel():
    """Freeze the clock at noon (UTC) of a day; each call moves it."""
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
        "pro-yearly": PlanFactory(
            product=product,
            code="pro-yearly",
            name="Pro yearly",
            price=Decimal("300.00"),
            yearly=True,
        ),
        "team": PlanFactory(
            product=product,
            code="team",
            name="Team",
            price=Decimal("20.00"),
            min_quantity=2,
            max_quantity=10,
        ),
    }


@pytest.fixture
def admin(client, organization):
    return sign_in(client, role="admin")


def subscribe(travel, customer, plan, *, start=START, quantity=1, **kwargs) -> Subscription:
    travel(start)
    if not customer.payment_methods.exists():
        saved_card(customer)
    outcome = subscription_create(customer=customer, plan=plan, quantity=quantity, **kwargs)
    return outcome.subscription


def url_of(subscription) -> str:
    return reverse("portal:subscription_change", args=[subscription.public_id])


def preview(client, subscription, **fields):
    """The page as the "Preview" button (no JavaScript) shows it for these choices."""
    return client.post(url_of(subscription), {"action": "preview", **fields})


def confirm(client, subscription, **fields):
    """Preview, then confirm with the figures and token that preview carried."""
    shown = preview(client, subscription, **fields)
    assert shown.status_code == 200
    html = shown.content.decode()
    data = {
        "action": "confirm",
        "figures": hidden_value(html, "figures"),
        "token": hidden_value(html, "token"),
        **fields,
    }
    return client.post(url_of(subscription), data), data


def field_error(response, name: str) -> str:
    """The error text shown next to a field (its ``id_<name>-errors`` element)."""
    match = re.search(rf'id="id_{name}-errors"[^>]*>([^<]*)<', response.content.decode())
    return unescape(match.group(1)).strip() if match else ""


def money(response, testid: str) -> Decimal:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', response.content.decode())
    assert match, f"no {testid} on the page"
    return Decimal(match.group(1).replace("USD", "").replace(",", "").replace("−", "-").strip())


def state(subscription) -> tuple:
    sub = Subscription.objects.get(pk=subscription.pk)
    return (
        sub.plan_id,
        sub.quantity,
        sub.status,
        sub.current_term_start,
        sub.current_term_end,
        Invoice.objects.count(),
        CreditNote.objects.count(),
        Payment.objects.count(),
        ScheduledChange.objects.count(),
        SubscriptionAddon.objects.count(),
        SubscriptionCoupon.objects.count(),
        Event.objects.count(),
    )


# ----------------------------------------------------------------------------- the page
def test_change_page_get_shows_current_configuration_and_offered_plans(
    client, admin, plans, travel
):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    response = client.get(url_of(sub))

    assert response.status_code == 200
    text = text_of(response)
    assert "Basic × 1" in text
    assert "Pro — USD 30.00 per month" in text
    assert "Pro yearly — USD 300.00 per year" in text
    assert 'hx-post="' in response.content.decode()
    assert 'name="action" value="preview"' in response.content.decode()
    assert 'data-testid="confirm"' not in response.content.decode()  # nothing previewed yet


def test_change_get_with_choices_in_query_changes_nothing(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    response = client.get(url_of(sub), {"plan": "pro", "action": "confirm", "quantity": 3})

    assert response.status_code == 200
    assert state(sub) == before


def test_change_preview_button_without_javascript_shows_summary_and_confirm(
    client, admin, plans, travel
):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    response = preview(client, sub, plan="pro", quantity=1)

    assert response.status_code == 200
    assert "<html" in response.content.decode()
    assert money(response, "due-now") == Decimal("13.33")  # 20/30 × (30 − 10)
    assert money(response, "next-amount") == Decimal("30.00")
    assert 'data-testid="confirm"' in response.content.decode()
    assert state(sub) == before


def test_change_live_preview_htmx_returns_only_the_form_with_summary(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    response = client.post(
        url_of(sub), {"plan": "pro", "quantity": 1, "preview": "1"}, headers={"HX-Request": "true"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert html.lstrip().startswith('<form id="change-form"')
    assert money(response, "due-now") == Decimal("13.33")
    assert 'hx-swap-oob="true"' in html  # the polite status line for screen readers
    assert "HX-Request" in response["Vary"]


def test_change_live_preview_never_confirms_even_with_confirm_action(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    shown = preview(client, sub, plan="pro", quantity=1)
    before = state(sub)

    client.post(
        url_of(sub),
        {
            "plan": "pro",
            "quantity": 1,
            "preview": "1",
            "action": "confirm",
            "figures": hidden_value(shown.content.decode(), "figures"),
        },
        headers={"HX-Request": "true"},
    )

    assert state(sub) == before


# ----------------------------------------------------------------------------- now
def test_change_upgrade_now_confirm_invoices_charges_card_and_reports(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro", quantity=1)

    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.plan.code, sub.status) == ("pro", S.LIVE)
    assert (sub.current_term_start, sub.current_term_end) == (START, D(2026, 5, 5))
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert invoice.total == Decimal("13.33")
    assert invoice.status == InvoiceStatus.PAID
    payment = Payment.objects.get(allocations__invoice=invoice)
    assert (payment.status, payment.amount) == (PaymentStatus.SUCCEEDED, Decimal("13.33"))
    event = Event.objects.get(subscription=sub, kind="subscription.changed")
    assert event.data["before"]["plan"] == "basic" and event.data["after"]["plan"] == "pro"
    assert (event.actor_user, event.actor_kind) == (admin.user, "customer")
    page = client.get(response["Location"])
    text = text_of(page)
    assert f"Invoice {invoice.number} for USD 13.33: USD 13.33 was charged to Visa" in text


def test_change_downgrade_now_issues_credit_note(client, admin, plans, travel):
    set_preference(downgrade_timing=ChangeTiming.NOW)
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)

    shown = preview(client, sub, plan="basic", quantity=1)
    assert money(shown, "credit") == Decimal("13.33")
    response, _ = confirm(client, sub, plan="basic", quantity=1)

    assert response.status_code == 302
    note = CreditNote.objects.get(subscription=sub)
    assert (note.amount, note.reason) == (Decimal("13.33"), CreditNoteReason.PRORATION)
    assert not Invoice.objects.filter(subscription=sub, kind=InvoiceKind.PRORATION).exists()
    assert Subscription.objects.get(pk=sub.pk).plan.code == "basic"
    assert f"Credit note {note.number} for USD 13.33" in text_of(client.get(response["Location"]))


def test_change_billing_frequency_monthly_to_yearly_starts_new_term(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro-yearly", quantity=1)

    assert response.status_code == 302
    sub.refresh_from_db()
    assert sub.plan.code == "pro-yearly"
    assert (sub.current_term_start, sub.current_term_end) == (CHANGE_DAY, D(2027, 4, 15))
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert invoice.total == Decimal("300.00") - Decimal("20.00")  # credit for 20 of 30 days


def test_change_frequency_hidden_and_refused_when_preference_off(client, admin, plans, travel):
    set_preference(allow_frequency_change=False)
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)
    before = state(sub)

    page = client.get(url_of(sub))
    response = preview(client, sub, plan="pro-yearly", quantity=1)

    assert "Pro yearly" not in text_of(page)
    assert field_error(response, "plan") == "That plan is not available for a change."
    assert state(sub) == before


def test_change_quantity_and_addons_now(client, admin, plans, travel):
    seats = AddonFactory(code="seats", name="Seats", price=Decimal("5.00"))
    support = AddonFactory(code="support", name="Support", price=Decimal("3.00"))
    sub = subscribe(travel, admin.customer, plans["pro"], addons={"support": 1})
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro", quantity=2, addon_seats=3, addon_support=0)

    assert response.status_code == 302
    sub.refresh_from_db()
    assert sub.quantity == 2
    assert {a.addon.code: a.quantity for a in sub.addons.select_related("addon")} == {"seats": 3}
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    # old 30 + 3 = 33, new 60 + 15 = 75: 20/30 of each, rounded separately
    assert invoice.total == Decimal("50.00") - Decimal("22.00")
    assert seats.pk and support.pk


def test_change_coupon_applies_with_the_change(client, admin, plans, travel):
    CouponFactory(code="TENOFF", percent_off=Decimal("10"))
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro", quantity=1, coupon="tenoff")

    assert response.status_code == 302
    assert SubscriptionCoupon.objects.get(subscription=sub).coupon.code == "TENOFF"
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert invoice.total == Decimal("18.00") - Decimal("6.67")


# ----------------------------------------------------------------------------- term end
def test_change_downgrade_default_schedules_it_for_term_end(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)
    invoices = Invoice.objects.count()

    shown = preview(client, sub, plan="basic", quantity=1)
    response, _ = confirm(client, sub, plan="basic", quantity=1)

    assert "at the end of the term, on May 5, 2026" in text_of(shown)
    assert money(shown, "due-now") == 0
    assert response.status_code == 302
    change = ScheduledChange.objects.get(subscription=sub)
    assert (change.plan.code, change.quantity) == ("basic", 1)
    assert Invoice.objects.count() == invoices
    assert Subscription.objects.get(pk=sub.pk).plan.code == "pro"
    page = client.get(url_of(sub))
    assert "On May 5, 2026 your subscription changes to Basic × 1" in text_of(page)


def test_change_timing_choice_lets_the_customer_schedule_an_upgrade(client, admin, plans, travel):
    set_preference(upgrade_timing="choice")
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    shown = preview(client, sub, plan="pro", quantity=1)
    later = preview(client, sub, plan="pro", quantity=1, timing=ChangeTiming.TERM_END)
    response, _ = confirm(client, sub, plan="pro", quantity=1, timing=ChangeTiming.TERM_END)

    assert 'id="id_timing_now" value="now" checked' in shown.content.decode()
    assert money(shown, "due-now") == Decimal("13.33")
    assert money(later, "due-now") == 0
    assert response.status_code == 302
    assert ScheduledChange.objects.filter(subscription=sub, plan__code="pro").exists()


def test_change_fixed_timing_ignores_a_posted_timing(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])  # upgrades: now, fixed
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro", quantity=1, timing=ChangeTiming.TERM_END)

    assert response.status_code == 302
    assert not ScheduledChange.objects.exists()
    assert Subscription.objects.get(pk=sub.pk).plan.code == "pro"


def test_change_at_term_end_refused_on_a_non_renewing_subscription(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)
    subscription_cancel(subscription=sub, timing=ChangeTiming.TERM_END)
    before = state(sub)

    response = preview(client, sub, plan="basic", quantity=1)

    assert "a change at the end of the term would never apply" in text_of(response)
    assert 'data-testid="confirm"' not in response.content.decode()
    assert state(sub) == before


def test_scheduled_change_cancel_removes_it_and_nothing_else(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    travel(CHANGE_DAY)
    subscription_change(
        subscription=sub, request=ChangeRequest(plan=plans["basic"]), timing=ChangeTiming.TERM_END
    )
    url = reverse("portal:scheduled_change_cancel", args=[sub.public_id])

    assert client.get(url).status_code == 405
    response = client.post(url, {"next": url_of(sub)})

    assert response.status_code == 302 and response["Location"] == url_of(sub)
    assert not ScheduledChange.objects.exists()
    assert Subscription.objects.get(pk=sub.pk).plan.code == "pro"
    assert Event.objects.filter(subscription=sub, kind="subscription.change_unscheduled").exists()
    assert "The scheduled change was cancelled" in text_of(client.get(url_of(sub)))


def test_scheduled_change_cancel_ignores_an_offsite_next(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    subscription_change(
        subscription=sub, request=ChangeRequest(plan=plans["basic"]), timing=ChangeTiming.TERM_END
    )
    url = reverse("portal:scheduled_change_cancel", args=[sub.public_id])

    response = client.post(url, {"next": "https://evil.example/"})

    assert response.status_code == 302
    assert response["Location"].startswith("/portal/")


def test_scheduled_change_cancel_without_one_shows_message(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["pro"])
    url = reverse("portal:scheduled_change_cancel", args=[sub.public_id])

    response = client.post(url, {"next": url_of(sub)}, follow=True)

    assert "There is no scheduled change to cancel." in text_of(response)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "name",
    [
        "allow_plan_change",
        "allow_frequency_change",
        "allow_quantity_change",
        "allow_addon_change",
        "allow_coupons",
    ],
)
def test_change_every_change_preference_off_is_404(client, admin, plans, travel, name):
    sub = subscribe(travel, admin.customer, plans["basic"])
    set_preference(
        allow_plan_change=False,
        allow_frequency_change=False,
        allow_quantity_change=False,
        allow_addon_change=False,
        allow_coupons=False,
    )
    assert client.get(url_of(sub)).status_code == 404
    assert client.post(url_of(sub), {"plan": "pro", "action": "preview"}).status_code == 404
    set_preference(**{name: True})
    assert client.get(url_of(sub)).status_code == 200


def test_change_subscriptions_module_off_is_404(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    set_preference(show_subscriptions=False)

    assert client.get(url_of(sub)).status_code == 404
    scheduled = reverse("portal:scheduled_change_cancel", args=[sub.public_id])
    assert client.post(scheduled).status_code == 404


def test_change_one_preference_off_hides_its_field_and_ignores_it(client, admin, plans, travel):
    set_preference(allow_coupons=False, allow_quantity_change=False)
    CouponFactory(code="TENOFF")
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    page = client.get(url_of(sub))
    response = preview(client, sub, plan="basic", quantity=5, coupon="TENOFF")

    assert 'name="coupon"' not in page.content.decode()
    assert 'name="quantity"' not in page.content.decode()
    assert 'data-testid="summary-empty"' in response.content.decode()  # nothing to change


def test_change_plan_not_in_allowed_plans_refused_next_to_plan(client, admin, plans, travel):
    preferences = PortalPreferences.load()
    preferences.allowed_plans.set([plans["pro-yearly"]])
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    page = client.get(url_of(sub))
    response = preview(client, sub, plan="pro", quantity=1)

    assert "Pro — USD 30.00" not in text_of(page)
    assert "Pro yearly" in text_of(page)
    assert field_error(response, "plan") == "That plan is not available for a change."
    assert 'data-testid="confirm"' not in response.content.decode()
    assert state(sub) == before


def test_change_inactive_plan_is_not_offered(client, admin, plans, travel):
    PlanFactory(product=plans["pro"].product, code="legacy", name="Legacy", inactive=True)
    sub = subscribe(travel, admin.customer, plans["basic"])

    response = preview(client, sub, plan="legacy", quantity=1)

    assert "Legacy" not in text_of(client.get(url_of(sub)))
    assert field_error(response, "plan") == "That plan is not available for a change."


def test_change_upgrade_refused_when_upgrades_off(client, admin, plans, travel):
    set_preference(allow_upgrades=False)
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    response, _ = confirm(client, sub, plan="pro", quantity=1)

    assert response.status_code == 200
    assert field_error(response, "plan").startswith("Upgrades cannot be made in the portal.")
    assert state(sub) == before


def test_change_downgrade_refused_when_downgrades_off(client, admin, plans, travel):
    set_preference(allow_downgrades=False)
    sub = subscribe(travel, admin.customer, plans["pro"], quantity=3)
    travel(CHANGE_DAY)
    before = state(sub)

    plan_down = preview(client, sub, plan="basic", quantity=3)
    quantity_down = preview(client, sub, plan="pro", quantity=1)
    up = preview(client, sub, plan="pro", quantity=4)

    assert field_error(plan_down, "plan").startswith("Downgrades cannot be made in the portal.")
    assert field_error(quantity_down, "quantity").startswith("Downgrades cannot be made")
    assert 'data-testid="confirm"' in up.content.decode()
    assert state(sub) == before


def test_change_quantity_out_of_range_refused_next_to_quantity(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["team"], quantity=2)
    travel(CHANGE_DAY)
    before = state(sub)

    too_many = preview(client, sub, quantity=11)
    too_few = preview(client, sub, plan="team", quantity=1)

    assert field_error(too_many, "quantity") == "The Team plan allows at most 10."
    assert field_error(too_few, "quantity") == "The Team plan needs a quantity of at least 2."
    assert state(sub) == before


def test_change_expired_coupon_refused_next_to_coupon(client, admin, plans, travel):
    CouponFactory(code="OLD", expires_on=D(2026, 4, 1))
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    response, _ = confirm(client, sub, plan="pro", quantity=1, coupon="OLD")

    assert response.status_code == 200
    assert field_error(response, "coupon") == "The coupon OLD has expired."
    assert state(sub) == before


def test_change_unknown_coupon_refused_next_to_coupon(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])

    response = preview(client, sub, plan="basic", quantity=1, coupon="NOPE")

    assert field_error(response, "coupon") == "There is no coupon 'NOPE'."


def test_change_addon_not_on_new_plan_refused_next_to_addons(client, admin, plans, travel):
    seats = AddonFactory(code="seats", name="Seats")
    seats.applicable_plans.set([plans["pro"]])
    sub = subscribe(travel, admin.customer, plans["pro"], addons={"seats": 2})
    travel(CHANGE_DAY)
    set_preference(downgrade_timing=ChangeTiming.NOW)

    response = preview(client, sub, plan="basic", quantity=1, addon_seats=2)

    assert 'data-testid="addons-error"' in response.content.decode()
    assert "Seats is not available on the Basic plan." in text_of(response)


@pytest.mark.parametrize("status", ["cancelled", "paused", "past_due", "expired"])
def test_change_wrong_status_shows_message_and_changes_nothing(
    client, admin, plans, travel, status
):
    sub = SubscriptionFactory(customer=admin.customer, plan=plans["basic"], **{status: True})
    before = state(sub)

    page = client.get(url_of(sub))
    response = client.post(
        url_of(sub), {"action": "confirm", "plan": "pro", "quantity": 1, "figures": "x" * 64}
    )

    assert 'data-testid="change-unavailable"' in page.content.decode()
    assert 'id="change-form"' not in page.content.decode()
    assert response.status_code == 200
    assert state(sub) == before


def test_change_other_customers_subscription_is_404(client, admin, plans, travel):
    other = subscribe(travel, CustomerFactory(), plans["basic"])
    before = state(other)

    assert client.get(url_of(other)).status_code == 404
    assert client.post(url_of(other), {"plan": "pro", "action": "confirm"}).status_code == 404
    cancel = reverse("portal:scheduled_change_cancel", args=[other.public_id])
    assert client.post(cancel).status_code == 404
    assert state(other) == before


@pytest.mark.parametrize("role", ["viewer", "payer"])
def test_change_needs_admin_role(client, organization, plans, travel, role):
    contact = sign_in(client, role=role)
    sub = subscribe(travel, contact.customer, plans["basic"])
    before = state(sub)

    assert client.get(url_of(sub)).status_code == 403
    assert client.post(url_of(sub), {"plan": "pro", "action": "confirm"}).status_code == 403
    cancel = reverse("portal:scheduled_change_cancel", args=[sub.public_id])
    assert client.post(cancel).status_code == 403
    assert state(sub) == before


def test_change_signed_out_goes_to_login(plans, travel):
    sub = subscribe(travel, CustomerFactory(), plans["basic"])

    response = Client().get(url_of(sub))

    assert response.status_code == 302 and "/accounts/" in response["Location"]


def test_change_confirm_without_csrf_token_is_refused(organization, plans, travel):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(browser, role="admin")
    sub = subscribe(travel, contact.customer, plans["basic"])
    travel(CHANGE_DAY)
    before = state(sub)

    response = browser.post(url_of(sub), {"plan": "pro", "quantity": 1, "action": "confirm"})

    assert response.status_code == 403
    assert state(sub) == before


def test_change_confirm_refused_when_figures_changed(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    shown = preview(client, sub, plan="pro", quantity=1)
    plans["pro"].price = Decimal("33.00")  # the merchant changes the price meanwhile
    plans["pro"].save()
    before = state(sub)

    response = client.post(
        url_of(sub),
        {
            "action": "confirm",
            "plan": "pro",
            "quantity": 1,
            "figures": hidden_value(shown.content.decode(), "figures"),
            "token": hidden_value(shown.content.decode(), "token"),
        },
    )

    assert response.status_code == 200
    assert "The figures changed, please review." in text_of(response)
    assert money(response, "due-now") == Decimal("15.33")  # the fresh figures, to confirm again
    assert state(sub) == before


def test_change_confirm_of_other_choices_than_previewed_is_refused(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    shown = preview(client, sub, plan="pro", quantity=1)
    before = state(sub)

    response = client.post(
        url_of(sub),
        {
            "action": "confirm",
            "plan": "pro",
            "quantity": 2,
            "figures": hidden_value(shown.content.decode(), "figures"),
        },
    )

    assert "The figures changed, please review." in text_of(response)
    assert state(sub) == before


def test_change_double_submit_creates_one_change_and_one_invoice(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)

    first, data = confirm(client, sub, plan="pro", quantity=1)
    second = client.post(url_of(sub), data)

    assert first.status_code == second.status_code == 302
    assert Invoice.objects.filter(subscription=sub, kind=InvoiceKind.PRORATION).count() == 1
    assert Event.objects.filter(subscription=sub, kind="subscription.changed").count() == 1
    assert Payment.objects.filter(customer=admin.customer).count() == 2  # creation + change
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert invoice.number in text_of(client.get(second["Location"]))


def test_change_double_submit_from_another_session_changes_once(client, admin, plans, travel):
    sub = subscribe(travel, admin.customer, plans["basic"])
    travel(CHANGE_DAY)
    first, data = confirm(client, sub, plan="pro", quantity=1)
    other = Client()
    sign_in(other, admin.customer, role="admin")

    second = other.post(url_of(sub), data)

    assert first.status_code == 302 and second.status_code == 200
    assert Invoice.objects.filter(subscription=sub, kind=InvoiceKind.PRORATION).count() == 1


def test_change_declined_card_keeps_change_and_says_invoice_is_due(client, admin, plans, travel):
    travel(START)
    saved_card(admin.customer, "4000000000000341")
    sub = SubscriptionFactory(
        customer=admin.customer,
        plan=plans["basic"],
        start_date=START,
        current_term_end=D(2026, 5, 5),
        payment_method=admin.customer.payment_methods.get(),
    )
    travel(CHANGE_DAY)

    response, _ = confirm(client, sub, plan="pro", quantity=1)

    assert response.status_code == 302
    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert invoice.status == InvoiceStatus.OPEN
    text = text_of(client.get(response["Location"]))
    assert f"Invoice {invoice.number} for USD 13.33 could not be charged" in text


def test_change_in_trial_applies_at_once_free(client, admin, plans, travel):
    travel(START)
    saved_card(admin.customer)
    trial_plan = PlanFactory(product=plans["pro"].product, code="trial-basic", name="Trial basic")
    trial_plan.trial_days = 14
    trial_plan.save()
    sub = subscription_create(customer=admin.customer, plan=trial_plan).subscription
    assert sub.status == S.IN_TRIAL

    shown = preview(client, sub, plan="pro", quantity=1)
    response, _ = confirm(client, sub, plan="pro", quantity=1)

    assert "During your trial a change applies at once" in text_of(shown)
    assert money(shown, "due-now") == 0
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.plan.code, sub.status) == ("pro", S.IN_TRIAL)
    assert not Invoice.objects.filter(subscription=sub).exists()


def test_change_branch_subscription_visible_to_parent_admin(client, organization, plans, travel):
    parent = CustomerFactory()
    branch = CustomerFactory(parent=parent)
    sign_in(client, parent, role="admin")
    sub = subscribe(travel, branch, plans["basic"])
    hidden = subscribe(
        travel, CustomerFactory(parent=parent, visible_to_parent=False), plans["basic"]
    )

    assert client.get(url_of(sub)).status_code == 200
    assert client.get(url_of(hidden)).status_code == 404


# ----------------------------------------------------------------------------- queries
def count_queries(client, url) -> int:
    client.get(url)  # warm-up: cached settings rows, session
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_change_page_query_count_is_small_and_constant(organization, plans, travel):
    counts = []
    for extras in (1, 30):
        browser = Client()
        contact = sign_in(browser, role="admin")
        addons = {}
        for n in range(extras):
            AddonFactory(code=f"addon-{extras}-{n}")
            CouponFactory(code=f"coupon-{extras}-{n}")
            PlanFactory(product=plans["pro"].product, code=f"plan-{extras}-{n}")
            addons[f"addon-{extras}-{n}"] = 1
        sub = subscribe(travel, contact.customer, plans["pro"], addons=addons)
        for n in range(extras):
            SubscriptionCoupon.objects.create(
                subscription=sub, coupon=CouponFactory(code=f"extra-{extras}-{n}")
            )
            subscribe(travel, contact.customer, plans["basic"])
        subscription_change(
            subscription=sub,
            request=ChangeRequest(plan=plans["basic"], addons={}),
            timing=ChangeTiming.TERM_END,
        )
        counts.append(count_queries(browser, url_of(sub)))
    assert counts[0] == counts[1] <= 10, counts
