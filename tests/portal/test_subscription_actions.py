"""What a customer's admin does to a subscription in the portal: convert, extend or cancel a
trial; cancel (reason, retention offer, re-authentication); pause and resume; automatic
payments. Each action: the happy path through the view, then every refusal."""

import datetime
import re
from decimal import Decimal
from html import unescape

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from billing.enums import CancelReason, CreditNoteReason, InvoiceStatus, SubscriptionStatus
from billing.models import (
    CreditNote,
    Event,
    Invoice,
    Notification,
    Subscription,
    SubscriptionCoupon,
)
from billing.notifications import notification_send
from billing.services.subscriptions import (
    subscription_cancel,
    subscription_cancel_undo,
    subscription_create,
    subscription_pause,
    subscription_pause_schedule,
)
from portal.models import RetentionOffer
from tests.factories import (
    CouponFactory,
    CustomerFactory,
    PlanFactory,
    SubscriptionFactory,
    UserFactory,
)
from tests.helpers import login_verified
from tests.portal.payments_support import (
    reauthenticate,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)
TODAY = NOW.date()
S = SubscriptionStatus
FAILING_CARD = "4000000000000341"  # saved, but every charge fails


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex")


@pytest.fixture
def admin(client, customer):
    return sign_in(client, customer, role="admin")


@pytest.fixture
def plan(organization):
    return PlanFactory(name="Pro", price=Decimal("30.00"), trial_days=14)


@pytest.fixture
def live(customer, plan):
    """Live since today with a saved card (first term Jan 20 – Feb 20, paid)."""
    saved_card(customer)
    return subscription_create(customer=customer, plan=plan, trial=False).subscription


@pytest.fixture
def trial(customer, plan):
    saved_card(customer)
    return subscription_create(customer=customer, plan=plan).subscription


def url(name: str, sub) -> str:
    return reverse(f"portal:{name}", args=[sub.public_id])


def confirm_data(response) -> dict:
    """The hidden fields of the page's confirmation form, as the browser would post them."""
    html = response.content.decode()
    form = re.search(r'<form[^>]*data-testid="confirm-form".*?</form>', html, re.S)
    assert form, "the page has no confirmation form"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
    data = {name: unescape(value) for name, value in fields}
    data["confirm"] = "1"
    return data


def once_token(response) -> str:
    return re.search(r'name="once" value="([0-9a-f]{32})"', response.content.decode()).group(1)


def events(sub, kind: str) -> list[Event]:
    return list(Event.objects.filter(subscription=sub, kind=kind))


def send_queued_emails() -> None:
    for notification in Notification.objects.filter(sent_at__isnull=True):
        notification_send(notification_id=notification.pk)


def redirected_to_detail(response, sub) -> bool:
    return response.status_code == 302 and response["Location"] == url("subscription_detail", sub)


def messages_of(client, sub) -> str:
    return text_of(client.get(url("subscription_detail", sub)))


# ----------------------------------------------------------------------------- convert trial
def test_convert_trial_shows_dry_run_figures_then_charges_and_goes_live(
    client, admin, customer, django_capture_on_commit_callbacks
):
    customer.tax_rate = Decimal("10")
    customer.save()
    saved_card(customer)
    plan = PlanFactory(name="Pro", price=Decimal("30.00"), setup_fee=Decimal("5.00"), trial_days=14)
    sub = subscription_create(customer=customer, plan=plan).subscription

    page = client.get(url("subscription_convert", sub) + "?preview=1")
    text = text_of(page)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("subscription_convert", sub), confirm_data(page))
    send_queued_emails()

    assert "Setup fee: Pro" in text and "Tax (10%) USD 3.50" in text
    assert "Due now USD 38.50" in text and "Next billing date Feb 20, 2026" in text
    assert "We charge Visa •••• 4242" in text
    assert redirected_to_detail(response, sub)
    sub.refresh_from_db()
    assert sub.status == S.LIVE and sub.current_term_end == datetime.date(2026, 2, 20)
    invoice = Invoice.objects.get(subscription=sub)
    assert invoice.total == Decimal("38.50") and invoice.status == InvoiceStatus.PAID
    (event,) = events(sub, "subscription.trial_converted")
    assert event.actor_user == admin.user
    assert any(invoice.number in message.subject for message in mail.outbox)
    assert "Your subscription is now live. Invoice" in messages_of(client, sub)


def test_convert_trial_without_card_links_to_add_one_and_leaves_invoice_open(
    client, admin, customer, plan
):
    sub = subscription_create(customer=customer, plan=plan).subscription

    page = client.get(url("subscription_convert", sub) + "?preview=1")
    response = client.post(url("subscription_convert", sub), confirm_data(page))

    add = reverse("portal:payment_method_add")
    assert f'href="{add}?next=%2Fportal%2Fsubscriptions%2F{sub.public_id}%2Fconvert%2F"' in (
        page.text
    )
    assert redirected_to_detail(response, sub)
    sub.refresh_from_db()
    assert sub.status == S.LIVE
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.OPEN


