"""Open redirects: a hostile ``next`` never takes the user off our site, in any flow."""

import re
from urllib.parse import urljoin, urlsplit

import pyotp
import pytest
import requests
from django.conf import settings
from django.core import mail

from billing.enums import MfaPolicy
from tests.accounts.conftest import (
    LOGIN,
    OTP_VERIFY,
    PASSWORD,
    SSO_LOGIN,
    signed_in_user_id,
    sso_round_trip,
    totp_for,
)
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

PAYLOADS = [
    "//evil.test",
    "/\\evil.test",
    "https:evil.test",
    "%2F%2Fevil.test",
    "javascript:alert(1)",
    "https://evil.test",
    " //evil.test",
    "http://testserver@evil.test/",
]
payloads = pytest.mark.parametrize("payload", PAYLOADS)


def assert_on_site(location: str, base: str = "http://testserver/accounts/") -> None:
    """The browser's reading of ``location`` stays on testserver (backslashes read as slashes)."""
    assert "javascript:" not in location.lower(), location
    absolute = urljoin(base, location.strip().replace("\\", "/"))
    parts = urlsplit(absolute)
    assert parts.scheme in ("http", "https"), location
    assert parts.netloc == "testserver", location


def with_next(path: str, payload: str) -> str:
    # Raw, as an attacker writes the link: "%2F%2F..." arrives decoded as "//...".
    return f"{path}?next={payload}"


@payloads
def test_login_through_the_code_step_ends_on_site(client, user, payload):
    generator = totp_for(user)
    response = client.post(
        with_next(LOGIN, payload),
        {"login": user.email, "password": PASSWORD, "next": payload},
    )
    assert response.url == OTP_VERIFY
    response = client.post(with_next(OTP_VERIFY, payload), {"code": generator.now()})
    assert signed_in_user_id(client) == user.pk
    assert_on_site(response.url)


@payloads
def test_login_without_mfa_ends_on_site(client, user, payload):
    response = client.post(
        with_next(LOGIN, payload), {"login": user.email, "password": PASSWORD, "next": payload}
    )
    assert signed_in_user_id(client) == user.pk
    assert_on_site(response.url)


@payloads
def test_forced_enrolment_then_backup_codes_continue_on_site(client, user, organization, payload):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    response = client.post(LOGIN, {"login": user.email, "password": PASSWORD, "next": payload})
    page = client.get(response.url).content.decode()
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page)[1]
    response = client.post(response.url, {"code": pyotp.TOTP(secret).now()})
    assert response.url == "/accounts/mfa/backup-codes/"
    page = client.get(response.url).content.decode()
    continue_link = re.search(r'href="([^"]*)">I have saved them', page)[1]
    assert_on_site(continue_link)


@payloads
def test_logout_ends_on_site(client, user, payload):
    login_verified(client, user)
    response = client.post(with_next("/accounts/logout/", payload), {"next": payload})
    assert response.status_code == 302
    assert_on_site(response.url)


@payloads
def test_reauthentication_ends_on_site(client, user, payload):
    login_verified(client, user)
    page = client.get(with_next("/accounts/confirm/", payload)).content.decode()
    assert 'name="next" value=""' in page
    response = client.post(
        with_next("/accounts/confirm/", payload), {"password": PASSWORD, "next": payload}
    )
    assert response.status_code == 302
    assert_on_site(response.url)


@payloads
def test_session_verification_ends_on_site(client, user, payload):
    generator = totp_for(user)
    client.force_login(user)  # signed in, session not verified yet
    response = client.post(
        with_next("/accounts/mfa/setup/", payload), {"code": generator.now(), "next": payload}
    )
    assert response.status_code == 302
    assert_on_site(response.url)


@payloads
def test_password_reset_ends_on_site(client, user, payload):
    response = client.post(with_next("/accounts/password/reset/", payload), {"email": user.email})
    assert_on_site(response.url)
    link = re.search(r"http://testserver(\S+/)", mail.outbox[0].body)[1]
    response = client.get(with_next(link, payload))
    assert_on_site(response.url)
    response = client.post(
        response.url, {"password1": "fresh passphrase 4242", "password2": "fresh passphrase 4242"}
    )
    assert_on_site(response.url)


@payloads
def test_admin_login_hands_over_without_leaving(client, user, payload):
    response = client.get(with_next("/admin/login/", payload))
    assert response.url.startswith(f"{LOGIN}?next=")
    assert_on_site(response.url)
    generator = totp_for(user)
    response = client.post(response.url, {"login": user.email, "password": PASSWORD})
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert_on_site(response.url)


@payloads
def test_sso_trusted_login_ends_on_site(client, user, organization, oidc, payload):
    organization.trust_idp_mfa = True
    organization.save()
    oidc.identity = {"sub": "idp-ann", "email": user.email, "email_verified": True}
    response = sso_round_trip(client, oidc, next_url=payload)
    assert signed_in_user_id(client) == user.pk
    assert_on_site(response.url)


@payloads
def test_sso_login_through_the_code_step_ends_on_site(client, user, oidc, payload):
    generator = totp_for(user)
    oidc.identity = {"sub": "idp-ann", "email": user.email, "email_verified": True}
    response = sso_round_trip(client, oidc, next_url=payload)
    assert response.url == OTP_VERIFY
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert signed_in_user_id(client) == user.pk
    assert_on_site(response.url)


@payloads
def test_sso_start_link_with_next_in_query_ends_on_site(client, user, organization, oidc, payload):
    organization.trust_idp_mfa = True
    organization.save()
    oidc.identity = {"sub": "idp-ann", "email": user.email, "email_verified": True}
    start = client.post(with_next(SSO_LOGIN, payload))
    assert start.url.startswith(oidc.issuer)
    back = urlsplit(requests.get(start.url, allow_redirects=False, timeout=5).headers["Location"])
    response = client.get(f"{back.path}?{back.query}")
    assert signed_in_user_id(client) == user.pk
    assert_on_site(response.url)


def test_a_safe_next_is_honoured(client, user):
    """The check is not a blanket refusal: an on-site next still works."""
    generator = totp_for(user)
    client.post(LOGIN, {"login": user.email, "password": PASSWORD, "next": "/accounts/security/"})
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert response.url == "/accounts/security/" != settings.LOGIN_REDIRECT_URL
