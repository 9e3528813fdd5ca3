"""Forwarding an invoice by email to the customer's own contacts, from the portal."""

import datetime
import io

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader

from billing.enums import ActorKind
from billing.errors import NotAllowed, ValidationFailed
from billing.models import Event
from portal.models import PortalPreferences
from portal.services import FORWARD_LIMIT, invoice_forward
from tests.factories import ContactPersonFactory, CustomerFactory, InvoiceFactory
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def customer(organization):
    return CustomerFactory(display_name="Globex")


@pytest.fixture
def invoice(customer):
    return InvoiceFactory(customer=customer, number="INV-000042")


@pytest.fixture
def colleagues(customer):
    return [
        ContactPersonFactory(customer=customer, first_name="Amy", email="amy@globex.example"),
        ContactPersonFactory(customer=customer, first_name="Ben", email="ben@globex.example"),
    ]


def sign_in(client, customer, **traits):
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def forward_url(invoice) -> str:
    return reverse("portal:invoice_forward", args=[invoice.public_id])


def forwarded_events():
    return Event.objects.filter(kind="invoice.forwarded")


def set_preferences(**values) -> None:
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


def test_forward_form_lists_own_contacts_and_changes_nothing(client, customer, invoice, colleagues):
    ContactPersonFactory(first_name="Stranger", email="x@elsewhere.example")
    sign_in(client, customer)

    response = client.get(forward_url(invoice))

    assert response.status_code == 200
    assert "Forward invoice INV-000042" in response.text
    assert "amy@globex.example" in response.text and "ben@globex.example" in response.text
    assert 'type="checkbox"' in response.text
    assert "x@elsewhere.example" not in response.text
    assert 'type="email"' not in response.text  # no free-form addresses
    assert mail.outbox == [] and not forwarded_events().exists()


def test_forward_post_emails_pdf_to_chosen_contacts_and_records_event(
    client, customer, invoice, colleagues, django_capture_on_commit_callbacks
):
    sender = sign_in(client, customer)
    amy, ben = colleagues

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            forward_url(invoice), {"contacts": [str(amy.public_id), str(ben.public_id)]}
        )

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:invoice_detail", args=[invoice.public_id])
    assert sorted(m.to[0] for m in mail.outbox) == ["amy@globex.example", "ben@globex.example"]
    message = mail.outbox[0]
    assert len(message.to) == 1  # one message each: recipients do not see each other
    assert message.subject == "Invoice INV-000042 from Northwind Cloud"
    assert sender.user.get_full_name() in message.body and "USD 100.00" in message.body
    name, content, mimetype = message.attachments[0]
    assert name == "invoice-INV-000042.pdf" and mimetype == "application/pdf"
    assert "INV-000042" in PdfReader(io.BytesIO(content)).pages[0].extract_text()
    event = forwarded_events().get()
    assert event.invoice == invoice and event.customer == customer
    assert event.actor_user == sender.user and event.actor_kind == ActorKind.CUSTOMER
    assert event.data["after"]["recipients"] == ["amy@globex.example", "ben@globex.example"]
    followed = client.get(response["Location"])
    assert "Invoice INV-000042 was sent to 2 contact(s)." in followed.text


def test_forward_email_waits_for_the_commit(client, customer, invoice, colleagues):
    sign_in(client, customer)

    # The test's transaction never commits here, so on_commit callbacks never run.
    response = client.post(forward_url(invoice), {"contacts": [str(colleagues[0].public_id)]})

    assert response.status_code == 302
    assert mail.outbox == []
    assert forwarded_events().count() == 1


def test_forward_other_customers_contact_is_refused_and_nothing_sent(
    client, customer, invoice, colleagues, django_capture_on_commit_callbacks
):
    stranger = ContactPersonFactory(email="x@elsewhere.example")
    sign_in(client, customer)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            forward_url(invoice),
            {"contacts": [str(colleagues[0].public_id), str(stranger.public_id)]},
        )

    assert response.status_code == 200
    assert "Choose among your company&#x27;s contacts." in response.text
    assert 'id="id_contacts-errors"' in response.text
    assert mail.outbox == [] and not forwarded_events().exists()


def test_forward_nothing_chosen_is_a_field_error(client, customer, invoice, colleagues):
    sign_in(client, customer)

    response = client.post(forward_url(invoice), {})

    assert response.status_code == 200
    assert "Choose at least one contact." in response.text
    assert not forwarded_events().exists()


def test_forward_service_refuses_contact_of_another_customer(customer, invoice, colleagues):
    stranger = ContactPersonFactory(email="x@elsewhere.example")

    with pytest.raises(ValidationFailed) as error:
        invoice_forward(invoice=invoice, contacts=[colleagues[0], stranger], actor=None)

    assert error.value.field == "contacts"
    assert not forwarded_events().exists()


def test_forward_rate_limit_refuses_the_sixth_within_an_hour(
    client, customer, invoice, colleagues, django_capture_on_commit_callbacks, time_machine
):
    sign_in(client, customer)
    data = {"contacts": [str(colleagues[0].public_id)]}

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(FORWARD_LIMIT):
            assert client.post(forward_url(invoice), data).status_code == 302
        refused = client.post(forward_url(invoice), data)

    assert refused.status_code == 200
    assert f"You can forward at most {FORWARD_LIMIT} invoices an hour" in refused.text
    assert len(mail.outbox) == FORWARD_LIMIT
    assert forwarded_events().count() == FORWARD_LIMIT


