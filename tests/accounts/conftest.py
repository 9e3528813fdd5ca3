"""Fixtures for the accounts tests: a portal user, an authenticator, a fake OpenID provider."""

import base64
from urllib.parse import urlsplit

import pyotp
import pytest
import requests
from allauth.account.models import EmailAddress
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.accounts.fake_oidc import CLIENT_ID, CLIENT_SECRET, FakeOIDCProvider
from tests.factories import UserFactory

PASSWORD = "correct horse battery staple"
LOGIN = "/accounts/login/"
OTP_VERIFY = "/accounts/2fa/"
PROFILE = "/accounts/profile/"
SSO_PROVIDER_ID = "sso"
SSO_NAME = "Northwind SSO"
SSO_LOGIN = f"/accounts/oidc/{SSO_PROVIDER_ID}/login/"


def verified_user(email: str, **kwargs):
    user = UserFactory(email=email, **kwargs)
    EmailAddress.objects.get_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    return user


def totp_for(user) -> pyotp.TOTP:
    device = TOTPDevice.objects.create(user=user, name="App", confirmed=True)
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode())


def password_step(client, email: str, password: str = PASSWORD, **extra):
    return client.post(LOGIN, {"login": email, "password": password, **extra})


def is_signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def signed_in_user_id(client) -> int | None:
    value = client.session.get("_auth_user_id")
    return int(value) if value is not None else None


@pytest.fixture
def user(organization):
    return verified_user("ann@customer.test")


@pytest.fixture
def totp(user) -> pyotp.TOTP:
    return totp_for(user)


# ----------------------------------------------------------------------------- SSO
@pytest.fixture(scope="session")
def oidc_server():
    server = FakeOIDCProvider().start()
    yield server
    server.stop()


@pytest.fixture
def oidc(oidc_server, settings):
    """The fake IdP, configured as allauth's OpenID Connect app (as config.env would)."""
    oidc_server.reset()
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": SSO_PROVIDER_ID,
                    "name": SSO_NAME,
                    "client_id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "settings": {"server_url": oidc_server.issuer},
                }
            ],
        }
    }
    return oidc_server


def sso_round_trip(
    client, oidc, *, next_url: str | None = None, provider_id: str = SSO_PROVIDER_ID
):
    """Start SSO on our site, "sign in" at the IdP, come back: the callback's response.

    The browser's part (following the redirect to the IdP and back) is done by hand: requests
    talks to the fake IdP, the Django test client to our site, with its session.
    """
    data = {"next": next_url} if next_url is not None else {}
    start = client.post(f"/accounts/oidc/{provider_id}/login/", data)
    assert start.status_code == 302, start.content
    assert start.url.startswith(f"{oidc.issuer}/authorize?")
    at_idp = requests.get(start.url, allow_redirects=False, timeout=5)
    assert at_idp.status_code == 302
    callback = urlsplit(at_idp.headers["Location"])
    assert callback.netloc == "testserver"
    return client.get(f"{callback.path}?{callback.query}")
