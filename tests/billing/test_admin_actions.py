"""The merchant staff admin, driven through the real admin URLs as a logged-in superuser."""

import datetime
import re
from decimal import Decimal

import pytest
import time_machine
from allauth.account.models import EmailAddress
from django.contrib import admin
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User
from billing.enums import ActorKind, PaymentStatus
from billing.models import (
    ContactPerson,
    Customer,
    DunningPolicy,
    Event,
    Invoice,
    Organization,
    Payment,
    PriceListItem,
    Subscription,
)
from portal.models import PortalPreferences
from tests.factories import (
    ContactPersonFactory,
    CouponFactory,
    CreditAllocationFactory,
    CustomerFactory,
    CustomerGroupFactory,
    EventFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentAttemptFactory,
    PaymentFactory,
    PaymentMethodFactory,
    PlanFactory,
    PriceListFactory,
    RefundFactory,
    ScheduledChangeFactory,
    SubscriptionAddonFactory,
    SubscriptionCouponFactory,
    SubscriptionFactory,
    UsageRecordFactory,
    UserFactory,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

# The factories bill around 2026-01-15; "today" for due dates is pinned a few days later.
NOW = datetime.datetime(2026, 1, 20, 12, 0, tzinfo=datetime.UTC)
CUSTOMER_CHANGELIST = reverse("admin:billing_customer_changelist")
INVOICE_CHANGELIST = reverse("admin:billing_invoice_changelist")
LINK_RE = re.compile(r"https?://[^/\s]+(/accounts/password/reset/key/[^\s\"<]+)")


def _action(client, url, action, objects, **data):
    payload = {"action": action, "_selected_action": [obj.pk for obj in objects], **data}
    return client.post(url, payload)


def _confirm(client, url, action, objects, **data):
    return _action(client, url, action, objects, confirm="yes", **data)


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


# ----------------------------------------------------------------------------- move to group
def test_move_to_group_first_post_renders_confirmation_listing_selected_customers(staff_client):
    chosen = CustomerFactory.create_batch(2)
    other = CustomerFactory(display_name="Not chosen Inc")
    group = CustomerGroupFactory(name="Wholesale")

    response = _action(staff_client, CUSTOMER_CHANGELIST, "move_to_group", chosen)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/billing/action_confirmation.html"
    html = response.content.decode()
    for customer in chosen:
        assert customer.display_name in html
        assert f'name="_selected_action" value="{customer.pk}"' in html
    assert other.display_name not in html
    assert f'<option value="{group.pk}">Wholesale</option>' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'value="Apply"' in html
    assert "2 selected customers" in html
    # Nothing changes before "Apply".
    assert Customer.objects.filter(group__isnull=False).count() == 0


def test_move_to_group_applied_sets_group_and_its_terms_and_records_events(
    staff_client, staff_user
):
    group = CustomerGroupFactory(name="Wholesale", payment_terms_days=45)
    chosen = CustomerFactory.create_batch(3, payment_terms_days=14)
    untouched = CustomerFactory(payment_terms_days=14)

    response = _confirm(staff_client, CUSTOMER_CHANGELIST, "move_to_group", chosen, group=group.pk)

    assert response.status_code == 302
    for customer in chosen:
        customer.refresh_from_db()
        assert customer.group_id == group.pk
        assert customer.payment_terms_days == 45
    untouched.refresh_from_db()
    assert untouched.group_id is None
    events = Event.objects.filter(kind="customer.group_changed")
    assert sorted(e.customer_id for e in events) == sorted(c.pk for c in chosen)
    event = events.get(customer=chosen[0])
    assert event.actor_kind == ActorKind.STAFF
    assert event.actor_user == staff_user
    assert event.data["before"] == {"group_id": None, "group": None, "payment_terms_days": 14}
    assert event.data["after"] == {
        "group_id": group.pk,
        "group": "Wholesale",
        "payment_terms_days": 45,
    }
    followed = staff_client.get(response.url)
    assert "Moved 3 customers to Wholesale." in _messages(followed)


def test_move_to_group_group_without_terms_keeps_customer_terms(staff_client):
    group = CustomerGroupFactory(payment_terms_days=None)
    customer = CustomerFactory(payment_terms_days=30)

    _confirm(staff_client, CUSTOMER_CHANGELIST, "move_to_group", [customer], group=group.pk)

    customer.refresh_from_db()
    assert (customer.group_id, customer.payment_terms_days) == (group.pk, 30)


def test_move_to_group_applied_without_choice_rerenders_form_and_changes_nothing(staff_client):
    group = CustomerGroupFactory()
    customer = CustomerFactory(group=group)

    response = _confirm(staff_client, CUSTOMER_CHANGELIST, "move_to_group", [customer], group="")

    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    customer.refresh_from_db()
    assert customer.group_id == group.pk
    assert not Event.objects.exists()


def test_move_to_group_no_group_choice_removes_customers_from_their_group(staff_client):
    group = CustomerGroupFactory(payment_terms_days=45)
    customer = CustomerFactory(group=group, payment_terms_days=45)

    _confirm(staff_client, CUSTOMER_CHANGELIST, "move_to_group", [customer], group="none")

    customer.refresh_from_db()
    assert (customer.group_id, customer.payment_terms_days) == (None, 45)
    event = Event.objects.get(kind="customer.group_changed")
    assert event.data["after"]["group_id"] is None


def test_move_to_group_select_across_applies_to_every_filtered_customer(staff_client):
    group = CustomerGroupFactory()
    active = CustomerFactory.create_batch(3)
    inactive = CustomerFactory(inactive=True)

    response = staff_client.post(
        f"{CUSTOMER_CHANGELIST}?status__exact=active",
        {
            "action": "move_to_group",
            "select_across": "1",
            "_selected_action": [active[0].pk],
            "group": group.pk,
            "confirm": "yes",
        },
    )

    assert response.status_code == 302
    assert set(Customer.objects.filter(group=group)) == set(active)
    inactive.refresh_from_db()
    assert inactive.group_id is None


def _form_fields_data(form) -> dict:
    """What a browser would post back for ``form`` unchanged."""
    data = {}
    for bound in form:
        value = bound.value()
        # JSON fields come back from value() already serialized (prepare_value).
        if isinstance(value, bool):
            if value:
                data[bound.html_name] = "on"
        elif isinstance(value, (list, tuple)):
            data[bound.html_name] = [str(v) for v in value]
        else:
            data[bound.html_name] = "" if value is None else str(value)
    return data


def _change_form_data(response) -> dict:
    """The POST data of an admin change page as rendered: the form and every inline formset."""
    data = _form_fields_data(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(_form_fields_data(formset.management_form))
        for form in formset.initial_forms:
            data.update(_form_fields_data(form))
        data[formset.management_form.add_prefix("TOTAL_FORMS")] = str(len(formset.initial_forms))
    return data


def test_customer_change_form_group_change_applies_group_terms_through_service(staff_client):
    group = CustomerGroupFactory(payment_terms_days=60)
    customer = CustomerFactory(payment_terms_days=14)
    ContactPersonFactory(customer=customer)
    CustomerFactory(parent=customer)
    url = reverse("admin:billing_customer_change", args=[customer.pk])
    data = _change_form_data(staff_client.get(url))
    data["group"] = str(group.pk)

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    customer.refresh_from_db()
    assert (customer.group_id, customer.payment_terms_days) == (group.pk, 60)
    assert Event.objects.filter(customer=customer, kind="customer.group_changed").count() == 1


def test_customer_change_form_group_and_terms_typed_terms_win(staff_client):
    group = CustomerGroupFactory(payment_terms_days=60)
    customer = CustomerFactory(payment_terms_days=14)
    url = reverse("admin:billing_customer_change", args=[customer.pk])
    data = _change_form_data(staff_client.get(url))
    data.update({"group": str(group.pk), "payment_terms_days": "7"})

    response = staff_client.post(url, data)

    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.group_id, customer.payment_terms_days) == (group.pk, 7)
    kinds = sorted(Event.objects.filter(customer=customer).values_list("kind", flat=True))
    assert kinds == ["customer.group_changed", "customer.payment_terms_changed"]


def test_subscription_change_form_with_timeline_saves(staff_client):
    subscription = SubscriptionFactory(auto_charge=True)
    SubscriptionAddonFactory(subscription=subscription)
    ScheduledChangeFactory(subscription=subscription)
    EventFactory(subscription=subscription, customer=subscription.customer)
    url = reverse("admin:billing_subscription_change", args=[subscription.pk])
    page = staff_client.get(url)
    assert 'name="status"' not in page.content.decode()
    data = _change_form_data(page)
    data.pop("auto_charge", None)

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription.refresh_from_db()
    assert subscription.auto_charge is False


def test_subscription_change_form_other_customers_card_refused(staff_client):
    subscription = SubscriptionFactory()
    foreign_card = PaymentMethodFactory()
    url = reverse("admin:billing_subscription_change", args=[subscription.pk])
    data = _change_form_data(staff_client.get(url))
    data["payment_method"] = str(foreign_card.pk)

    response = staff_client.post(url, data)

    assert response.status_code == 200
    assert "belongs to another customer" in response.content.decode()


def test_invoice_draft_change_form_total_not_adding_up_refused(staff_client):
    invoice = InvoiceFactory(draft=True)
    url = reverse("admin:billing_invoice_change", args=[invoice.pk])
    data = _change_form_data(staff_client.get(url))
    data["total"] = "99.00"

    response = staff_client.post(url, data)

    assert response.status_code == 200
    assert "subtotal − discount + tax" in response.content.decode()
    data["total"], data["subtotal"] = "120.00", "120.00"
    assert staff_client.post(url, data).status_code == 302
    invoice.refresh_from_db()
    assert invoice.total == Decimal("120.00")


@pytest.mark.parametrize(
    ("model", "field", "posted", "stored"),
    [
        (Organization, "name", "Northwind Cloud GmbH", "Northwind Cloud GmbH"),
        (DunningPolicy, "retry_days", "[2, 4]", [2, 4]),
        (PortalPreferences, "retention_message", "Stay with us", "Stay with us"),
    ],
)
def test_singleton_change_form_save_stays_on_settings_page(
    staff_client, model, field, posted, stored
):
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[model.load().pk])
    data = _change_form_data(staff_client.get(url))
    data[field] = posted

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert response.url == url
    assert getattr(model.load(), field) == stored


