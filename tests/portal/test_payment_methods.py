"""Saved cards in the portal: list, add, make default, remove, replace; never a card number."""

import logging

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import PaymentMethod, Subscription
from tests.factories import CustomerFactory, SubscriptionFactory
from tests.portal.payments_support import (
    VISA,
    assert_card_number_stored_nowhere,
    queries_for,
    reauthenticate,
    saved_card,
    set_preference,
    sign_in,
    text_of,
)

pytestmark = pytest.mark.django_db

LIST = "portal:payment_methods"
ADD = "portal:payment_method_add"
ID_ACTIONS = [
    "portal:payment_method_default",
    "portal:payment_method_remove",
    "portal:payment_method_replace",
]


def action_url(name, card):
    return reverse(name, args=[card.public_id])


def card_data(number=VISA, **extra):
    return {"number": number, "exp": "12/30", "cvc": "123", "name": "Ada Lovelace", **extra}


@pytest.fixture
def payer(client, organization):
    contact = sign_in(client)
    reauthenticate(client)
    return contact


# ----------------------------------------------------------------------------- list
def test_card_list_shows_brand_last4_expiry_default_and_subscriptions(client, payer):
    default = saved_card(payer.customer, make_default=True)
    other = saved_card(payer.customer, "5555555555554444")
    SubscriptionFactory(customer=payer.customer, payment_method=other, plan__name="Team")
    SubscriptionFactory(customer=payer.customer, payment_method=None, plan__name="Starter")

    response = client.get(reverse(LIST))

    text = text_of(response)
    assert "Visa •••• 4242" in text
    assert "Mastercard •••• 4444" in text and "Expires 12/2030" in text and "Default" in text
    cards = {card.pk: card for card in response.context["cards"]}
    assert [s.plan.name for s in cards[other.pk].subscriptions_shown] == ["Team"]
    # Auto-charged subscriptions without a card of their own are paid by the default card.
    assert [s.plan.name for s in cards[default.pk].subscriptions_shown] == ["Starter"]


def test_card_list_shows_only_own_cards(client, payer):
    saved_card(CustomerFactory(), "5555555555554444")

    assert "4444" not in text_of(client.get(reverse(LIST)))


def test_card_list_query_count_is_small_and_constant(organization):
    counts = []
    for rows in (1, 500):
        browser = Client()
        contact = sign_in(browser)
        card = saved_card(contact.customer)
        subscription = SubscriptionFactory(customer=contact.customer, payment_method=card)
        Subscription.objects.bulk_create(
            Subscription(
                customer=contact.customer,
                plan=subscription.plan,
                payment_method=card,
                start_date=subscription.start_date,
                anchor_date=subscription.anchor_date,
                current_term_start=subscription.current_term_start,
                current_term_end=subscription.current_term_end,
            )
            for _ in range(rows - 1)
        )
        PaymentMethod.objects.bulk_create(
            PaymentMethod(
                customer=contact.customer,
                gateway="sandbox",
                token=f"tok_bulk_{contact.pk}_{n}",
                brand="Visa",
                last4="1111",
                exp_month=1,
                exp_year=2031,
            )
            for n in range(rows)
        )
        counts.append(queries_for(browser, reverse(LIST)))
    assert counts[0] == counts[1] <= 10, counts


# ----------------------------------------------------------------------------- add
def test_add_card_saves_token_brand_last4_and_becomes_default(client, payer):
    response = client.post(reverse(ADD), card_data(make_default="on"))

    assert response.status_code == 302 and response["Location"] == reverse(LIST)
    card = PaymentMethod.objects.get(customer=payer.customer)
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("Visa", "4242", 12, 2030)
    assert card.is_default and card.cardholder_name == "Ada Lovelace"
    assert "Visa •••• 4242 (12/2030) is saved." in text_of(client.get(reverse(LIST)))


def test_add_card_for_subscriptions_moves_their_auto_charge(client, payer):
    old = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=old)

    client.post(reverse(ADD), card_data("5555555555554444", use_for_subscriptions="on"))

    subscription.refresh_from_db()
    assert subscription.payment_method.last4 == "4444"


def test_add_card_leaves_no_card_number_in_database_or_logs(client, payer, caplog):
    caplog.set_level(logging.DEBUG)
    number = "5555555555554444"

    client.post(reverse(ADD), card_data(number, cvc="987"))

    assert PaymentMethod.objects.filter(customer=payer.customer, last4="4444").exists()
    assert number not in caplog.text
    assert_card_number_stored_nowhere(number)


