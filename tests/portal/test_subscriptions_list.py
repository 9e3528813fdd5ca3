"""The portal's subscription list and subscription page, as a customer's contact sees them."""

import datetime
import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from billing.enums import CancelReason, SubscriptionStatus
from billing.models import Event, Subscription, SubscriptionCoupon
from billing.services.subscriptions import (
    ChangeRequest,
    subscription_cancel,
    subscription_change,
    subscription_create,
    subscription_pause_schedule,
    subscription_set_auto_charge,
)
from tests.factories import (
    AddonFactory,
    ContactPersonFactory,
    CouponFactory,
    CustomerFactory,
    EventFactory,
    InvoiceFactory,
    PlanFactory,
    SubscriptionFactory,
)
from tests.portal.payments_support import (
    queries_for,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)
TODAY = NOW.date()
LIST_URL = reverse("portal:subscriptions")


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex")


@pytest.fixture
def family(organization):
    parent = CustomerFactory(display_name="Parent Co")
    branch = CustomerFactory(parent=parent, display_name="Visible Branch")
    hidden = CustomerFactory(parent=parent, visible_to_parent=False, display_name="Hidden Branch")
    return parent, branch, hidden


def detail_url(sub) -> str:
    return reverse("portal:subscription_detail", args=[sub.public_id])


def listed_plans(response) -> list[str]:
    """Plan names in the table's rows, top to bottom."""
    return re.findall(r'<a href="/portal/subscriptions/[0-9a-f-]{36}/">([^<]+)</a>', response.text)


def create(customer, plan, **options):
    return subscription_create(customer=customer, plan=plan, **options).subscription


# ----------------------------------------------------------------------------- list
def test_subscription_list_default_shows_own_subscriptions_newest_first(client, customer):
    older = SubscriptionFactory(
        customer=customer, plan=PlanFactory(name="Starter"), start_date=datetime.date(2025, 6, 1)
    )
    newer = SubscriptionFactory(customer=customer, plan=PlanFactory(name="Pro"), quantity=3)
    SubscriptionFactory(plan=PlanFactory(name="Someone Else's"))
    sign_in(client, customer, role="viewer")

    response = client.get(LIST_URL)

    assert response.status_code == 200
    assert listed_plans(response) == [newer.plan.name, older.plan.name]
    text = text_of(response)
    assert "Someone Else's" not in text
    assert "Live" in text and "Jun 1, 2025" in text
    assert '<th scope="col">Customer</th>' not in response.text


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("live", {"Live plan"}),
        ("in_trial", {"Trial plan"}),
        ("paused", {"Paused plan"}),
        ("ended", {"Cancelled plan"}),
        ("current", {"Live plan", "Trial plan", "Paused plan"}),
        ("", {"Live plan", "Trial plan", "Paused plan", "Cancelled plan"}),
    ],
)
def test_subscription_list_status_filter_returns_matching_subscriptions(
    client, customer, status, expected
):
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Live plan"))
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Trial plan"), in_trial=True)
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Paused plan"), paused=True)
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Cancelled plan"), cancelled=True)
    sign_in(client, customer, role="viewer")

    response = client.get(LIST_URL, {"status": status})

    assert set(listed_plans(response)) == expected


def test_subscription_list_plan_filter_offers_only_plans_in_use(client, customer):
    pro = PlanFactory(name="Pro", code="pro")
    SubscriptionFactory(customer=customer, plan=pro)
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Starter", code="starter"))
    PlanFactory(name="Unused", code="unused")
    sign_in(client, customer, role="viewer")

    response = client.get(LIST_URL, {"plan": "pro"})

    assert listed_plans(response) == ["Pro"]
    assert '<option value="starter">Starter</option>' in response.text
    assert "Unused" not in response.text


def test_subscription_list_unknown_filter_value_is_reported_not_fatal(client, customer):
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Pro"))
    sign_in(client, customer, role="viewer")

    response = client.get(LIST_URL, {"status": "bogus", "plan": "nope"})

    assert response.status_code == 200
    assert listed_plans(response) == ["Pro"]
    assert "Some filters were not applied" in response.text


def test_subscription_list_parent_sees_visible_branches_and_filters_by_branch(client, family):
    parent, branch, hidden = family
    SubscriptionFactory(customer=parent, plan=PlanFactory(name="Parent plan"))
    SubscriptionFactory(customer=branch, plan=PlanFactory(name="Branch plan"))
    SubscriptionFactory(customer=hidden, plan=PlanFactory(name="Hidden plan"))
    sign_in(client, parent, role="viewer")

    everything = client.get(LIST_URL)
    only_branch = client.get(LIST_URL, {"customer": str(branch.public_id)})
    hidden_branch = client.get(LIST_URL, {"customer": str(hidden.public_id)})

    assert set(listed_plans(everything)) == {"Parent plan", "Branch plan"}
    assert '<th scope="col">Customer</th>' in everything.text
    assert listed_plans(only_branch) == ["Branch plan"]
    # Not a valid choice: reported, and the list stays inside the scope.
    assert set(listed_plans(hidden_branch)) == {"Parent plan", "Branch plan"}


