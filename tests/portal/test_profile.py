"""The company profile: the customer's details and its contact persons, read by everyone and
changed by the company's portal admins (when the merchant allows it)."""

import datetime
import re
import threading

import pytest
from django.db import close_old_connections, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.enums import PortalRole
from billing.errors import ValidationFailed
from billing.models import ContactPerson, Customer, Event
from portal.models import PortalPreferences
from portal.services_profile import ContactDetails, contact_update
from tests.factories import ContactPersonFactory, CustomerFactory, InvoiceFactory
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 3, 20, 12, 0, tzinfo=datetime.UTC)
URL = reverse("portal:company")
EDIT_URL = reverse("portal:company_edit")
ADD_URL = reverse("portal:company_contact_add")


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(
        display_name="Globex",
        company_name="Globex Corporation",
        email="ap@globex.example",
        phone="+1 555 0100",
        tax_id="US-123",
        billing_line1="1 Main Street",
        billing_city="Springfield",
        billing_postal_code="12345",
        billing_country="United States",
    )


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


def details_post(**changes) -> dict:
    data = {
        "company_name": "Globex Corporation",
        "email": "ap@globex.example",
        "phone": "+1 555 0100",
        "tax_id": "US-123",
        "billing_line1": "1 Main Street",
        "billing_line2": "",
        "billing_city": "Springfield",
        "billing_state": "",
        "billing_postal_code": "12345",
        "billing_country": "United States",
        "shipping_line1": "",
        "shipping_line2": "",
        "shipping_city": "",
        "shipping_state": "",
        "shipping_postal_code": "",
        "shipping_country": "",
    }
    data.update(changes)
    return data


def contact_post(**changes) -> dict:
    data = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": "grace@globex.example",
        "phone": "",
        "receives_documents": "on",
        "portal_role": PortalRole.VIEWER,
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def edit_url(contact) -> str:
    return reverse("portal:company_contact_edit", args=[contact.public_id])


def remove_url(contact) -> str:
    return reverse("portal:company_contact_remove", args=[contact.public_id])


# ----------------------------------------------------------------------------- reading


def test_company_page_viewer_sees_details_and_contacts_read_only(client, customer):
    me = sign_in(client, customer)
    ContactPersonFactory(customer=customer, first_name="Ada", last_name="Admin", admin=True)

    response = client.get(URL)

    assert response.status_code == 200
    for text in ("Globex Corporation", "ap@globex.example", "+1 555 0100", "US-123"):
        assert text in response.text
    assert "Springfield, 12345" in response.text
    assert "Ada Admin" in response.text and me.email in response.text
    assert "Only your company's portal admins can change these details." in response.text
    assert EDIT_URL not in response.text and ADD_URL not in response.text
    assert edit_url(me) not in response.text


def test_company_page_admin_sees_edit_links(client, customer):
    me = sign_in(client, customer, admin=True)

    response = client.get(URL)

    assert EDIT_URL in response.text and ADD_URL in response.text
    assert edit_url(me) in response.text and remove_url(me) in response.text


def test_company_page_edit_preference_off_is_read_only_for_admins(client, customer):
    me = sign_in(client, customer, admin=True)
    set_preferences(allow_customer_edit=False)

    response = client.get(URL)

    assert response.status_code == 200
    assert EDIT_URL not in response.text and ADD_URL not in response.text
    assert "To change these details, contact Northwind Cloud" in response.text
    for url in (EDIT_URL, ADD_URL, edit_url(me), remove_url(me)):
        assert client.get(url).status_code == 404
        assert client.post(url, contact_post()).status_code == 404
    assert ContactPerson.objects.filter(customer=customer).count() == 1


def test_company_page_query_count_is_bounded_and_constant(client, organization):
    small, large = CustomerFactory(), CustomerFactory()
    ContactPerson.objects.bulk_create(
        ContactPerson(customer=large, first_name=f"Person {n}", email=f"p{n}@large.example")
        for n in range(500)
    )
    sign_in(client, small, admin=True)
    few = count_queries(client, URL)
    client.logout()
    sign_in(client, large, admin=True)
    many = count_queries(client, URL)

    assert few == many <= 10
    assert count_queries(client, EDIT_URL) <= 10


