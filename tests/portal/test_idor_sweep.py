"""Forced browsing of ids: every portal URL that takes an id, given another customer's id (or a
branch hidden from its parent), answers exactly as for an id that does not exist — 404 — for
GET and POST, and changes nothing. A parent sees what its visible branches hold and nothing of
a hidden one; a viewer cannot pay.

The routes are walked from the URLconf (tests/portal/portal_sweep.py), so a page added later is
swept without being listed here.
"""

import uuid

import pytest
from django.urls import reverse

from billing.models import Invoice, Payment
from tests.factories import ContactPersonFactory, CustomerFactory, InvoiceFactory
from tests.helpers import login_verified
from tests.portal.payments_support import VISA, reauthenticate, text_of
from tests.portal.portal_sweep import (
    changes,
    database_state,
    objects_of,
    portal_routes,
    preferences_everything_on,
)

pytestmark = pytest.mark.django_db

ID_ROUTES = [route for route in portal_routes() if route.ids]


def _post_data(foreign: dict) -> dict:
    """Everything any portal form could want, filled in plausibly: had a view skipped its
    scope check, this POST would have paid, forwarded, edited or removed something."""
    return {
        "idempotency_key": uuid.uuid4().hex,
        "summary": "0" * 64,
        "method": "new",
        "replacement": "new",
        "number": VISA,
        "exp": "12/30",
        "cvc": "123",
        "name": "Mallory",
        "save_card": "on",
        "contacts": [str(foreign["contact"].public_id)],
        "first_name": "Mallory",
        "last_name": "Intruder",
        "email": "mallory@evil.test",
        "portal_role": "admin",
        "is_primary": "on",
        "receives_documents": "on",
        "confirm": "on",
    }


@pytest.fixture
def scene(client, organization):
    """Signed in: an admin contact of a parent (re-authenticated, so the card pages do not stop
    at the password step), with one visible and one hidden branch; plus an unrelated customer."""
    preferences_everything_on()
    parent = CustomerFactory(display_name="Parent")
    visible = CustomerFactory(display_name="Visible branch", parent=parent)
    hidden = CustomerFactory(display_name="Hidden branch", parent=parent, visible_to_parent=False)
    stranger = CustomerFactory(display_name="Stranger")
    contact = ContactPersonFactory(customer=parent, admin=True, with_login=True)
    login_verified(client, contact.user)
    reauthenticate(client)
    return {
        "own": objects_of(parent),
        "visible": objects_of(visible),
        "hidden": objects_of(hidden),
        "stranger": objects_of(stranger),
        "customers": {"visible": visible, "hidden": hidden, "stranger": stranger},
    }


def _missing(route) -> str:
    return reverse(route.name, kwargs=dict.fromkeys(route.ids, uuid.uuid4()))


def test_the_sweep_covers_every_id_route():
    names = {route.name for route in ID_ROUTES}
    assert {"portal:invoice_detail", "portal:invoice_pay", "portal:payment_detail"} <= names
    assert {"portal:payment_method_remove", "portal:company_contact_remove"} <= names


@pytest.mark.parametrize("owner", ["stranger", "hidden"])
@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda route: route.name)
def test_foreign_id_is_404_like_a_missing_one_and_changes_nothing(client, scene, route, owner):
    foreign = scene[owner]
    url, missing = route.url(foreign), _missing(route)
    client.get(reverse("portal:dashboard"))  # session rows settle before the snapshot
    before = database_state()

    data = _post_data(foreign)
    statuses = []
    for method, payload in ((client.get, {}), (client.post, data)):
        got, absent = method(url, payload), method(missing, payload)
        # A view that does not take this method refuses it (405) before looking the id up:
        # the same answer for both, so nothing is learnt either way.
        assert absent.status_code in (404, 405), missing
        assert got.status_code == absent.status_code, f"{method.__name__.upper()} {url}"
        statuses.append(got.status_code)
    assert 404 in statuses, f"{url}: neither GET nor POST looks the id up"
    assert changes(before, database_state()) == {}


def test_own_objects_answer_so_the_sweep_is_meaningful(client, scene):
    """The same URLs with the signed-in customer's own ids are not 404s (GET; a POST-only
    URL answers 405)."""
    for route in ID_ROUTES:
        url = route.url(scene["own"])
        assert client.get(url).status_code in (200, 405), url


def test_parent_sees_visible_branch_documents_but_not_hidden_ones(client, scene):
    visible, hidden = scene["visible"], scene["hidden"]
    for name, kind in (
        ("portal:invoice_detail", "invoice"),
        ("portal:invoice_pdf", "invoice"),
        ("portal:invoice_pay", "invoice"),
        ("portal:payment_detail", "payment"),
        ("portal:payment_pdf", "payment"),
    ):
        assert client.get(reverse(name, args=[visible[kind].public_id])).status_code == 200, name
        assert client.get(reverse(name, args=[hidden[kind].public_id])).status_code == 404, name

    lists = {
        "portal:invoices": "invoice",
        "portal:payments": "payment",
        "portal:credits": "credit_note",
        "portal:dashboard": "invoice",
    }
    for name, kind in lists.items():
        text = text_of(client.get(reverse(name)))
        number = {"payment": "receipt_number"}.get(kind, "number")
        assert getattr(visible[kind], number) in text, name
        assert getattr(hidden[kind], number) not in text, name
        assert getattr(scene["stranger"][kind], number) not in text, name

    statement = reverse("portal:statement")
    branch = scene["customers"]
    query = "?period=this_year&customer="
    assert client.get(f"{statement}{query}{branch['visible'].public_id}").status_code == 200
    assert client.get(f"{statement}{query}{branch['hidden'].public_id}").status_code == 404
    assert client.get(f"{statement}{query}{branch['stranger'].public_id}").status_code == 404


def test_hidden_branch_filter_values_are_ignored_in_lists(client, scene):
    """A hidden branch's public id in a list filter is not a valid choice: nothing leaks."""
    hidden = scene["customers"]["hidden"]
    for name, kind, number in (
        ("portal:invoices", "invoice", "number"),
        ("portal:payments", "payment", "receipt_number"),
    ):
        response = client.get(f"{reverse(name)}?customer={hidden.public_id}")
        assert response.status_code == 200
        assert getattr(scene["hidden"][kind], number) not in text_of(response)


def test_viewer_cannot_pay_one_invoice_or_all(client, organization):
    viewer = ContactPersonFactory(with_login=True)  # role: viewer
    invoice = InvoiceFactory(customer=viewer.customer)
    login_verified(client, viewer.user)
    reauthenticate(client)
    client.get(reverse("portal:dashboard"))
    before = database_state()
    data = {
        "idempotency_key": uuid.uuid4().hex,
        "summary": "0" * 64,
        "method": "new",
        "number": VISA,
        "exp": "12/30",
        "cvc": "123",
    }

    for url in (reverse("portal:invoice_pay", args=[invoice.public_id]), reverse("portal:pay_all")):
        assert client.get(url).status_code == 403, url
        assert client.post(url, data).status_code == 403, url
    detail = client.get(reverse("portal:invoice_detail", args=[invoice.public_id]))
    assert detail.status_code == 200
    assert reverse("portal:invoice_pay", args=[invoice.public_id]) not in detail.content.decode()
    assert changes(before, database_state()) == {}
    assert not Payment.objects.exists()
    assert Invoice.objects.get(pk=invoice.pk).status == "open"