# ----------------------------------------------------------------------------- payment terms
def test_set_payment_terms_first_post_renders_confirmation_listing_selected_customers(
    staff_client,
):
    chosen = CustomerFactory.create_batch(2)

    response = _action(staff_client, CUSTOMER_CHANGELIST, "set_payment_terms", chosen)

    assert response.status_code == 200
    html = response.content.decode()
    assert all(customer.display_name in html for customer in chosen)
    assert 'name="days"' in html


def test_set_payment_terms_applied_changes_rows_and_records_events(staff_client):
    chosen = CustomerFactory.create_batch(2, payment_terms_days=None)
    already = CustomerFactory(payment_terms_days=30)

    response = _confirm(
        staff_client, CUSTOMER_CHANGELIST, "set_payment_terms", [*chosen, already], days=30
    )

    assert response.status_code == 302
    assert set(Customer.objects.values_list("payment_terms_days", flat=True)) == {30}
    events = Event.objects.filter(kind="customer.payment_terms_changed")
    assert sorted(e.customer_id for e in events) == sorted(c.pk for c in chosen)
    assert events.first().data == {
        "before": {"payment_terms_days": None},
        "after": {"payment_terms_days": 30},
    }
    followed = staff_client.get(response.url)
    assert any("for 2 customers; 1 already had them" in m for m in _messages(followed))