def test_convert_trial_declined_card_reports_the_failed_payment(client, admin, customer, plan):
    saved_card(customer, FAILING_CARD)
    sub = subscription_create(customer=customer, plan=plan).subscription

    page = client.get(url("subscription_convert", sub) + "?preview=1")
    client.post(url("subscription_convert", sub), confirm_data(page))

    assert "But the card payment for invoice" in messages_of(client, sub)
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.OPEN


def test_convert_trial_figures_changed_after_preview_refuses_and_shows_new_figures(
    client, admin, customer, trial
):
    page = client.get(url("subscription_convert", trial) + "?preview=1")
    customer.tax_rate = Decimal("20")
    customer.save()

    response = client.post(url("subscription_convert", trial), confirm_data(page))

    assert response.status_code == 200
    assert "The figures changed, please review" in response.text
    assert "Due now USD 36.00" in text_of(response)
    trial.refresh_from_db()
    assert trial.status == S.IN_TRIAL and not Invoice.objects.filter(subscription=trial).exists()


def test_convert_trial_bare_page_defers_the_figures_to_a_preview_request(client, admin, trial):
    bare = client.get(url("subscription_convert", trial))
    partial = client.get(url("subscription_convert", trial) + "?preview=1", HTTP_HX_REQUEST="true")

    preview_url = url("subscription_convert", trial) + "?preview=1"
    assert f'href="{preview_url}"' in bare.text and 'hx-trigger="load"' in bare.text
    assert 'data-testid="confirm-form"' not in bare.text
    assert "<html" not in partial.text and 'data-testid="confirm-form"' in partial.text
    assert "Due now USD 30.00" in text_of(partial)


def test_convert_trial_double_submit_converts_once(client, admin, trial):
    page = client.get(url("subscription_convert", trial) + "?preview=1")
    data = confirm_data(page)

    first = client.post(url("subscription_convert", trial), data)
    second = client.post(url("subscription_convert", trial), data)

    assert redirected_to_detail(first, trial) and redirected_to_detail(second, trial)
    assert Invoice.objects.filter(subscription=trial).count() == 1
    assert len(events(trial, "subscription.trial_converted")) == 1
    assert "That request was already carried out." in messages_of(client, trial)


def test_convert_trial_get_changes_nothing(client, admin, trial):
    before = Event.objects.count()

    client.get(url("subscription_convert", trial))
    client.get(url("subscription_convert", trial) + "?preview=1")

    trial.refresh_from_db()
    assert trial.status == S.IN_TRIAL and Event.objects.count() == before
    assert not Invoice.objects.filter(subscription=trial).exists()


def test_convert_trial_post_without_csrf_token_is_refused(organization, customer, trial):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(Client(), customer, role="admin")
    login_verified(browser, contact.user)
    page = browser.get(url("subscription_convert", trial) + "?preview=1")
    data = confirm_data(page)
    without_token = {k: v for k, v in data.items() if k != "csrfmiddlewaretoken"}

    refused = browser.post(url("subscription_convert", trial), without_token)
    trial.refresh_from_db()
    assert refused.status_code == 403 and trial.status == S.IN_TRIAL

    accepted = browser.post(url("subscription_convert", trial), data)
    trial.refresh_from_db()
    assert accepted.status_code == 302 and trial.status == S.LIVE


def test_convert_trial_preference_off_is_404_and_hidden(client, admin, trial):
    set_preference(allow_trial_convert=False)

    assert client.get(url("subscription_convert", trial)).status_code == 404
    assert client.post(url("subscription_convert", trial)).status_code == 404
    assert (
        url("subscription_convert", trial) not in client.get(url("subscription_detail", trial)).text
    )


@pytest.mark.parametrize("role", ["viewer", "payer"])
def test_convert_trial_without_admin_role_is_403(client, customer, trial, role):
    sign_in(client, customer, role=role)

    assert client.get(url("subscription_convert", trial)).status_code == 403
    assert client.post(url("subscription_convert", trial)).status_code == 403
    trial.refresh_from_db()
    assert trial.status == S.IN_TRIAL


def test_convert_trial_of_another_customer_is_404(client, admin, plan):
    stranger = SubscriptionFactory(plan=plan, in_trial=True)

    assert client.get(url("subscription_convert", stranger)).status_code == 404
    assert client.post(url("subscription_convert", stranger)).status_code == 404


def test_convert_trial_of_live_subscription_says_why_not(client, admin, live):
    page = client.get(url("subscription_convert", live) + "?preview=1")

    assert page.status_code == 200
    assert "Only a subscription in trial can be converted." in page.text
    assert 'data-testid="confirm-form"' not in page.text