def test_subscription_list_htmx_request_returns_only_the_table(client, customer):
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Pro"))
    sign_in(client, customer, role="viewer")

    response = client.get(LIST_URL, {"status": "live"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert "<html" not in response.text and listed_plans(response) == ["Pro"]
    assert "HX-Request" in response["Vary"]


def test_subscription_list_pages_by_keyset_with_older_and_newer_links(client, customer):
    plan = PlanFactory(name="Seat")
    for n in range(30):
        SubscriptionFactory(customer=customer, plan=plan, start_date=TODAY - datetime.timedelta(n))
    sign_in(client, customer, role="viewer")

    first = client.get(LIST_URL)
    older_url = re.search(r'href="([^"]*older=[^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = client.get(older_url)

    assert len(listed_plans(first)) == 25 and len(listed_plans(second)) == 5
    assert "← Newer" in second.text and "newer=" in second.text


def test_subscription_list_preference_off_is_404_and_hidden_from_menu(client, customer):
    sign_in(client, customer, role="admin")
    set_preference(show_subscriptions=False)

    assert client.get(LIST_URL).status_code == 404
    assert client.get(detail_url(SubscriptionFactory(customer=customer))).status_code == 404
    assert 'href="/portal/subscriptions/"' not in client.get(reverse("portal:dashboard")).text


def test_subscription_list_query_count_is_small_and_constant(organization):
    counts = []
    for rows in (1, 40):
        browser = Client()
        contact = sign_in(browser, role="viewer")
        for _n in range(rows):
            SubscriptionFactory(customer=contact.customer, plan=PlanFactory())
        counts.append(queries_for(browser, LIST_URL))
    assert counts[0] == counts[1] <= 10, counts


def test_subscription_list_query_count_for_parent_is_constant(family):
    parent, branch, _hidden = family
    browser = Client()
    sign_in(browser, parent, role="viewer")
    SubscriptionFactory(customer=branch)
    small = queries_for(browser, LIST_URL)
    for _ in range(30):
        SubscriptionFactory(customer=parent, plan=PlanFactory())

    assert queries_for(browser, LIST_URL) == small <= 10


# ----------------------------------------------------------------------------- detail
@pytest.fixture
def rich_subscription(customer):
    """A live subscription with a card, an addon, a 3-cycle coupon, 10 % tax and a payment."""
    customer.tax_rate = Decimal("10")
    customer.save()
    saved_card(customer)
    plan = PlanFactory(name="Pro", price=Decimal("30.00"))
    AddonFactory(code="seats", name="Extra seats", price=Decimal("5.00"))
    coupon = CouponFactory(code="SAVE10", repeating=True)
    return create(customer, plan, quantity=2, addons={"seats": 3}, coupon_code=coupon.code)


def test_subscription_detail_shows_plan_addons_coupons_amounts_and_dates(
    client, customer, rich_subscription
):
    sign_in(client, customer, role="viewer")

    response = client.get(detail_url(rich_subscription))

    text = text_of(response)
    assert response.status_code == 200
    assert "Pro" in text and "billed every month" in text
    assert "Quantity 2" in text
    assert "Extra seats 3" in text
    # SAVE10 was used on the first invoice: two of its three cycles are left.
    assert "SAVE10 : 10% off for 3 billing cycles — 2 more billing cycles" in text
    # (2 × 30 + 3 × 5) = 75, less 10 % = 67.50 per month before tax.
    assert "USD 67.50 per month (before tax)" in text
    assert "Current term Jan 20, 2026 – Feb 19, 2026" in text
    assert "Next billing date Feb 20, 2026" in text
    # 67.50 plus 10 % tax.
    assert "Next amount USD 74.25 (tax included)" in text
    assert "Automatic payments On: Visa •••• 4242" in text
    assert "Live" in text


def test_subscription_detail_lists_its_invoices_with_links(client, customer, rich_subscription):
    invoice = rich_subscription.invoices.get()
    other = InvoiceFactory(customer=customer, number="NOT-THIS-SUB")
    sign_in(client, customer, role="viewer")

    response = client.get(detail_url(rich_subscription))

    link = reverse("portal:invoice_detail", args=[invoice.public_id])
    assert f'<a href="{link}">{invoice.number}</a>' in response.text
    assert other.number not in response.text
    assert "Paid" in text_of(response)


def test_subscription_detail_timeline_shows_events_with_actor_names_newest_first(
    client, customer, staff_user
):
    plan = PlanFactory(name="Pro")
    sub = create(customer, plan)  # the system creates it (actor None)
    admin = ContactPersonFactory(
        customer=customer, first_name="Grace", last_name="Hopper", with_login=True, admin=True
    )
    subscription_set_auto_charge(subscription=sub, enabled=False, actor=staff_user)
    subscription_cancel(subscription=sub, timing="term_end", actor=admin.user)
    sign_in(client, customer, role="viewer")

    response = client.get(detail_url(sub))

    items = re.findall(r'<li class="timeline-item">(.*?)</li>', response.text, re.S)
    texts = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", item)).strip() for item in items]
    assert len(texts) == Event.objects.filter(subscription=sub).count() >= 3
    assert "Cancellation scheduled for Feb 20, 2026 — Grace Hopper" in texts[0]
    assert "Automatic payments turned off — Northwind Cloud staff" in texts[1]
    assert "Subscription to Pro created (live) — Automatic (system)" in texts[-1]
    assert "Jan 20, 2026, 12:00" in texts[0]


def test_subscription_detail_timeline_is_cut_after_100_events_with_a_link_to_all(client, customer):
    sub = SubscriptionFactory(customer=customer)
    for n in range(105):
        EventFactory(customer=customer, subscription=sub, description=f"Event {n}")
    sign_in(client, customer, role="viewer")

    short = client.get(detail_url(sub))
    everything = client.get(detail_url(sub), {"timeline": "all"})

    assert short.text.count('class="timeline-item"') == 100
    assert "Show the whole timeline" in short.text
    assert everything.text.count('class="timeline-item"') == 105


def test_subscription_detail_of_another_customer_is_404(client, customer):
    stranger = SubscriptionFactory()
    sign_in(client, customer, role="admin")

    assert client.get(detail_url(stranger)).status_code == 404
    assert client.get("/portal/subscriptions/not-a-uuid/").status_code == 404


def test_subscription_detail_parent_sees_visible_branch_only(client, family):
    parent, branch, hidden = family
    sign_in(client, parent, role="viewer")

    assert client.get(detail_url(SubscriptionFactory(customer=branch))).status_code == 200
    assert client.get(detail_url(SubscriptionFactory(customer=hidden))).status_code == 404


def test_subscription_detail_viewer_sees_no_actions(client, customer, rich_subscription):
    sign_in(client, customer, role="viewer")

    response = client.get(detail_url(rich_subscription))

    assert 'data-testid="actions"' not in response.text
    assert "/cancel/" not in response.text and "/pause/" not in response.text


def test_subscription_detail_admin_sees_actions_the_preferences_allow(
    client, customer, rich_subscription
):
    sign_in(client, customer, role="admin")
    set_preference(allow_pause=False, allow_cancel_now=True, allow_cancel_at_term_end=False)

    response = client.get(detail_url(rich_subscription))

    assert reverse("portal:subscription_cancel", args=[rich_subscription.public_id]) in (
        response.text
    )
    assert reverse("portal:subscription_pause", args=[rich_subscription.public_id]) not in (
        response.text
    )
    assert reverse("portal:subscription_auto_charge", args=[rich_subscription.public_id]) in (
        response.text
    )


def test_subscription_detail_expired_trial_offers_extend_until_limit(client, customer):
    sub = SubscriptionFactory(
        customer=customer, expired=True, cancel_reason=CancelReason.TRIAL_ENDED
    )
    sign_in(client, customer, role="admin")
    extend_url = reverse("portal:subscription_extend", args=[sub.public_id])

    fresh = client.get(detail_url(sub))
    Subscription.objects.filter(pk=sub.pk).update(trial_extensions_used=1)
    used_up = client.get(detail_url(sub))

    assert "Your trial has ended" in fresh.text and extend_url in fresh.text
    assert "Your trial has ended" in used_up.text and extend_url not in used_up.text


def test_subscription_detail_dunning_cancelled_in_term_links_to_recovery(client, customer):
    sub = SubscriptionFactory(
        customer=customer,
        cancelled=True,
        cancel_reason=CancelReason.DUNNING,
        current_term_start=TODAY - datetime.timedelta(days=5),
        current_term_end=TODAY + datetime.timedelta(days=26),
    )
    sign_in(client, customer, role="admin")

    response = client.get(detail_url(sub))

    text = text_of(response)
    assert (
        "Your subscription was cancelled because a payment failed — update your card and "
        "reactivate" in text
    )
    recover = reverse("portal:subscription_recover", args=[sub.public_id])
    assert recover in response.text


def test_subscription_detail_scheduled_items_have_their_undo(client, customer):
    saved_card(customer)
    sub = create(customer, PlanFactory(name="Pro"))
    bigger = PlanFactory(name="Pro Max", price=Decimal("10.00"))
    subscription_change(
        subscription=sub, request=ChangeRequest(plan=bigger, quantity=2), timing="term_end"
    )
    subscription_pause_schedule(
        subscription=sub,
        pause_on=TODAY + datetime.timedelta(days=3),
        resume_on=TODAY + datetime.timedelta(days=10),
    )
    sign_in(client, customer, role="admin")

    response = client.get(detail_url(sub))

    text = text_of(response)
    assert "On Feb 20, 2026: changes to Pro Max × 2" in text
    assert reverse("portal:scheduled_change_cancel", args=[sub.public_id]) in response.text
    assert "Pauses on Jan 23, 2026, resumes on Jan 30, 2026" in text
    assert reverse("portal:subscription_pause_remove", args=[sub.public_id]) in response.text
    # Resumed before the billing date: it stays; the pause discards the change, so the next
    # invoice is the current configuration's.
    assert "Next billing date Feb 20, 2026" in text and "Next amount USD 30.00" in text
    assert "(discarded if the subscription is paused first)" in text


def test_subscription_detail_next_amount_uses_the_scheduled_change(client, customer):
    saved_card(customer)
    sub = create(customer, PlanFactory(name="Pro", price=Decimal("30.00")))
    AddonFactory(code="backup", name="Backup", price=Decimal("4.00"))
    subscription_change(
        subscription=sub,
        request=ChangeRequest(
            plan=PlanFactory(name="Lite", price=Decimal("10.00")), addons={"backup": 2}
        ),
        timing="term_end",
    )
    sign_in(client, customer, role="viewer")

    text = text_of(client.get(detail_url(sub)))

    assert "changes to Lite × 1, Backup × 2" in text
    assert "Next amount USD 18.00" in text


def test_subscription_detail_scheduled_cancellation_offers_undo(client, customer):
    saved_card(customer)
    sub = create(customer, PlanFactory(name="Pro"))
    subscription_cancel(subscription=sub, timing="term_end")
    sign_in(client, customer, role="admin")

    response = client.get(detail_url(sub))

    assert "Ends on Feb 20, 2026: it will not renew." in text_of(response)
    assert reverse("portal:subscription_cancel_undo", args=[sub.public_id]) in response.text


def test_subscription_detail_in_trial_shows_trial_end_and_first_amount(client, customer):
    plan = PlanFactory(name="Pro", price=Decimal("30.00"), setup_fee=Decimal("5.00"), trial_days=14)
    sub = create(customer, plan)
    sign_in(client, customer, role="admin")

    response = client.get(detail_url(sub))

    text = text_of(response)
    assert sub.status == SubscriptionStatus.IN_TRIAL
    assert "Trial until Feb 3, 2026" in text
    assert "Next billing date Feb 3, 2026" in text and "Next amount USD 35.00" in text
    assert reverse("portal:subscription_convert", args=[sub.public_id]) in response.text


def test_subscription_detail_query_count_is_small_and_constant(organization, staff_user):
    counts = []
    for rows in (1, 30):
        browser = Client()
        contact = sign_in(browser, role="admin")
        customer = contact.customer
        saved_card(customer)
        for n in range(rows):
            AddonFactory(code=f"addon-{rows}-{n}")
            CouponFactory(code=f"C{rows}X{n}")
        plan = PlanFactory()
        sub = create(
            customer,
            plan,
            addons={f"addon-{rows}-{n}": 1 for n in range(rows)},
        )
        for n in range(rows):
            SubscriptionCoupon.objects.create(
                subscription=sub, coupon=CouponFactory(code=f"D{rows}X{n}"), remaining_cycles=2
            )
            InvoiceFactory(customer=customer, subscription=sub)
            subscription_set_auto_charge(subscription=sub, enabled=n % 2 == 0, actor=contact.user)
            subscription_set_auto_charge(subscription=sub, enabled=True, actor=staff_user)
        subscription_change(subscription=sub, request=ChangeRequest(quantity=2), timing="term_end")
        counts.append(queries_for(browser, detail_url(sub)))
    assert counts[0] == counts[1] <= 10, counts


def test_subscription_detail_query_count_with_per_item_price_list_stays_within_budget(
    organization,
):
    from billing.enums import PriceListKind
    from tests.factories import CustomerGroupFactory, PriceListFactory

    price_list = PriceListFactory(kind=PriceListKind.PER_ITEM)
    group = CustomerGroupFactory(price_list=price_list)
    browser = Client()
    contact = sign_in(browser, CustomerFactory(group=group), role="admin")
    sub = SubscriptionFactory(customer=contact.customer)

    assert queries_for(browser, detail_url(sub)) <= 10
