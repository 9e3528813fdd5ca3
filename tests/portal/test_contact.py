"""Writing to the merchant (contact form, reviews) and the merchant's links in the sidebar."""

import datetime
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.models import Event
from portal.models import ContactMessage, PortalPreferences, Review, WebTab
from portal.services_profile import CONTACT_MESSAGE_LIMIT
from tests.factories import ContactPersonFactory, CustomerFactory
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 3, 20, 12, 0, tzinfo=datetime.UTC)
CONTACT_URL = reverse("portal:contact")
REVIEW_URL = reverse("portal:review")


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex")


def sign_in(client, customer, **traits):
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def set_preferences(**values) -> None:
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


def count_queries(client, url: str) -> int:
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def field_error(response, field: str) -> str:
    match = re.search(rf'id="id_{field}-errors">([^<]*)<', response.text)
    return match.group(1) if match else ""


def message(n: int = 1) -> dict:
    return {"subject": f"Question {n}", "body": "Can we move our renewal to the 1st?"}


# ----------------------------------------------------------------------------- contact form


def test_contact_form_stores_message_and_emails_merchant_after_commit(
    client, customer, mailoutbox, django_capture_on_commit_callbacks
):
    me = sign_in(client, customer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(CONTACT_URL, message(), follow=True)
    assert mailoutbox == []  # nothing leaves before the transaction commits
    for callback in callbacks:
        callback()

    assert response.redirect_chain == [(CONTACT_URL, 302)]
    assert "Thank you, your message was sent." in response.text
    stored = ContactMessage.objects.get()
    assert (stored.customer, stored.author, stored.subject) == (customer, me.user, "Question 1")
    assert stored.body == "Can we move our renewal to the 1st?" and not stored.handled
    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert email.to == ["billing@northwind.example"]
    assert email.reply_to == [me.user.email]
    assert email.subject == "[Portal] Globex: Question 1"
    assert "Can we move our renewal to the 1st?" in email.body and "Globex" in email.body
    assert Event.objects.get(kind="contact_message.sent").customer == customer


def test_contact_form_empty_fields_show_errors_next_to_them(client, customer):
    sign_in(client, customer)

    response = client.post(CONTACT_URL, {"subject": "", "body": "   "})

    assert response.status_code == 200
    assert field_error(response, "subject") == "This field is required."
    assert field_error(response, "body") == "This field is required."
    assert not ContactMessage.objects.exists()


def test_contact_form_rate_limit_refuses_sixth_message_in_an_hour(
    client, customer, mailoutbox, django_capture_on_commit_callbacks
):
    sign_in(client, customer)
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(CONTACT_MESSAGE_LIMIT):
            assert client.post(CONTACT_URL, message(n)).status_code == 302

        refused = client.post(CONTACT_URL, message(99))

    assert refused.status_code == 429
    assert (
        "You have sent 5 messages in the last hour. Please try again in about 60 minutes."
        in refused.text
    )
    assert 'value="Question 99"' in refused.text  # what was typed is kept
    assert ContactMessage.objects.count() == CONTACT_MESSAGE_LIMIT
    assert len(mailoutbox) == CONTACT_MESSAGE_LIMIT
    assert not ContactMessage.objects.filter(subject="Question 99").exists()


def test_contact_form_rate_limit_is_per_user(client, customer):
    sign_in(client, customer)
    for n in range(CONTACT_MESSAGE_LIMIT + 1):
        client.post(CONTACT_URL, message(n))
    colleague = Client()
    sign_in(colleague, customer)

    assert colleague.post(CONTACT_URL, message(42)).status_code == 302
    assert ContactMessage.objects.count() == CONTACT_MESSAGE_LIMIT + 1


def test_contact_form_htmx_post_returns_confirmation_partial(client, customer):
    sign_in(client, customer)

    response = client.post(CONTACT_URL, message(), headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="contact-form"')
    assert "Message sent" in response.text and "<html" not in response.text


def test_contact_form_requires_csrf_token(customer):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, customer)

    assert client.post(CONTACT_URL, message()).status_code == 403
    assert not ContactMessage.objects.exists()


def test_contact_form_get_changes_nothing(client, customer):
    sign_in(client, customer)

    response = client.get(CONTACT_URL, message())

    assert response.status_code == 200 and "Send us a message" in response.text
    assert not ContactMessage.objects.exists()


def test_contact_form_preference_off_hides_nav_and_returns_404(client, customer):
    sign_in(client, customer)
    assert f'href="{CONTACT_URL}"' in client.get(reverse("portal:dashboard")).text
    set_preferences(allow_contact_form=False)

    assert client.get(CONTACT_URL).status_code == 404
    assert client.post(CONTACT_URL, message()).status_code == 404
    assert f'href="{CONTACT_URL}"' not in client.get(reverse("portal:dashboard")).text
    assert not ContactMessage.objects.exists()


def test_contact_form_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    sign_in(client, small)
    few = count_queries(client, CONTACT_URL)
    client.logout()
    ContactMessage.objects.bulk_create(
        ContactMessage(customer=large, subject=f"S{n}", body="B") for n in range(500)
    )
    sign_in(client, large)
    many = count_queries(client, CONTACT_URL)

    assert few == many <= 10


# ----------------------------------------------------------------------------- reviews


def test_review_page_offers_rating_as_a_labelled_radio_group(client, customer):
    sign_in(client, customer)

    response = client.get(REVIEW_URL)

    assert response.status_code == 200
    assert re.search(r"<fieldset[^>]*>\s*<legend[^>]*>Your rating</legend>", response.text)
    assert len(re.findall(r'type="radio" name="rating"', response.text)) == 5
    assert '<label class="form-check-label" for="id_rating_0">' in response.text


def test_review_submitted_is_stored_for_staff_with_event(client, customer):
    me = sign_in(client, customer)

    response = client.post(REVIEW_URL, {"rating": "4", "text": " Great support. "}, follow=True)

    assert "Thank you for your review." in response.text
    review = Review.objects.get()
    assert (review.customer, review.author, review.rating, review.text) == (
        customer,
        me.user,
        4,
        "Great support.",
    )
    assert Event.objects.get(kind="review.created").data["after"]["rating"] == 4


@pytest.mark.parametrize(
    ("rating", "error"),
    [
        ("", "Choose a rating from 1 to 5 stars."),
        ("9", "Select a valid choice. 9 is not one of the available choices."),
        ("0", "Select a valid choice. 0 is not one of the available choices."),
    ],
)
def test_review_bad_rating_shows_error_next_to_the_group(client, customer, rating, error):
    sign_in(client, customer)

    response = client.post(REVIEW_URL, {"rating": rating, "text": "Hmm"})

    assert response.status_code == 200
    assert re.search(rf'id="rating-errors">{re.escape(error)}<', response.text)
    assert 'aria-describedby="rating-errors"' in response.text
    assert not Review.objects.exists()


def test_review_portal_never_lists_reviews(client, customer):
    other = CustomerFactory()
    Review.objects.create(customer=other, rating=1, text="Secret complaint")
    Review.objects.create(customer=customer, rating=5, text="Our own praise")
    sign_in(client, customer)

    for url in (REVIEW_URL, reverse("portal:dashboard"), CONTACT_URL):
        page = client.get(url).text
        assert "Secret complaint" not in page and "Our own praise" not in page


def test_review_requires_csrf_token(customer):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, customer)

    assert client.post(REVIEW_URL, {"rating": "5"}).status_code == 403
    assert not Review.objects.exists()


