"""Helpers shared by the paying, payments and payment-method page tests (not fixtures)."""

import re
import time
from html import unescape

from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.decorators import REAUTH_SESSION_KEY
from billing.gateways.sandbox import OUTCOME_REFUND
from billing.models import SandboxCharge
from portal.models import PortalPreferences
from tests.factories import ContactPersonFactory, CustomerFactory
from tests.helpers import login_verified

VISA = "4242424242424242"
DECLINED = "4000000000000002"
TIMEOUT = "4000000000000259"


def sign_in(client, customer=None, *, role="payer"):
    """A contact of ``customer`` (a new one by default) signed in with MFA; returns it."""
    customer = customer or CustomerFactory()
    traits = {"payer": {"payer": True}, "admin": {"admin": True}, "viewer": {}}[role]
    contact = ContactPersonFactory(customer=customer, with_login=True, **traits)
    login_verified(client, contact.user)
    return contact


def reauthenticate(client):
    """As if the user had just confirmed their password (recent_login_required passes)."""
    session = client.session
    session[REAUTH_SESSION_KEY] = time.time()
    session.save()


def set_preference(**values):
    preferences = PortalPreferences.load()
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.save()


def ledger_charges() -> int:
    return SandboxCharge.objects.exclude(outcome=OUTCOME_REFUND).count()


def hidden_value(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)" name="{name}"', html
    )
    assert match, f"no hidden {name} in the page"
    return match.group(1)


def queries_for(client, url: str) -> int:
    """SQL queries of one GET, after a warm-up request (sessions, caches, middleware)."""
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def text_of(response) -> str:
    """The page as a person reads it: tags dropped, whitespace collapsed."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def saved_card(customer, number: str = VISA, **options):
    """A card tokenized by the sandbox gateway and saved for ``customer``."""
    from billing.services.payment_methods import payment_method_add

    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2030, cvc="123", **options
    )


def assert_card_number_stored_nowhere(number: str) -> None:
    """No text column of any table, and no session, holds ``number``."""
    from django.apps import apps
    from django.contrib.sessions.models import Session
    from django.db import models

    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, models.JSONField):
                values = model.objects.values_list(field.name, flat=True)
                assert not [v for v in values if number in str(v)], (model, field.name)
            elif isinstance(field, (models.CharField, models.TextField)):
                hit = model.objects.filter(**{f"{field.name}__contains": number}).exists()
                assert not hit, f"{model.__name__}.{field.name} holds the card number"
    for session in Session.objects.all():
        assert number not in str(session.get_decoded())
