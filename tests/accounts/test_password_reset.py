"""Password reset: no account enumeration, single-use keys, and never a way around MFA."""

import re

import pytest
from django.core import mail
from django.test import Client

from tests.accounts.conftest import (
    OTP_VERIFY,
    PROFILE,
    is_signed_in,
    password_step,
    signed_in_user_id,
    totp_for,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db
RESET = "/accounts/password/reset/"
NEW_PASSWORD = "a brand new passphrase 2026"
CSRF_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"')


def _reset_link() -> str:
    (message,) = mail.outbox
    return re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", message.body)[1]


def _ask_for_reset(client, email: str):
    return client.post(RESET, {"email": email})


def _set_new_password(client, link: str, password: str = NEW_PASSWORD):
    form_page = client.get(link)
    assert form_page.status_code == 302  # the key moves into the session, out of the URL
    return client.post(form_page.url, {"password1": password, "password2": password})


def test_reset_answers_the_same_for_known_and_unknown_emails(user):
    known, unknown = Client(), Client()
    answer_known = _ask_for_reset(known, user.email)
    answer_unknown = _ask_for_reset(unknown, "nobody@customer.test")
    assert answer_known.status_code == answer_unknown.status_code == 302
    assert answer_known.url == answer_unknown.url
    page_known = known.get(answer_known.url)
    page_unknown = unknown.get(answer_unknown.url)
    assert page_known.status_code == page_unknown.status_code == 200
    assert CSRF_TOKEN.sub("", page_known.content.decode()) == CSRF_TOKEN.sub(
        "", page_unknown.content.decode()
    )
    # Only the real account's owner gets an email.
    assert [message.to for message in mail.outbox] == [[user.email]]


def test_reset_form_errors_do_not_depend_on_the_account_existing(client, user):
    for email in (user.email, "nobody@customer.test"):
        response = _ask_for_reset(client, email.upper())
        assert response.status_code == 302


def test_reset_key_is_single_use(client, user):
    _ask_for_reset(client, user.email)
    link = _reset_link()
    response = _set_new_password(client, link)
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    again = Client().get(link)
    assert again.status_code == 200
    assert "Bad Token" in again.content.decode()
    assert Client().post(link, {"password1": "x" * 20, "password2": "x" * 20}).status_code == 200
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_reset_key_dies_when_the_password_changes_otherwise(client, user):
    _ask_for_reset(client, user.email)
    link = _reset_link()
    user.set_password("changed in the meantime 77")
    user.save()
    response = Client().get(link)
    assert "Bad Token" in response.content.decode()


def test_after_reset_signing_in_still_needs_the_code(client, user):
    generator = totp_for(user)
    _ask_for_reset(client, user.email)
    _set_new_password(client, _reset_link())
    assert not is_signed_in(client)  # ACCOUNT_LOGIN_ON_PASSWORD_RESET is off
    response = password_step(client, user.email, password=NEW_PASSWORD)
    assert response.url == OTP_VERIFY
    assert not is_signed_in(client)
    assert client.get(PROFILE).status_code == 302
    client.post(OTP_VERIFY, {"code": generator.now()})
    assert signed_in_user_id(client) == user.pk


def test_reset_signs_out_existing_sessions(client, user):
    signed_in = login_verified(Client(), user)
    assert signed_in.get(PROFILE).status_code == 200
    _ask_for_reset(client, user.email)
    _set_new_password(client, _reset_link())
    assert signed_in.get(PROFILE).status_code == 302