def test_review_htmx_post_returns_thanks_partial(client, customer):
    sign_in(client, customer)

    response = client.post(REVIEW_URL, {"rating": "5"}, headers={"HX-Request": "true"})

    assert response.text.lstrip().startswith('<section id="review-form"')
    assert "Thank you for your review." in response.text
    assert Review.objects.get().rating == 5


def test_review_preference_off_hides_nav_and_returns_404(client, customer):
    sign_in(client, customer)
    assert f'href="{REVIEW_URL}"' in client.get(reverse("portal:dashboard")).text
    set_preferences(allow_reviews=False)

    assert client.get(REVIEW_URL).status_code == 404
    assert client.post(REVIEW_URL, {"rating": "5"}).status_code == 404
    assert f'href="{REVIEW_URL}"' not in client.get(reverse("portal:dashboard")).text
    assert not Review.objects.exists()


def test_review_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    sign_in(client, small)
    few = count_queries(client, REVIEW_URL)
    client.logout()
    Review.objects.bulk_create(Review(customer=large, rating=3) for _ in range(500))
    sign_in(client, large)
    many = count_queries(client, REVIEW_URL)

    assert few == many <= 10


# ----------------------------------------------------------------------------- web tabs


def test_web_tabs_active_tab_in_sidebar_inactive_not(client, customer):
    WebTab.objects.create(title="Status page", url="https://status.example.com/", position=1)
    WebTab.objects.create(title="Old forum", url="https://forum.example.com/", active=False)
    sign_in(client, customer)

    page = client.get(CONTACT_URL).text

    sidebar = re.search(r'<nav id="sidebar".*?</nav>', page, re.S).group(0)
    assert 'href="https://status.example.com/"' in sidebar and "Status page" in sidebar
    assert "(opens in a new tab)" in sidebar
    assert "Old forum" not in page and "forum.example.com" not in page


def test_web_tabs_deactivated_tab_leaves_sidebar_at_once(client, customer):
    tab = WebTab.objects.create(title="Status page", url="https://status.example.com/")
    sign_in(client, customer)
    assert "Status page" in client.get(REVIEW_URL).text

    tab.active = False
    tab.save()

    assert "Status page" not in client.get(REVIEW_URL).text