def test_add_card_marks_number_and_cvc_sensitive_for_error_reports(client, payer):
    response = client.post(reverse(ADD), card_data())

    assert response.wsgi_request.sensitive_post_parameters == ("number", "cvc")


def test_add_card_invalid_number_shows_error_next_to_field_and_never_echoes_it(client, payer):
    response = client.post(reverse(ADD), card_data("4242424242424241", cvc="321"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="id_number-errors"' in html
    assert "4242424242424241" not in html and 'value="321"' not in html
    assert not PaymentMethod.objects.exists()


def test_add_card_past_expiry_shows_error_next_to_expiry(client, payer):
    response = client.post(reverse(ADD), card_data(exp="01/20"))

    assert 'id="id_exp-errors"' in response.content.decode()
    assert not PaymentMethod.objects.exists()


def test_add_card_page_has_card_autocomplete_attributes(client, payer):
    html = client.get(reverse(ADD)).content.decode()

    for value in ("cc-number", "cc-exp", "cc-csc", "cc-name"):
        assert f'autocomplete="{value}"' in html


def test_add_card_without_recent_login_asks_to_confirm_first(organization):
    browser = Client()
    sign_in(browser)

    get = browser.get(reverse(ADD))
    post = browser.post(reverse(ADD), card_data())

    assert get.status_code == post.status_code == 302
    assert post["Location"].startswith(reverse("accounts_reauthenticate"))
    assert not PaymentMethod.objects.exists()


# ----------------------------------------------------------------------------- default
def test_make_default_moves_default_badge(client, payer):
    first = saved_card(payer.customer)
    second = saved_card(payer.customer, "5555555555554444")

    response = client.post(action_url("portal:payment_method_default", second))

    assert response.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.is_default and not first.is_default


def test_make_default_get_shows_confirmation_and_changes_nothing(client, payer):
    first = saved_card(payer.customer)
    second = saved_card(payer.customer, "5555555555554444")

    response = client.get(action_url("portal:payment_method_default", second))

    assert "Make Mastercard •••• 4444 (12/2030) your default card?" in text_of(response)
    first.refresh_from_db()
    assert first.is_default


@pytest.mark.parametrize("name", ID_ACTIONS)
def test_card_action_pages_get_changes_nothing(client, payer, name):
    card = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=card)
    saved_card(payer.customer, "5555555555554444")

    assert client.get(action_url(name, card)).status_code == 200

    card.refresh_from_db()
    assert card.is_default and PaymentMethod.objects.count() == 2
    subscription.refresh_from_db()
    assert subscription.payment_method == card


# ----------------------------------------------------------------------------- remove
def test_remove_only_card_of_auto_charged_subscription_is_refused_with_message(client, payer):
    card = saved_card(payer.customer)
    SubscriptionFactory(customer=payer.customer, payment_method=card, auto_charge=True)

    response = client.post(action_url("portal:payment_method_remove", card))

    assert response.status_code == 200
    assert "This card pays a subscription automatically. Add another card first" in text_of(
        response
    )
    assert PaymentMethod.objects.filter(pk=card.pk).exists()


def test_remove_card_moves_its_subscriptions_to_the_default(client, payer):
    default = saved_card(payer.customer, make_default=True)
    other = saved_card(payer.customer, "5555555555554444")
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=other)

    response = client.post(action_url("portal:payment_method_remove", other))

    assert response.status_code == 302
    assert not PaymentMethod.objects.filter(pk=other.pk).exists()
    subscription.refresh_from_db()
    assert subscription.payment_method == default


# ----------------------------------------------------------------------------- replace
def test_replace_with_saved_card_moves_every_subscription_and_removes_old(client, payer):
    old = saved_card(payer.customer, make_default=True)
    new = saved_card(payer.customer, "5555555555554444")
    first = SubscriptionFactory(customer=payer.customer, payment_method=old)
    second = SubscriptionFactory(customer=payer.customer, payment_method=old)

    response = client.post(
        action_url("portal:payment_method_replace", old), {"replacement": str(new.public_id)}
    )

    assert response.status_code == 302
    assert not PaymentMethod.objects.filter(pk=old.pk).exists()
    assert set(Subscription.objects.values_list("payment_method", flat=True)) == {new.pk}
    new.refresh_from_db()
    assert new.is_default
    assert "replaced by Mastercard •••• 4444 (12/2030) on 2 subscriptions" in text_of(
        client.get(reverse(LIST))
    )
    assert first.pk and second.pk