# ----------------------------------------------------------------------------- details


def test_company_edit_viewer_and_payer_are_refused_and_nothing_changes(client, customer):
    for role in ("viewer", "payer"):
        client.logout()
        sign_in(client, customer, portal_role=role)
        assert client.get(EDIT_URL).status_code == 403
        assert client.post(EDIT_URL, details_post(company_name="Hacked")).status_code == 403
    customer.refresh_from_db()
    assert customer.company_name == "Globex Corporation"


def test_company_edit_admin_saves_details_and_records_event(client, customer):
    sign_in(client, customer, admin=True)

    response = client.post(
        EDIT_URL,
        details_post(company_name="Globex Inc", phone="+1 555 0199", billing_line1="2 Elm Road"),
        follow=True,
    )

    assert response.redirect_chain == [(URL, 302)]
    assert "Your company details were saved." in response.text
    assert "Globex Inc" in response.text and "2 Elm Road" in response.text
    customer.refresh_from_db()
    assert (customer.company_name, customer.phone, customer.billing_line1) == (
        "Globex Inc",
        "+1 555 0199",
        "2 Elm Road",
    )
    event = Event.objects.get(kind="customer.details_updated")
    assert event.customer == customer and event.actor_kind == "customer"
    assert event.data["before"]["company_name"] == "Globex Corporation"
    assert event.data["after"]["billing_line1"] == "2 Elm Road"


def test_company_edit_never_rewrites_finalized_invoice_snapshot(client, customer):
    snapshot = {
        "name": "Globex",
        "company": "Globex Corporation",
        "email": "ap@globex.example",
        "address_lines": ["Globex Corporation", "1 Main Street", "Springfield, 12345"],
        "tax_id": "US-123",
    }
    invoice = InvoiceFactory(customer=customer, billing_details=snapshot)
    sign_in(client, customer, admin=True)

    client.post(
        EDIT_URL,
        details_post(company_name="Globex Inc", email="new@globex.example", tax_id="US-999"),
    )

    invoice.refresh_from_db()
    assert invoice.billing_details == snapshot
    customer.refresh_from_db()
    assert customer.tax_id == "US-999"


def test_company_edit_invalid_input_shows_errors_next_to_fields(client, customer):
    sign_in(client, customer, admin=True)

    response = client.post(
        EDIT_URL, details_post(email="not-an-email", billing_postal_code="9" * 30)
    )

    assert response.status_code == 200
    assert field_error(response, "email") == "Enter a valid email address."
    assert field_error(response, "billing_postal_code").startswith(
        "Ensure this value has at most 20 characters"
    )
    assert 'aria-describedby="id_email-help id_email-errors"' in response.text or (
        'aria-describedby="id_email-errors id_email-help"' in response.text
    )
    customer.refresh_from_db()
    assert customer.email == "ap@globex.example"
    assert not Event.objects.filter(kind="customer.details_updated").exists()


def test_company_edit_same_as_billing_copies_billing_address(client, customer):
    sign_in(client, customer, admin=True)

    client.post(
        EDIT_URL,
        details_post(same_as_billing="on", shipping_line1="ignored", shipping_city="x" * 300),
    )

    customer.refresh_from_db()
    assert (customer.shipping_line1, customer.shipping_city, customer.shipping_country) == (
        "1 Main Street",
        "Springfield",
        "United States",
    )


def test_company_edit_htmx_swaps_form_then_details(client, customer):
    sign_in(client, customer, admin=True)
    headers = {"HX-Request": "true"}

    form = client.get(EDIT_URL, headers=headers)
    saved = client.post(EDIT_URL, details_post(company_name="Globex Inc"), headers=headers)

    assert form.text.lstrip().startswith('<section id="company-details"')
    assert "<html" not in form.text and 'name="csrfmiddlewaretoken"' in form.text
    assert saved.status_code == 200 and "<html" not in saved.text
    assert "Your company details were saved." in saved.text and "Globex Inc" in saved.text


def test_company_edit_requires_csrf_token(customer):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, customer, admin=True)

    response = client.post(EDIT_URL, details_post(company_name="Forged"))

    assert response.status_code == 403
    customer.refresh_from_db()
    assert customer.company_name == "Globex Corporation"


