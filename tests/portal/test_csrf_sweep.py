"""CSRF and safe methods across the whole portal (routes walked from the URLconf).

Every portal URL, POSTed by a signed-in portal admin's browser without a CSRF token, is refused
with 403 before the view runs and changes nothing; the same form with its token gets through, so
the refusal is CSRF's. Every GET (with the variants a page offers) changes no row.
"""

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import ContactPerson, Payment, PaymentMethod
from portal.models import Review
from tests.factories import ContactPersonFactory, CustomerFactory
from tests.helpers import login_verified
from tests.portal.payments_support import VISA, reauthenticate
from tests.portal.portal_sweep import (
    changes,
    database_state,
    objects_of,
    portal_routes,
    preferences_everything_on,
)

pytestmark = pytest.mark.django_db

ROUTES = portal_routes()
GET_VARIANTS = {
    "portal:invoices": ["?status=overdue", "?status=paid&issued_from=2020-01-01"],
    "portal:payments": ["?status=failed"],
    "portal:statement": ["?period=this_year", "?period=custom&start=2020-01-01&end=2020-12-31"],
    "portal:statement_pdf": ["?period=this_year"],
    # The figures of a summary page: the service's dry run, which must leave nothing behind.
    **{
        f"portal:subscription_{name}": ["?preview=1"]
        for name in ("convert", "resume", "keep", "reactivate", "recover")
    },
}


def _signed_in(client, customer):
    contact = ContactPersonFactory(customer=customer, admin=True, with_login=True)
    login_verified(client, contact.user)
    reauthenticate(client)  # the card pages act at once instead of asking for the password
    client.get(reverse("portal:dashboard"))  # session rows settle before any snapshot
    return contact


@pytest.fixture
def own(organization):
    preferences_everything_on()
    customer = CustomerFactory(display_name="Own")
    objects = objects_of(customer)
    return customer, objects


def _form_data(objects: dict) -> dict:
    """Valid for the portal's forms: with a token, these POSTs would pay, save, remove, send."""
    return {
        "idempotency_key": uuid.uuid4().hex,
        "summary": "0" * 64,
        "method": "new",
        "replacement": "new",
        "number": VISA,
        "exp": "12/30",
        "cvc": "123",
        "name": "Ada",
        "contacts": [str(objects["contact"].public_id)],
        "first_name": "Eve",
        "last_name": "Forger",
        "email": "eve@example.test",
        "portal_role": "viewer",
        "subject": "Hello",
        "body": "A message that is long enough to be accepted by the form.",
        "rating": "5",
        "text": "Great service, would buy again.",
        "display_name": "Forged name",
        "company_name": "Forged Ltd",
    }


def test_the_sweep_covers_the_portal():
    names = {route.name for route in ROUTES}
    assert {"portal:dashboard", "portal:pay_all", "portal:contact", "portal:review"} <= names
    assert len(ROUTES) >= 30


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_post_without_csrf_token_is_403_and_changes_nothing(own, route):
    customer, objects = own
    browser = Client(enforce_csrf_checks=True)
    _signed_in(browser, customer)
    url = route.url(objects)
    before = database_state()

    response = browser.post(url, _form_data(objects))

    assert response.status_code == 403, url
    assert b"CSRF" in response.content, f"{url}: refused, but not by the CSRF check"
    # An htmx POST carries the token in a header; without it: the same refusal.
    assert browser.post(url, _form_data(objects), HTTP_HX_REQUEST="true").status_code == 403
    assert changes(before, database_state()) == {}


def test_post_with_its_token_gets_through(own):
    """The control: the enforcing client accepts a form that carries its token."""
    customer, objects = own
    browser = Client(enforce_csrf_checks=True)
    _signed_in(browser, customer)
    url = reverse("portal:review")
    page = browser.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]

    response = browser.post(url, {**_form_data(objects), "csrfmiddlewaretoken": token})

    assert response.status_code in (200, 302) and b"CSRF" not in response.content
    assert Review.objects.filter(customer=customer).count() == 1


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_get_changes_nothing(client, own, route):
    customer, objects = own
    _signed_in(client, customer)
    url = route.url(objects)
    before = database_state()

    for query in ["", *GET_VARIANTS.get(route.name, ())]:
        response = client.get(f"{url}{query}")
        # A page, or an action that takes only POST (cancel a scheduled change, undo, ...).
        assert response.status_code in (200, 405), f"{url}{query}: {response.status_code}"

    assert changes(before, database_state()) == {}
    # The pages that act on POST only show a confirmation on GET.
    assert ContactPerson.objects.filter(pk=objects["contact"].pk).exists()
    assert PaymentMethod.objects.filter(pk=objects["payment_method"].pk).exists()
    assert Payment.objects.filter(customer=customer).count() == 1