def test_replace_with_new_card_tokenizes_it_and_moves_subscriptions(client, payer):
    old = saved_card(payer.customer)
    subscription = SubscriptionFactory(customer=payer.customer, payment_method=old)

    response = client.post(
        action_url("portal:payment_method_replace", old),
        {"replacement": "new", **card_data("5555555555554444")},
    )

    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.payment_method.last4 == "4444"
    assert not PaymentMethod.objects.filter(pk=old.pk).exists()


def test_replace_with_other_customers_card_is_refused(client, payer):
    old = saved_card(payer.customer)
    stranger = saved_card(CustomerFactory(), "5555555555554444")

    response = client.post(
        action_url("portal:payment_method_replace", old), {"replacement": str(stranger.public_id)}
    )

    assert response.status_code == 200
    assert 'id="id_replacement-errors"' in response.content.decode()
    assert PaymentMethod.objects.filter(pk=old.pk).exists()


# ----------------------------------------------------------------------------- access
@pytest.mark.parametrize("name", ID_ACTIONS)
def test_card_actions_on_another_customers_card_are_not_found_and_change_nothing(
    client, payer, name
):
    stranger = saved_card(CustomerFactory(), make_default=False)
    saved_card(payer.customer, "5555555555554444")

    assert client.get(action_url(name, stranger)).status_code == 404
    assert client.post(action_url(name, stranger), {"replacement": "new"}).status_code == 404
    assert PaymentMethod.objects.filter(pk=stranger.pk, is_default=True).exists()


@pytest.mark.parametrize("name", ID_ACTIONS)
def test_card_actions_parent_cannot_manage_a_branch_card(client, organization, name):
    parent = CustomerFactory()
    branch = CustomerFactory(parent=parent)
    sign_in(client, parent)
    reauthenticate(client)
    branch_card = saved_card(branch)

    assert client.post(action_url(name, branch_card)).status_code == 404
    assert PaymentMethod.objects.filter(pk=branch_card.pk).exists()


@pytest.mark.parametrize("name", ID_ACTIONS)
def test_card_actions_hidden_branch_card_is_not_found(client, organization, name):
    parent = CustomerFactory()
    hidden = CustomerFactory(parent=parent, visible_to_parent=False)
    sign_in(client, parent)
    reauthenticate(client)

    assert client.get(action_url(name, saved_card(hidden))).status_code == 404


def test_card_pages_viewer_is_forbidden(client, organization):
    viewer = sign_in(client, role="viewer")
    reauthenticate(client)
    card = saved_card(viewer.customer)

    assert client.get(reverse(LIST)).status_code == 403
    assert client.post(reverse(ADD), card_data()).status_code == 403
    for name in ID_ACTIONS:
        assert client.post(action_url(name, card)).status_code == 403
    assert PaymentMethod.objects.filter(customer=viewer.customer).count() == 1
    assert reverse(LIST) not in client.get(reverse("portal:dashboard")).content.decode()


def test_card_pages_switched_off_are_not_found_and_hidden(client, payer):
    card = saved_card(payer.customer)
    set_preference(allow_payment_method_changes=False)

    assert client.get(reverse(LIST)).status_code == 404
    assert client.post(reverse(ADD), card_data()).status_code == 404
    assert client.post(action_url("portal:payment_method_remove", card)).status_code == 404
    assert reverse(LIST) not in client.get(reverse("portal:dashboard")).content.decode()
    assert PaymentMethod.objects.filter(pk=card.pk).exists()


def test_card_list_in_menu_for_payer(client, payer):
    assert f'href="{reverse(LIST)}"' in client.get(reverse("portal:dashboard")).content.decode()


def test_card_changes_without_csrf_token_are_refused(organization):
    browser = Client(enforce_csrf_checks=True)
    contact = sign_in(browser)
    reauthenticate(browser)
    card = saved_card(contact.customer)
    other = saved_card(contact.customer, "5555555555554444")

    assert browser.post(reverse(ADD), card_data()).status_code == 403
    assert browser.post(action_url("portal:payment_method_default", other)).status_code == 403
    assert browser.post(action_url("portal:payment_method_remove", card)).status_code == 403
    card.refresh_from_db()
    assert card.is_default and PaymentMethod.objects.count() == 2


def test_card_change_without_recent_login_redirects_and_changes_nothing(organization):
    browser = Client()
    contact = sign_in(browser)
    card = saved_card(contact.customer)

    response = browser.post(action_url("portal:payment_method_remove", card))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts_reauthenticate"))
    assert PaymentMethod.objects.filter(pk=card.pk).exists()