# ----------------------------------------------------------------------------- contacts


def test_contact_add_admin_creates_contact_and_event(client, customer):
    sign_in(client, customer, admin=True)

    response = client.post(ADD_URL, contact_post(portal_role=PortalRole.PAYER), follow=True)

    assert "Grace Hopper was added to your contacts." in response.text
    contact = ContactPerson.objects.get(customer=customer, email="grace@globex.example")
    assert contact.portal_role == PortalRole.PAYER and contact.receives_documents
    assert contact.user is None
    event = Event.objects.get(kind="contact.added")
    assert event.customer == customer and event.data["after"]["email"] == "grace@globex.example"


def test_contact_add_duplicate_email_error_next_to_field(client, customer):
    sign_in(client, customer, admin=True)
    ContactPersonFactory(customer=customer, email="grace@globex.example")

    response = client.post(ADD_URL, contact_post(email="GRACE@globex.example"))

    assert response.status_code == 200
    assert field_error(response, "email") == "Another contact already uses this email address."
    assert ContactPerson.objects.filter(customer=customer).count() == 2


def test_contact_add_missing_name_and_bad_email_show_errors(client, customer):
    sign_in(client, customer, admin=True)

    response = client.post(ADD_URL, contact_post(first_name="", email="nope"))

    assert field_error(response, "first_name") == "This field is required."
    assert field_error(response, "email") == "Enter a valid email address."


def test_contact_add_viewer_is_refused(client, customer):
    sign_in(client, customer, portal_role="payer")

    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, contact_post()).status_code == 403
    assert not ContactPerson.objects.filter(email="grace@globex.example").exists()


def test_contact_edit_and_remove_viewer_is_refused_and_nothing_changes(client, customer):
    sign_in(client, customer)  # a viewer
    other = ContactPersonFactory(customer=customer, first_name="Alan", portal_role="viewer")

    for url in (edit_url(other), remove_url(other)):
        assert client.get(url).status_code == 403
    assert client.post(edit_url(other), contact_post(portal_role="admin")).status_code == 403
    assert client.post(remove_url(other)).status_code == 403
    other.refresh_from_db()
    assert other.portal_role == "viewer" and other.first_name == "Alan"
    assert not Event.objects.filter(kind__startswith="contact.").exists()


def test_contact_edit_admin_changes_role_and_documents(client, customer):
    sign_in(client, customer, admin=True)
    other = ContactPersonFactory(customer=customer, first_name="Alan", email="alan@globex.example")

    response = client.post(
        edit_url(other),
        contact_post(
            first_name="Alan",
            email="alan@globex.example",
            receives_documents=None,
            portal_role=PortalRole.ADMIN,
        ),
    )

    assert response.status_code == 302
    other.refresh_from_db()
    assert other.portal_role == PortalRole.ADMIN and not other.receives_documents
    event = Event.objects.get(kind="contact.updated")
    assert event.data["before"]["portal_role"] == "viewer"
    assert event.data["after"]["portal_role"] == "admin"


def test_contact_edit_last_admin_cannot_demote_self(client, customer):
    me = sign_in(client, customer, admin=True)
    ContactPersonFactory(customer=customer, admin=True)  # an admin without a login

    response = client.post(
        edit_url(me),
        contact_post(first_name=me.first_name, email=me.email, portal_role=PortalRole.VIEWER),
    )

    assert response.status_code == 200
    assert "is the only admin with portal access and cannot be given another role" in (
        field_error(response, "portal_role")
    )
    me.refresh_from_db()
    assert me.portal_role == PortalRole.ADMIN
    assert not Event.objects.filter(kind="contact.updated").exists()


def test_contact_edit_admin_may_demote_self_when_another_admin_exists(client, customer):
    me = sign_in(client, customer, admin=True)
    ContactPersonFactory(customer=customer, admin=True, with_login=True)

    client.post(
        edit_url(me),
        contact_post(first_name=me.first_name, email=me.email, portal_role=PortalRole.VIEWER),
    )

    me.refresh_from_db()
    assert me.portal_role == PortalRole.VIEWER
    assert client.get(EDIT_URL).status_code == 403  # the new role applies at once