# ----------------------------------------------------------------------------- extend trial
@pytest.fixture
def expired(customer, plan):
    return SubscriptionFactory(
        customer=customer, plan=plan, expired=True, cancel_reason=CancelReason.TRIAL_ENDED
    )


def test_extend_trial_gives_another_trial_period(client, admin, expired):
    page = client.get(url("subscription_detail", expired))

    response = client.post(url("subscription_extend", expired), {"once": once_token(page)})

    assert redirected_to_detail(response, expired)
    expired.refresh_from_db()
    assert expired.status == S.IN_TRIAL and expired.trial_end == datetime.date(2026, 2, 3)
    assert expired.trial_extensions_used == 1
    (event,) = events(expired, "subscription.trial_extended")
    assert event.actor_user == admin.user
    assert "Your trial is extended until Feb 3, 2026." in messages_of(client, expired)


def test_extend_trial_at_the_limit_is_refused_with_a_message(client, admin, expired):
    set_preference(trial_extension_limit=2)
    Subscription.objects.filter(pk=expired.pk).update(trial_extensions_used=2)

    client.post(url("subscription_extend", expired), {"once": "a" * 32})

    expired.refresh_from_db()
    assert expired.status == S.EXPIRED
    assert "This trial cannot be extended again." in messages_of(client, expired)


def test_extend_trial_of_live_subscription_says_why_not(client, admin, live):
    client.post(url("subscription_extend", live), {"once": "b" * 32})

    assert "Only a trial that expired can be extended." in messages_of(client, live)


def test_extend_trial_double_submit_extends_once(client, admin, expired):
    data = {"once": "c" * 32}

    client.post(url("subscription_extend", expired), data)
    client.post(url("subscription_extend", expired), data)

    expired.refresh_from_db()
    assert expired.trial_extensions_used == 1
    assert len(events(expired, "subscription.trial_extended")) == 1


def test_extend_trial_switched_off_wrong_role_get_or_foreign_is_refused(client, customer, expired):
    contact = sign_in(client, customer, role="admin")
    assert client.get(url("subscription_extend", expired)).status_code == 405
    stranger = SubscriptionFactory(expired=True, cancel_reason=CancelReason.TRIAL_ENDED)
    assert client.post(url("subscription_extend", stranger), {"once": "d" * 32}).status_code == 404
    set_preference(allow_trial_extend=False)
    assert client.post(url("subscription_extend", expired), {"once": "d" * 32}).status_code == 404
    set_preference(allow_trial_extend=True)
    contact.portal_role = "payer"
    contact.save()
    assert client.post(url("subscription_extend", expired), {"once": "d" * 32}).status_code == 403
    expired.refresh_from_db()
    assert expired.status == S.EXPIRED


# ----------------------------------------------------------------------------- cancel
def review_cancel(client, sub, **choices):
    data = {"timing": "now", "reason": "", "reason_text": "", "review": "1", **choices}
    return client.post(url("subscription_cancel", sub), data)


def test_cancel_asks_for_recent_reauthentication_first(client, admin, live):
    response = client.get(url("subscription_cancel", live))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts_reauthenticate"))
    assert "next=%2Fportal%2Fsubscriptions%2F" in response["Location"]


def test_cancel_now_with_credit_issues_credit_note_records_reason_and_emails(
    client, admin, live, time_machine, django_capture_on_commit_callbacks
):
    set_preference(credit_on_cancel_now=True)
    time_machine.move_to(datetime.datetime(2026, 1, 30, 12, 0, tzinfo=datetime.UTC), tick=False)
    reauthenticate(client)

    review = review_cancel(
        client, live, timing="now", reason="too_expensive", reason_text="Budget cuts"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("subscription_cancel", live), confirm_data(review))
    send_queued_emails()

    # 21 of 31 days left of 30.00: 20.32.
    assert "Credit issued to you USD 20.32" in text_of(review)
    assert redirected_to_detail(response, live)
    live.refresh_from_db()
    assert live.status == S.CANCELLED and live.cancel_reason == CancelReason.CUSTOMER
    assert live.cancel_reason_text == "It is too expensive: Budget cuts"
    note = CreditNote.objects.get(customer=live.customer)
    assert note.amount == Decimal("20.32") and note.reason == CreditNoteReason.CANCELLATION
    (event,) = events(live, "subscription.cancelled")
    assert event.actor_user == admin.user
    assert [m.subject for m in mail.outbox if "cancelled" in m.subject] == [
        "Your subscription is cancelled"
    ]
    assert "Your subscription is cancelled." in messages_of(client, live)