def test_set_payment_terms_out_of_range_rerenders_form_with_error(staff_client):
    customer = CustomerFactory(payment_terms_days=14)

    response = _confirm(
        staff_client, CUSTOMER_CHANGELIST, "set_payment_terms", [customer], days=999
    )

    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    customer.refresh_from_db()
    assert customer.payment_terms_days == 14
    assert not Event.objects.exists()


# ----------------------------------------------------------------------------- invitations
def _invitation_link(message) -> str:
    match = LINK_RE.search(message.body)
    assert match, message.body
    return match.group(1)


def test_invite_contacts_first_post_lists_customers_and_contacts_to_invite(staff_client):
    contact = ContactPersonFactory(email="ada@acme.test")
    signed_up = ContactPersonFactory(customer=contact.customer, with_login=True)

    response = _action(staff_client, CUSTOMER_CHANGELIST, "invite_contacts", [contact.customer])

    assert response.status_code == 200
    html = response.content.decode()
    assert contact.customer.display_name in html
    assert "ada@acme.test" in html
    assert signed_up.email not in html
    assert not mail.outbox


def test_invite_contacts_applied_sends_one_email_per_contact_with_working_link(
    staff_client, django_capture_on_commit_callbacks, organization
):
    first, second = CustomerFactory.create_batch(2)
    contacts = [
        ContactPersonFactory(customer=first, email="Ada@Acme.test"),
        ContactPersonFactory(customer=first),
        ContactPersonFactory(customer=second),
    ]
    ContactPersonFactory(customer=second, with_login=True)  # already signed up: left alone

    with django_capture_on_commit_callbacks(execute=True):
        response = _confirm(staff_client, CUSTOMER_CHANGELIST, "invite_contacts", [first, second])

    assert response.status_code == 302
    assert sorted(m.to[0] for m in mail.outbox) == sorted(c.email.lower() for c in contacts)
    for contact in contacts:
        contact.refresh_from_db()
        assert contact.user is not None
        assert contact.invited_at is not None
        assert contact.user.email == contact.email.lower()
        assert not contact.user.has_usable_password()
        assert not contact.user.is_staff
        assert EmailAddress.objects.filter(
            user=contact.user, email=contact.user.email, verified=True, primary=True
        ).exists()
    assert Event.objects.filter(kind="contact.invited").count() == 3
    message = next(m for m in mail.outbox if m.to == ["ada@acme.test"])
    assert organization.name in message.subject
    assert organization.name in message.body
    html_body = message.alternatives[0][0]
    assert organization.name in html_body
    followed = staff_client.get(response.url)
    assert "Sent portal invitations to 3 contacts of 2 customers." in _messages(followed)

    # The link opens allauth's set-password page (via its key-less redirect) for a visitor.
    visitor = Client()
    page = visitor.get(_invitation_link(message), follow=True)
    assert page.status_code == 200
    assert "password1" in page.content.decode()