def test_contact_remove_last_admin_cannot_remove_self(client, customer):
    me = sign_in(client, customer, admin=True)

    confirm = client.get(remove_url(me))
    response = client.post(remove_url(me))

    assert confirm.status_code == 200 and "This is you" in confirm.text
    assert response.status_code == 400
    assert "is the only admin with portal access and cannot be removed" in response.text
    assert ContactPerson.objects.filter(pk=me.pk).exists()


def test_contact_remove_admin_removes_other_contact_after_confirming(client, customer):
    sign_in(client, customer, admin=True)
    other = ContactPersonFactory(customer=customer, first_name="Alan", last_name="Turing")

    confirm = client.get(remove_url(other))
    assert ContactPerson.objects.filter(pk=other.pk).exists()  # GET changes nothing
    response = client.post(remove_url(other), follow=True)

    assert "Remove Alan Turing?" in confirm.text
    assert "Alan Turing was removed from your contacts." in response.text
    assert not ContactPerson.objects.filter(pk=other.pk).exists()
    event = Event.objects.get(kind="contact.removed")
    assert event.data["before"]["email"] == other.email


def test_contact_urls_another_customers_contact_is_404_and_unchanged(client, customer):
    sign_in(client, customer, admin=True)
    stranger = ContactPersonFactory(first_name="Eve", portal_role=PortalRole.VIEWER)

    assert client.get(edit_url(stranger)).status_code == 404
    assert client.post(edit_url(stranger), contact_post(portal_role="admin")).status_code == 404
    assert client.post(remove_url(stranger)).status_code == 404
    stranger.refresh_from_db()
    assert stranger.portal_role == PortalRole.VIEWER and stranger.first_name == "Eve"


def test_contact_urls_parent_admin_cannot_edit_branch_contacts(client, organization):
    parent = CustomerFactory(display_name="Acme Group")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    hidden = CustomerFactory(display_name="Acme Secret", parent=parent, hidden_from_parent=True)
    sign_in(client, parent, admin=True)
    branch_contacts = [ContactPersonFactory(customer=c) for c in (berlin, hidden)]

    response = client.get(URL)
    for contact in branch_contacts:
        assert client.get(edit_url(contact)).status_code == 404
        assert client.post(remove_url(contact)).status_code == 404
        assert contact.email not in response.text
    assert ContactPerson.objects.filter(pk__in=[c.pk for c in branch_contacts]).count() == 2


def test_contact_remove_requires_csrf_token(customer):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, customer, admin=True)
    other = ContactPersonFactory(customer=customer)

    assert client.post(remove_url(other)).status_code == 403
    assert client.post(ADD_URL, contact_post()).status_code == 403
    assert client.post(edit_url(other), contact_post()).status_code == 403
    assert ContactPerson.objects.filter(customer=customer).count() == 2


@pytest.mark.django_db(transaction=True)
def test_contact_update_two_admins_demoting_each_other_at_once_keep_one_admin(organization):
    """The customer row lock serialises the last-admin check: without it both demotions
    would see the other admin still in place and both succeed."""
    customer = CustomerFactory()
    first = ContactPersonFactory(customer=customer, admin=True, with_login=True)
    second = ContactPersonFactory(customer=customer, admin=True, with_login=True)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(target, actor_contact):
        try:
            barrier.wait()
            details = ContactDetails(
                first_name=target.first_name,
                last_name=target.last_name,
                email=target.email,
                phone=target.phone,
                receives_documents=target.receives_documents,
                portal_role=PortalRole.VIEWER,
            )
            contact_update(contact=target, details=details, actor=actor_contact.user)
            outcomes.append("demoted")
        except ValidationFailed:
            outcomes.append("refused")
        finally:
            close_old_connections()

    threads = [
        threading.Thread(target=demote, args=(second, first)),
        threading.Thread(target=demote, args=(first, second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["demoted", "refused"]
    assert ContactPerson.objects.filter(customer=customer, portal_role="admin").count() == 1
    assert Customer.objects.filter(pk=customer.pk).exists()