def test_cancel_now_voids_unpaid_invoices_when_the_merchant_says_so(client, admin, customer, plan):
    set_preference(void_unpaid_on_cancel=True, credit_on_cancel_now=True)
    sub = subscription_create(customer=customer, plan=plan, trial=False).subscription  # no card
    invoice = Invoice.objects.get(subscription=sub)
    reauthenticate(client)

    review = review_cancel(client, sub, timing="now")
    client.post(url("subscription_cancel", sub), confirm_data(review))

    text = text_of(review)
    assert "These invoices are voided" in text and invoice.number in text
    assert "1 unpaid invoice(s) will be voided." in text
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID
    assert not CreditNote.objects.filter(customer=customer).exists()  # the void took it back


def test_cancel_now_leaves_unpaid_invoices_open_by_default(client, admin, customer, plan):
    sub = subscription_create(customer=customer, plan=plan, trial=False).subscription
    reauthenticate(client)

    review = review_cancel(client, sub, timing="now")
    client.post(url("subscription_cancel", sub), confirm_data(review))

    assert "These invoices stay open: you still owe them." in text_of(review)
    assert Invoice.objects.get(subscription=sub).status == InvoiceStatus.OPEN


def test_cancel_at_term_end_schedules_it_and_emails(
    client, admin, live, django_capture_on_commit_callbacks
):
    reauthenticate(client)

    review = review_cancel(client, live, timing="term_end", reason="switching")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("subscription_cancel", live), confirm_data(review))
    send_queued_emails()

    assert "stays active until Feb 20, 2026" in text_of(review)
    live.refresh_from_db()
    assert live.status == S.NON_RENEWING and live.cancel_at == datetime.date(2026, 2, 20)
    assert len(events(live, "subscription.cancel_scheduled")) == 1
    assert any("will end on Feb 20, 2026" in m.body for m in mail.outbox)
    assert "Your subscription ends on Feb 20, 2026." in messages_of(client, live)


def test_cancel_offers_only_the_timings_the_preferences_allow(client, admin, live):
    set_preference(allow_cancel_now=False)
    reauthenticate(client)

    page = client.get(url("subscription_cancel", live))
    refused = review_cancel(client, live, timing="now")

    assert 'value="now"' not in page.text and 'value="term_end"' in page.text
    assert refused.status_code == 200
    assert 'id="id_timing-errors"' in refused.text
    live.refresh_from_db()
    assert live.status == S.LIVE


def test_cancel_with_every_timing_switched_off_is_404_and_hidden(client, admin, live):
    set_preference(allow_cancel_now=False, allow_cancel_at_term_end=False)
    reauthenticate(client)

    assert client.get(url("subscription_cancel", live)).status_code == 404
    assert review_cancel(client, live).status_code == 404
    assert url("subscription_cancel", live) not in client.get(url("subscription_detail", live)).text


def test_cancel_trial_at_trial_end_schedules_it_and_switched_off_is_404(client, admin, trial):
    reauthenticate(client)

    review = review_cancel(client, trial, timing="term_end")
    client.post(url("subscription_cancel", trial), confirm_data(review))
    trial.refresh_from_db()
    assert trial.status == S.IN_TRIAL and trial.cancel_at == trial.trial_end

    set_preference(allow_trial_cancel=False)
    assert client.get(url("subscription_cancel", trial)).status_code == 404


def test_cancel_trial_now_ends_it_today(client, admin, trial):
    reauthenticate(client)

    review = review_cancel(client, trial, timing="now")
    client.post(url("subscription_cancel", trial), confirm_data(review))

    trial.refresh_from_db()
    assert trial.status == S.CANCELLED
    assert not Invoice.objects.filter(subscription=trial).exists()


def test_cancel_figures_changed_between_review_and_confirm_refuses(client, admin, live):
    reauthenticate(client)
    review = review_cancel(client, live, timing="now")
    set_preference(credit_on_cancel_now=True)

    response = client.post(url("subscription_cancel", live), confirm_data(review))

    assert response.status_code == 200 and "The figures changed, please review" in response.text
    assert "Credit issued to you USD 30.00" in text_of(response)
    live.refresh_from_db()
    assert live.status == S.LIVE


def test_cancel_double_submit_cancels_once(client, admin, live):
    reauthenticate(client)
    data = confirm_data(review_cancel(client, live, timing="now"))

    client.post(url("subscription_cancel", live), data)
    second = client.post(url("subscription_cancel", live), data)

    assert second.status_code == 302
    assert len(events(live, "subscription.cancelled")) == 1


def test_cancel_an_ended_subscription_says_so(client, admin, customer):
    sub = SubscriptionFactory(customer=customer, cancelled=True)
    reauthenticate(client)

    response = client.get(url("subscription_cancel", sub))

    assert redirected_to_detail(response, sub)
    assert "This subscription has already ended." in messages_of(client, sub)


@pytest.mark.parametrize("role", ["viewer", "payer"])
def test_cancel_without_admin_role_is_403(client, customer, live, role):
    sign_in(client, customer, role=role)
    reauthenticate(client)

    assert client.get(url("subscription_cancel", live)).status_code == 403
    assert review_cancel(client, live).status_code == 403