def test_invitation_link_after_password_set_no_longer_works(
    staff_client, django_capture_on_commit_callbacks
):
    contact = ContactPersonFactory()
    with django_capture_on_commit_callbacks(execute=True):
        _confirm(staff_client, CUSTOMER_CHANGELIST, "invite_contacts", [contact.customer])
    link = _invitation_link(mail.outbox[0])
    visitor = Client()
    form_page = visitor.get(link, follow=True)
    password = "a long enough secret 42"

    done = visitor.post(
        form_page.request["PATH_INFO"], {"password1": password, "password2": password}
    )

    assert done.status_code == 302
    contact.refresh_from_db()
    assert contact.user.check_password(password)
    again = Client().get(link, follow=True)
    assert "password1" not in again.content.decode()


def test_invite_contacts_twice_reuses_the_user_and_voids_the_first_link(
    staff_client, django_capture_on_commit_callbacks
):
    contact = ContactPersonFactory()
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            _confirm(staff_client, CUSTOMER_CHANGELIST, "invite_contacts", [contact.customer])

    assert User.objects.filter(email__iexact=contact.email).count() == 1
    assert len(mail.outbox) == 2
    first_link, second_link = (_invitation_link(m) for m in mail.outbox)
    assert "password1" not in Client().get(first_link, follow=True).content.decode()
    assert "password1" in Client().get(second_link, follow=True).content.decode()


def test_invite_contacts_staff_email_refused_with_message_and_nothing_sent(
    staff_client, staff_user, django_capture_on_commit_callbacks
):
    customer = CustomerFactory()
    ordinary = ContactPersonFactory(customer=customer)
    ContactPersonFactory(customer=customer, email=staff_user.email.upper())

    with django_capture_on_commit_callbacks(execute=True):
        response = _confirm(staff_client, CUSTOMER_CHANGELIST, "invite_contacts", [customer])

    assert response.status_code == 302
    followed = staff_client.get(response.url)
    assert any("staff account" in m for m in _messages(followed))
    assert not mail.outbox
    ordinary.refresh_from_db()
    assert ordinary.user is None
    assert User.objects.count() == 1
    assert not Event.objects.exists()
    staff_user.refresh_from_db()
    assert staff_user.is_staff
    assert not hasattr(staff_user, "contact")