def test_forward_rate_limit_is_per_contact(client, customer, invoice, colleagues):
    first = sign_in(client, customer)
    for _ in range(FORWARD_LIMIT):
        invoice_forward(invoice=invoice, contacts=[colleagues[0]], actor=first.user)
    with pytest.raises(NotAllowed):
        invoice_forward(invoice=invoice, contacts=[colleagues[0]], actor=first.user)

    other = ContactPersonFactory(customer=customer, with_login=True)
    invoice_forward(invoice=invoice, contacts=[colleagues[0]], actor=other.user)

    assert forwarded_events().count() == FORWARD_LIMIT + 1


def test_forward_without_csrf_token_is_refused_and_nothing_sent(
    customer, invoice, colleagues, django_capture_on_commit_callbacks
):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, customer)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(forward_url(invoice), {"contacts": [str(colleagues[0].public_id)]})

    assert response.status_code == 403
    assert mail.outbox == [] and not forwarded_events().exists()


def test_forward_other_customers_invoice_is_404_and_nothing_sent(
    client, customer, colleagues, django_capture_on_commit_callbacks
):
    foreign = InvoiceFactory(number="FOREIGN-1")
    sign_in(client, customer)

    with django_capture_on_commit_callbacks(execute=True):
        posted = client.post(forward_url(foreign), {"contacts": [str(colleagues[0].public_id)]})
    shown = client.get(forward_url(foreign))

    assert posted.status_code == 404 and shown.status_code == 404
    assert mail.outbox == [] and not forwarded_events().exists()


@pytest.fixture
def family(organization):
    parent = CustomerFactory(display_name="Acme Corp")
    berlin = CustomerFactory(display_name="Acme Berlin", parent=parent)
    hidden = CustomerFactory(display_name="Acme Secret", parent=parent, hidden_from_parent=True)
    return parent, berlin, hidden


def test_forward_parent_sends_visible_branch_invoice_to_branch_or_own_contacts(
    client, family, django_capture_on_commit_callbacks
):
    parent, berlin, _hidden = family
    branch_invoice = InvoiceFactory(customer=berlin, number="BERLIN-1")
    branch_contact = ContactPersonFactory(customer=berlin, email="ops@berlin.example")
    accountant = ContactPersonFactory(customer=parent, email="ap@acme.example")
    sign_in(client, parent)

    form = client.get(forward_url(branch_invoice))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            forward_url(branch_invoice),
            {"contacts": [str(branch_contact.public_id), str(accountant.public_id)]},
        )

    assert "ops@berlin.example" in form.text and "· Acme Berlin" in form.text
    assert "ap@acme.example" in form.text and "· Acme Corp" in form.text
    assert response.status_code == 302
    assert sorted(m.to[0] for m in mail.outbox) == ["ap@acme.example", "ops@berlin.example"]
    assert forwarded_events().get().customer == berlin


def test_forward_parent_cannot_forward_hidden_branch_invoice(
    client, family, django_capture_on_commit_callbacks
):
    parent, _berlin, hidden = family
    secret = InvoiceFactory(customer=hidden, number="SECRET-1")
    accountant = ContactPersonFactory(customer=parent, email="ap@acme.example")
    sign_in(client, parent)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(forward_url(secret), {"contacts": [str(accountant.public_id)]})

    assert response.status_code == 404
    assert client.get(forward_url(secret)).status_code == 404
    assert mail.outbox == [] and not forwarded_events().exists()


def test_forward_branch_user_is_not_offered_the_parents_contacts(client, family):
    parent, berlin, _hidden = family
    invoice = InvoiceFactory(customer=berlin)
    ContactPersonFactory(customer=parent, email="ap@acme.example")
    own = ContactPersonFactory(customer=berlin, email="ops@berlin.example")
    sign_in(client, berlin)

    response = client.get(forward_url(invoice))

    assert "ops@berlin.example" in response.text and str(own.public_id) in response.text
    assert "ap@acme.example" not in response.text


@pytest.mark.parametrize("preference", ["allow_document_forward", "show_invoices"])
def test_forward_switched_off_is_hidden_and_404(
    client, customer, invoice, colleagues, preference, django_capture_on_commit_callbacks
):
    sign_in(client, customer)
    set_preferences(**{preference: False})

    with django_capture_on_commit_callbacks(execute=True):
        posted = client.post(forward_url(invoice), {"contacts": [str(colleagues[0].public_id)]})

    assert posted.status_code == 404
    assert client.get(forward_url(invoice)).status_code == 404
    assert mail.outbox == [] and not forwarded_events().exists()


def test_forward_viewer_may_forward(client, customer, invoice, colleagues):
    """Forwarding only shares what the contact can already see, so viewers may do it."""
    sign_in(client, customer)  # the factory's default role is viewer

    response = client.post(forward_url(invoice), {"contacts": [str(colleagues[0].public_id)]})

    assert response.status_code == 302
    assert forwarded_events().count() == 1


def test_forward_draft_invoice_is_404(client, customer, colleagues):
    draft = InvoiceFactory(customer=customer, draft=True)
    sign_in(client, customer)

    response = client.post(forward_url(draft), {"contacts": [str(colleagues[0].public_id)]})

    assert response.status_code == 404
    assert not forwarded_events().exists()


def test_forward_page_query_count_is_bounded(client, customer, invoice, colleagues):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    sign_in(client, customer)
    client.get(forward_url(invoice))
    with CaptureQueriesContext(connection) as queries:
        client.get(forward_url(invoice))

    assert len(queries) <= 10