def test_cancel_another_customers_subscription_is_404(client, admin, plan):
    reauthenticate(client)
    stranger = SubscriptionFactory(plan=plan)

    assert client.get(url("subscription_cancel", stranger)).status_code == 404
    assert review_cancel(client, stranger).status_code == 404


def test_cancel_review_as_htmx_returns_only_the_preview(client, admin, live):
    reauthenticate(client)

    response = client.post(
        url("subscription_cancel", live),
        {"timing": "term_end", "reason": "", "reason_text": ""},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200 and "<html" not in response.text
    assert 'data-testid="cancel-preview"' in response.text
    live.refresh_from_db()
    assert live.status == S.LIVE


def test_cancel_htmx_preview_after_reauthentication_lapsed_redirects_the_page(client, admin, live):
    response = client.post(
        url("subscription_cancel", live), {"timing": "now"}, HTTP_HX_REQUEST="true"
    )

    assert response["HX-Redirect"].startswith(reverse("accounts_reauthenticate"))
    live.refresh_from_db()
    assert live.status == S.LIVE


def test_cancel_post_without_csrf_token_is_refused(organization, customer, live):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(Client(), customer, role="admin")
    login_verified(browser, contact.user)
    reauthenticate(browser)
    review = browser.post(
        url("subscription_cancel", live),
        {"timing": "now", "csrfmiddlewaretoken": "x" * 64},
    )

    assert review.status_code == 403
    live.refresh_from_db()
    assert live.status == S.LIVE


# ----------------------------------------------------------------------------- retention offer
@pytest.fixture
def stay_coupon(organization):
    coupon = CouponFactory(
        code="STAY50", name="Half price", percent_off=Decimal("50"), repeating=True
    )
    set_preference(
        retention_offer=RetentionOffer.COUPON,
        retention_coupon=coupon,
        retention_message="We would hate to see you go.",
    )
    return coupon


def test_retention_coupon_offer_applies_coupon_now_and_keeps_the_subscription(
    client, admin, live, stay_coupon
):
    reauthenticate(client)

    cancel_page = client.get(url("subscription_cancel", live))
    keep_page = client.get(url("subscription_keep", live) + "?preview=1")
    response = client.post(url("subscription_keep", live), confirm_data(keep_page))

    assert "We would hate to see you go." in cancel_page.text
    assert url("subscription_keep", live) in cancel_page.text
    assert "Next invoice (tax included) USD 15.00" in text_of(keep_page)
    assert redirected_to_detail(response, live)
    live.refresh_from_db()
    assert live.status == S.LIVE
    assert SubscriptionCoupon.objects.filter(subscription=live, coupon=stay_coupon).exists()
    assert len(events(live, "subscription.changed")) == 1
    assert Notification.objects.filter(subscription=live, kind="subscription_changed").exists()
    assert "Coupon STAY50 is applied." in messages_of(client, live)


def test_retention_coupon_can_be_declined_in_one_click(client, admin, live, stay_coupon):
    reauthenticate(client)

    review = review_cancel(client, live, timing="term_end")
    client.post(url("subscription_cancel", live), confirm_data(review))

    live.refresh_from_db()
    assert live.status == S.NON_RENEWING
    assert not SubscriptionCoupon.objects.filter(subscription=live).exists()


def test_retention_coupon_already_applied_is_not_offered_again(client, admin, live, stay_coupon):
    SubscriptionCoupon.objects.create(subscription=live, coupon=stay_coupon)
    reauthenticate(client)

    page = client.get(url("subscription_cancel", live))

    keep = client.get(url("subscription_keep", live) + "?preview=1")
    assert 'data-testid="retention-offer"' not in page.text
    assert "The coupon STAY50 is already applied." in keep.text
    assert 'data-testid="confirm-form"' not in keep.text


def test_retention_keep_page_without_coupon_offer_is_404(client, admin, live):
    assert client.get(url("subscription_keep", live)).status_code == 404


def test_retention_pause_offer_links_to_the_pause_page(client, admin, live):
    set_preference(retention_offer=RetentionOffer.PAUSE, retention_message="Take a break?")
    reauthenticate(client)

    page = client.get(url("subscription_cancel", live))

    assert "Take a break?" in page.text and url("subscription_pause", live) in page.text
    set_preference(allow_pause=False)
    assert url("subscription_pause", live) not in client.get(url("subscription_cancel", live)).text


# ----------------------------------------------------------------------------- undo cancel
def test_undo_scheduled_cancellation_keeps_the_subscription(client, admin, live):
    subscription_cancel(subscription=live, timing="term_end")
    page = client.get(url("subscription_detail", live))

    response = client.post(url("subscription_cancel_undo", live), {"once": once_token(page)})

    assert redirected_to_detail(response, live)
    live.refresh_from_db()
    assert live.status == S.LIVE and live.cancel_at is None
    (event,) = events(live, "subscription.cancel_unscheduled")
    assert event.actor_user == admin.user


def test_undo_of_the_merchants_scheduled_cancellation_is_refused_staff_may(
    client, admin, live, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        subscription_cancel(subscription=live, timing="term_end", reason=CancelReason.MERCHANT)
    send_queued_emails()
    (email,) = [m for m in mail.outbox if "will not renew" in m.body]
    assert "Please contact us" in email.body and "undo" not in email.body
    page = client.get(url("subscription_detail", live))
    assert "Keep my subscription" not in page.text
    assert "We cancelled it: please contact us to keep it." in text_of(page)

    client.post(url("subscription_cancel_undo", live), {"once": "a" * 32})

    assert "We cancelled this subscription: please contact us to keep it." in messages_of(
        client, live
    )
    live.refresh_from_db()
    assert live.status == S.NON_RENEWING and live.cancel_at is not None
    assert not events(live, "subscription.cancel_unscheduled")
    subscription_cancel_undo(subscription=live, actor=UserFactory(staff=True))
    live.refresh_from_db()
    assert live.status == S.LIVE and live.cancel_at is None


def test_undo_without_scheduled_cancellation_says_why_not(client, admin, live):
    client.post(url("subscription_cancel_undo", live), {"once": "e" * 32})

    assert "There is no scheduled cancellation to undo." in messages_of(client, live)


def test_undo_cancel_get_wrong_role_or_foreign_is_refused(client, customer, live):
    subscription_cancel(subscription=live, timing="term_end")
    contact = sign_in(client, customer, role="admin")
    assert client.get(url("subscription_cancel_undo", live)).status_code == 405
    stranger = SubscriptionFactory(non_renewing=True)
    assert (
        client.post(url("subscription_cancel_undo", stranger), {"once": "f" * 32}).status_code
        == 404
    )
    contact.portal_role = "viewer"
    contact.save()
    assert client.post(url("subscription_cancel_undo", live), {"once": "f" * 32}).status_code == 403
    live.refresh_from_db()
    assert live.status == S.NON_RENEWING


# ----------------------------------------------------------------------------- pause
def review_pause(client, sub, **choices):
    data = {"pause_when": "today", "resume_when": "manual", "review": "1", **choices}
    return client.post(url("subscription_pause", sub), data)


def test_pause_today_with_credit_pauses_issues_credit_and_sets_resume_date(
    client, admin, live, time_machine
):
    set_preference(credit_unused_pause_time=True)
    time_machine.move_to(datetime.datetime(2026, 1, 30, 12, 0, tzinfo=datetime.UTC), tick=False)

    review = review_pause(client, live, resume_when="date", resume_on="2026-03-10")
    response = client.post(url("subscription_pause", live), confirm_data(review))

    text = text_of(review)
    assert "Credit for the unused time USD 20.32" in text
    assert "A new term starts on Mar 10, 2026 with an invoice of USD 30.00" in text
    assert redirected_to_detail(response, live)
    live.refresh_from_db()
    assert live.status == S.PAUSED and live.resume_at == datetime.date(2026, 3, 10)
    note = CreditNote.objects.get(customer=live.customer)
    assert note.amount == Decimal("20.32") and note.reason == CreditNoteReason.PAUSE
    assert len(events(live, "subscription.paused")) == 1


def test_pause_today_with_credit_replaces_an_earlier_schedule(client, admin, live):
    set_preference(credit_unused_pause_time=True)
    subscription_pause_schedule(
        subscription=live,
        pause_on=datetime.date(2026, 2, 1),
        resume_on=datetime.date(2026, 2, 10),
    )

    review = review_pause(client, live, resume_when="date", resume_on="2026-01-25")
    client.post(url("subscription_pause", live), confirm_data(review))

    live.refresh_from_db()
    assert live.status == S.PAUSED
    assert (live.pause_at, live.resume_at) == (TODAY, datetime.date(2026, 1, 25))
    # The whole term was unused: 31 of 31 days.
    assert CreditNote.objects.get(customer=live.customer).amount == Decimal("30.00")


def test_pause_later_with_credit_shows_the_credit_due_on_the_pause_date(client, admin, live):
    set_preference(credit_unused_pause_time=True)

    review = review_pause(client, live, pause_when="date", pause_on="2026-01-25")
    client.post(url("subscription_pause", live), confirm_data(review))

    # 26 of 31 days left on Jan 25: 25.16, credited by the job that pauses it then.
    assert "USD 25.16, issued when the pause starts" in text_of(review)
    live.refresh_from_db()
    assert live.status == S.LIVE and live.pause_at == datetime.date(2026, 1, 25)
    assert not CreditNote.objects.filter(customer=live.customer).exists()


def test_pause_on_a_later_date_schedules_it_and_keeps_the_billing_date(client, admin, live):
    review = review_pause(
        client,
        live,
        pause_when="date",
        pause_on="2026-01-25",
        resume_when="date",
        resume_on="2026-02-05",
    )
    response = client.post(url("subscription_pause", live), confirm_data(review))

    assert "Your billing date stays Feb 20, 2026." in text_of(review)
    assert redirected_to_detail(response, live)
    live.refresh_from_db()
    assert live.status == S.LIVE
    assert (live.pause_at, live.resume_at) == (
        datetime.date(2026, 1, 25),
        datetime.date(2026, 2, 5),
    )
    (event,) = events(live, "subscription.pause_scheduled")
    assert event.actor_user == admin.user
    assert "Your subscription pauses on Jan 25, 2026 until Feb 5, 2026." in messages_of(
        client, live
    )


def test_pause_at_term_end_until_resumed_schedules_open_ended_pause(client, admin, live):
    review = review_pause(client, live, pause_when="term_end")
    client.post(url("subscription_pause", live), confirm_data(review))

    live.refresh_from_db()
    assert live.pause_at == datetime.date(2026, 2, 20) and live.resume_at is None


@pytest.mark.parametrize(
    ("choices", "field", "message"),
    [
        ({"pause_when": "date", "pause_on": "2026-03-01"}, "pause_on", "up to the end of the"),
        ({"pause_when": "date", "pause_on": ""}, "pause_on", "Enter the date the pause starts."),
        ({"pause_when": "date", "pause_on": "2026-01-01"}, "pause_on", "cannot start in the past"),
        (
            {
                "pause_when": "date",
                "pause_on": "2026-01-25",
                "resume_when": "date",
                "resume_on": "2026-01-24",
            },
            "resume_on",
            "The resume date must be after the pause starts.",
        ),
        ({"resume_when": "date", "resume_on": "soon"}, "resume_on", "Enter a valid date."),
    ],
)
def test_pause_bad_dates_are_reported_next_to_their_field(
    client, admin, live, choices, field, message
):
    response = review_pause(client, live, **choices)

    assert response.status_code == 200
    errors = re.search(rf'id="id_{field}-errors">([^<]*)<', response.text)
    assert errors and message in unescape(errors.group(1))
    assert 'data-testid="confirm-form"' not in response.text
    live.refresh_from_db()
    assert live.status == S.LIVE and live.pause_at is None


def test_pause_paused_subscription_new_resume_date_is_saved(client, admin, live):
    subscription_pause(subscription=live)

    page = client.get(url("subscription_pause", live))
    review = client.post(
        url("subscription_pause", live),
        {"resume_when": "date", "resume_on": "2026-02-01", "review": "1"},
    )
    client.post(url("subscription_pause", live), confirm_data(review))

    assert 'name="pause_when"' not in page.text
    live.refresh_from_db()
    assert live.status == S.PAUSED and live.resume_at == datetime.date(2026, 2, 1)


def test_pause_remove_with_a_schedule_clears_it(client, admin, live):
    subscription_pause_schedule(subscription=live, pause_on=datetime.date(2026, 1, 25))
    page = client.get(url("subscription_detail", live))

    client.post(url("subscription_pause_remove", live), {"once": once_token(page)})

    live.refresh_from_db()
    assert live.pause_at is None and live.status == S.LIVE
    assert len(events(live, "subscription.pause_unscheduled")) == 1
    assert "The scheduled pause is removed." in messages_of(client, live)


def test_pause_double_submit_schedules_once(client, admin, live):
    data = confirm_data(review_pause(client, live, pause_when="date", pause_on="2026-01-25"))

    client.post(url("subscription_pause", live), data)
    client.post(url("subscription_pause", live), data)

    assert len(events(live, "subscription.pause_scheduled")) == 1


def test_pause_htmx_preview_returns_only_the_preview(client, admin, live):
    response = client.post(
        url("subscription_pause", live),
        {"pause_when": "today", "resume_when": "manual"},
        HTTP_HX_REQUEST="true",
    )

    assert "<html" not in response.text and 'data-testid="pause-preview"' in response.text
    live.refresh_from_db()
    assert live.status == S.LIVE


def test_pause_switched_off_wrong_role_ended_or_foreign_is_refused(client, customer, live):
    contact = sign_in(client, customer, role="admin")
    ended = SubscriptionFactory(customer=customer, cancelled=True)
    stranger = SubscriptionFactory()

    client.get(url("subscription_pause", ended))
    assert "Only a live subscription can be paused." in messages_of(client, ended)
    assert client.get(url("subscription_pause", stranger)).status_code == 404
    set_preference(allow_pause=False)
    assert client.get(url("subscription_pause", live)).status_code == 404
    assert review_pause(client, live).status_code == 404
    assert url("subscription_pause", live) not in client.get(url("subscription_detail", live)).text
    set_preference(allow_pause=True)
    contact.portal_role = "payer"
    contact.save()
    assert review_pause(client, live).status_code == 403
    live.refresh_from_db()
    assert live.status == S.LIVE


# ----------------------------------------------------------------------------- resume
def test_resume_before_billing_date_keeps_the_date_and_charges_nothing(client, admin, live):
    subscription_pause(subscription=live)

    page = client.get(url("subscription_resume", live) + "?preview=1")
    client.post(url("subscription_resume", live), confirm_data(page))

    assert "nothing is charged now" in text_of(page)
    live.refresh_from_db()
    assert live.status == S.LIVE and live.current_term_end == datetime.date(2026, 2, 20)
    assert Invoice.objects.filter(subscription=live).count() == 1  # the first term's only


def test_resume_after_billing_date_starts_a_new_term_with_an_invoice(
    client, admin, live, time_machine
):
    subscription_pause(subscription=live)
    time_machine.move_to(datetime.datetime(2026, 3, 3, 12, 0, tzinfo=datetime.UTC), tick=False)

    page = client.get(url("subscription_resume", live) + "?preview=1")
    client.post(url("subscription_resume", live), confirm_data(page))

    text = text_of(page)
    assert "a new term starts today" in text and "Due now USD 30.00" in text
    live.refresh_from_db()
    assert live.status == S.LIVE
    assert (live.current_term_start, live.current_term_end) == (
        datetime.date(2026, 3, 3),
        datetime.date(2026, 4, 3),
    )
    latest = Invoice.objects.filter(subscription=live).order_by("-id").first()
    assert latest.period_start == datetime.date(2026, 3, 3) and latest.status == InvoiceStatus.PAID


def test_resume_of_live_subscription_says_why_not(client, admin, live):
    page = client.get(url("subscription_resume", live) + "?preview=1")

    assert "Only a paused subscription can be resumed." in page.text
    assert 'data-testid="confirm-form"' not in page.text


def test_resume_preference_off_is_404(client, admin, live):
    subscription_pause(subscription=live)
    set_preference(allow_pause=False)

    assert client.get(url("subscription_resume", live)).status_code == 404


# ----------------------------------------------------------------------------- auto-charge
def test_auto_charge_off_then_on_with_another_card_switches_card(client, admin, customer, live):
    second = saved_card(customer, "5555555555554444")
    page = client.get(url("subscription_auto_charge", live))

    client.post(url("subscription_auto_charge", live), {"enabled": "off", "once": once_token(page)})
    live.refresh_from_db()
    assert live.auto_charge is False

    page = client.get(url("subscription_auto_charge", live))
    client.post(
        url("subscription_auto_charge", live),
        {"enabled": "on", "card": str(second.public_id), "once": once_token(page)},
    )
    live.refresh_from_db()
    assert live.auto_charge is True and live.payment_method == second
    assert len(events(live, "subscription.auto_charge")) == 2
    assert "invoices are charged to Mastercard •••• 4444" in messages_of(client, live)


def test_auto_charge_on_without_a_card_is_refused_next_to_the_field(client, admin, customer, plan):
    sub = subscription_create(customer=customer, plan=plan, trial=False).subscription

    page = client.get(url("subscription_auto_charge", sub))
    response = client.post(
        url("subscription_auto_charge", sub), {"enabled": "on", "once": once_token(page)}
    )

    assert response.status_code == 200
    assert "Add a card before turning on automatic payments." in response.text
    sub.refresh_from_db()
    assert sub.auto_charge is False


def test_auto_charge_card_of_another_customer_is_not_a_choice(client, admin, live):
    foreign = saved_card(CustomerFactory())

    response = client.post(
        url("subscription_auto_charge", live),
        {"enabled": "on", "card": str(foreign.public_id), "once": "1" * 32},
    )

    assert response.status_code == 200 and 'id="id_card-errors"' in response.text
    live.refresh_from_db()
    assert live.payment_method != foreign


def test_auto_charge_double_submit_records_once(client, admin, live):
    data = {"enabled": "off", "once": "2" * 32}

    client.post(url("subscription_auto_charge", live), data)
    client.post(url("subscription_auto_charge", live), data)

    assert len(events(live, "subscription.auto_charge")) == 1


def test_auto_charge_switched_off_wrong_role_or_foreign_is_refused(client, customer, live):
    contact = sign_in(client, customer, role="admin")
    stranger = SubscriptionFactory()
    assert client.get(url("subscription_auto_charge", stranger)).status_code == 404
    set_preference(allow_auto_charge_toggle=False)
    assert client.get(url("subscription_auto_charge", live)).status_code == 404
    set_preference(allow_auto_charge_toggle=True)
    contact.portal_role = "payer"
    contact.save()
    response = client.post(
        url("subscription_auto_charge", live), {"enabled": "off", "once": "3" * 32}
    )
    assert response.status_code == 403
    live.refresh_from_db()
    assert live.auto_charge is True