def test_contact_changelist_invite_action_invites_and_refuses_staff_email(
    staff_client, staff_user, django_capture_on_commit_callbacks
):
    url = reverse("admin:billing_contactperson_changelist")
    ordinary = ContactPersonFactory()
    staff_contact = ContactPersonFactory(email=staff_user.email)

    confirmation = _action(staff_client, url, "invite_to_portal", [ordinary, staff_contact])
    assert confirmation.status_code == 200
    assert ordinary.email in confirmation.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = _confirm(staff_client, url, "invite_to_portal", [ordinary, staff_contact])

    assert response.status_code == 302
    assert [m.to for m in mail.outbox] == [[ordinary.email]]
    messages = _messages(staff_client.get(response.url))
    assert any("staff account" in m for m in messages)
    assert "Sent portal invitations to 1 contact." in messages
    staff_contact.refresh_from_db()
    assert staff_contact.user is None


def test_contact_changelist_invite_action_signed_up_contact_refused(
    staff_client, django_capture_on_commit_callbacks
):
    url = reverse("admin:billing_contactperson_changelist")
    contact = ContactPersonFactory(with_login=True)

    with django_capture_on_commit_callbacks(execute=True):
        response = _confirm(staff_client, url, "invite_to_portal", [contact])

    assert not mail.outbox
    assert any("already set a password" in m for m in _messages(staff_client.get(response.url)))


# ----------------------------------------------------------------------------- users
def test_user_admin_add_creates_lowercased_email_login(staff_client):
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "New.Clerk@Northwind.example",
            "full_name": "New Clerk",
            "usable_password": "true",
            "password1": "a long enough secret 42",
            "password2": "a long enough secret 42",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(email="new.clerk@northwind.example")
    assert user.check_password("a long enough secret 42")


def test_user_admin_add_email_differing_in_case_refused(staff_client, staff_user):
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {"email": staff_user.email.upper(), "usable_password": "false"},
    )

    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_user_admin_portal_login_made_staff_refused(staff_client):
    contact = ContactPersonFactory(with_login=True)
    user = contact.user
    url = reverse("admin:accounts_user_change", args=[user.pk])

    response = staff_client.post(
        url,
        {
            "email": user.email,
            "full_name": user.full_name,
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2026-01-15",
            "date_joined_1": "10:00:00",
        },
    )

    assert response.status_code == 200
    assert "staff need a separate login" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_staff


# ----------------------------------------------------------------------------- singletons
@pytest.mark.parametrize("model", [Organization, DunningPolicy, PortalPreferences])
def test_singleton_changelist_missing_row_redirects_to_created_change_page(
    client, staff_user, model
):
    login_verified(client, staff_user)
    model.objects.all().delete()
    opts = model._meta

    response = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))

    assert response.status_code == 302
    assert response.url == reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[1])
    assert model.objects.filter(pk=1).exists()
    page = client.get(response.url)
    assert page.status_code == 200
    assert not page.context["has_add_permission"]
    assert not page.context["has_delete_permission"]


# ----------------------------------------------------------------------------- invoices
def test_invoice_change_page_finalized_has_no_editable_inputs(staff_client):
    invoice = InvoiceFactory()  # open, numbered
    PaymentAllocationFactory(invoice=invoice, payment__customer=invoice.customer, amount=10)

    response = staff_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="total"' not in html
    assert 'name="lines-0-amount"' not in html
    assert 'name="_save"' not in html
    assert not response.context["has_delete_permission"]
    posted = staff_client.post(
        reverse("admin:billing_invoice_change", args=[invoice.pk]), {"total": "1.00"}
    )
    assert posted.status_code == 403
    invoice.refresh_from_db()
    assert invoice.total == Decimal("100.00")


def test_invoice_change_page_draft_has_editable_totals(staff_client):
    invoice = InvoiceFactory(draft=True)

    response = staff_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))

    html = response.content.decode()
    assert 'name="total"' in html
    assert 'name="lines-0-amount"' in html
    assert 'name="number"' not in html
    assert 'name="status"' not in html


@time_machine.travel(NOW, tick=False)
def test_invoice_changelist_balance_due_computed_from_allocations(staff_client):
    invoice = InvoiceFactory(number="INV-BAL-1")  # total 100.00
    PaymentAllocationFactory(invoice=invoice, payment__customer=invoice.customer, amount=30)
    # Neither a failed payment nor a void credit note counts.
    PaymentAllocationFactory(
        invoice=invoice,
        payment__customer=invoice.customer,
        payment__status=PaymentStatus.FAILED,
        amount=50,
    )
    CreditAllocationFactory(
        invoice=invoice, credit_note__customer=invoice.customer, credit_note__void=True
    )

    response = staff_client.get(INVOICE_CHANGELIST)

    row = response.context["cl"].result_list.get(pk=invoice.pk)
    assert row.amount_paid == Decimal("30.00")
    assert row.credits_applied == Decimal("0.00")
    assert row.balance_due == Decimal("70.00")
    html = response.content.decode()
    assert '<td class="field-balance_due">70.00</td>' in html
    assert '<td class="field-amount_paid">30.00</td>' in html


@time_machine.travel(NOW, tick=False)
def test_invoice_changelist_credits_reduce_balance_due(staff_client):
    invoice = InvoiceFactory()
    PaymentAllocationFactory(invoice=invoice, payment__customer=invoice.customer, amount=30)
    CreditAllocationFactory(invoice=invoice, credit_note__customer=invoice.customer, amount=15)

    response = staff_client.get(INVOICE_CHANGELIST)

    row = response.context["cl"].result_list.get(pk=invoice.pk)
    assert row.balance_due == Decimal("55.00")


@time_machine.travel(NOW, tick=False)
def test_invoice_overdue_filter_returns_only_open_invoices_past_due(staff_client):
    today = NOW.date()
    overdue = InvoiceFactory(issue_date=today - datetime.timedelta(days=30))
    InvoiceFactory(issue_date=today - datetime.timedelta(days=30), paid=True)  # past due, paid
    InvoiceFactory(issue_date=today - datetime.timedelta(days=30), void=True)
    InvoiceFactory(issue_date=today)  # open, not yet due
    InvoiceFactory(issue_date=today - datetime.timedelta(days=14))  # due today: not overdue
    InvoiceFactory(draft=True)

    response = staff_client.get(INVOICE_CHANGELIST, {"overdue": "yes"})

    assert [invoice.pk for invoice in response.context["cl"].result_list] == [overdue.pk]
    assert response.context["cl"].result_list[0].is_overdue is True


def test_invoice_customer_filter_narrows_to_one_customer(staff_client):
    mine = InvoiceFactory()
    InvoiceFactory()

    response = staff_client.get(INVOICE_CHANGELIST, {"customer": mine.customer_id})
    with_counts = staff_client.get(
        INVOICE_CHANGELIST, {"customer": mine.customer_id, "overdue": "yes", "_facets": "True"}
    )

    assert [invoice.pk for invoice in response.context["cl"].result_list] == [mine.pk]
    assert mine.customer.display_name in response.content.decode()
    assert with_counts.status_code == 200


@pytest.mark.parametrize("term", ["contact-email", "public-id", "not a uuid"])
def test_customer_search_name_email_or_public_id_finds_customer(staff_client, term):
    customer = CustomerFactory(display_name="Acme Rockets")
    ContactPersonFactory(customer=customer, email="wile@acme.test")
    CustomerFactory(display_name="Other")
    query = {"contact-email": "wile@acme", "public-id": str(customer.public_id)}.get(term, term)

    response = staff_client.get(CUSTOMER_CHANGELIST, {"q": query})

    assert response.status_code == 200
    found = list(response.context["cl"].result_list)
    assert found == ([] if term == "not a uuid" else [customer])


# ----------------------------------------------------------------------------- read-only
def test_event_admin_add_change_delete_refused(staff_client):
    event = EventFactory()

    change = staff_client.get(reverse("admin:billing_event_change", args=[event.pk]))
    add = staff_client.get(reverse("admin:billing_event_add"))
    delete = staff_client.get(reverse("admin:billing_event_delete", args=[event.pk]))

    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert add.status_code == 403
    assert delete.status_code == 403


@pytest.mark.parametrize("model", [Payment, Invoice])
def test_money_document_delete_page_finalized_forbidden(staff_client, model):
    obj = PaymentFactory() if model is Payment else InvoiceFactory()
    opts = model._meta

    response = staff_client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[obj.pk])
    )

    assert response.status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


# ----------------------------------------------------------------------------- query counts
def _changelist_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def _invoices(count):
    for _ in range(count):
        invoice = InvoiceFactory()
        PaymentAllocationFactory(invoice=invoice, payment__customer=invoice.customer, amount=10)
        CreditAllocationFactory(invoice=invoice, credit_note__customer=invoice.customer)


def _subscriptions(count):
    SubscriptionFactory.create_batch(count)


def _customers(count):
    group = CustomerGroupFactory()
    parent = CustomerFactory()
    CustomerFactory.create_batch(count, group=group, parent=parent)


def _contacts(count):
    ContactPersonFactory.create_batch(count, with_login=True)


def _payments(count):
    for _ in range(count):
        PaymentAllocationFactory()


def _events(count):
    for _ in range(count):
        EventFactory(actor_user=UserFactory())


@pytest.mark.parametrize(
    ("model", "build"),
    [
        (Invoice, _invoices),
        (Subscription, _subscriptions),
        (Customer, _customers),
        (ContactPerson, _contacts),
        (Payment, _payments),
        (Event, _events),
    ],
)
def test_changelist_query_count_does_not_grow_with_rows(staff_client, model, build):
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    build(2)
    staff_client.get(url)  # the session's first request records it (user sessions, timeouts)
    few = _changelist_queries(staff_client, url)
    build(18)

    many = _changelist_queries(staff_client, url)

    assert many == few


# ----------------------------------------------------------------------------- every screen
def _admin_screens():
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label in {"billing", "portal", "accounts"}:
            yield pytest.param(model, model_admin, id=model._meta.label)


@pytest.mark.parametrize(("model", "model_admin"), list(_admin_screens()))
def test_admin_screens_every_model_render(staff_client, model, model_admin):
    opts = model._meta
    changelist = staff_client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), follow=True
    )
    assert changelist.status_code == 200
    with_counts = staff_client.get(changelist.request["PATH_INFO"], {"_facets": "True"})
    assert with_counts.status_code == 200
    request = changelist.wsgi_request
    if model_admin.has_add_permission(request):
        add = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        assert add.status_code == 200


def _customer_with_family():
    parent = CustomerFactory()
    CustomerFactory(parent=parent)
    ContactPersonFactory(customer=parent, with_login=True)
    ContactPersonFactory(customer=parent)
    return parent


def _subscription_with_extras():
    subscription = SubscriptionFactory()
    SubscriptionAddonFactory(subscription=subscription)
    SubscriptionCouponFactory(subscription=subscription)
    ScheduledChangeFactory(subscription=subscription)
    EventFactory(subscription=subscription, customer=subscription.customer)
    return subscription


def _payment_with_allocations():
    allocation = PaymentAllocationFactory()
    RefundFactory(payment=allocation.payment)
    return allocation.payment


def _price_list_with_items():
    price_list = PriceListFactory()
    PriceListItem.objects.create(price_list=price_list, plan=PlanFactory(), price=Decimal("9"))
    return price_list


@pytest.mark.parametrize(
    "build",
    [
        _customer_with_family,
        _subscription_with_extras,
        _payment_with_allocations,
        _price_list_with_items,
        lambda: InvoiceFactory(draft=True),
        lambda: CreditAllocationFactory().credit_note,
        lambda: ContactPersonFactory(with_login=True).user,
        lambda: ContactPersonFactory(with_login=True),
        lambda: UsageRecordFactory(),
        lambda: PaymentAttemptFactory(),
        lambda: EventFactory(data={"before": {"a": 1}, "after": {"a": 2}}),
        lambda: PaymentMethodFactory(),
        lambda: CouponFactory(),
        lambda: PlanFactory(),
        lambda: CustomerGroupFactory(),
    ],
    ids=lambda build: getattr(build, "__name__", "object"),
)
def test_admin_change_page_with_related_rows_renders(staff_client, build):
    obj = build()
    opts = obj._meta

    response = staff_client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    )

    assert response.status_code == 200
