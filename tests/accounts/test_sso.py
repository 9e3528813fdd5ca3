"""Single sign-on through OpenID Connect, against a fake IdP on 127.0.0.1.

Only invited users sign in; an identity is its ``sub``; our MFA stage still follows unless the
organization trusts the IdP's MFA, and never for staff.
"""

import os
import subprocess
import sys

import pytest
import requests
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp
from django.conf import settings as django_settings
from django.contrib.sites.models import Site
from django.urls import reverse

from accounts.models import User
from billing.enums import MfaPolicy
from tests.accounts.conftest import (
    OTP_VERIFY,
    PROFILE,
    SSO_LOGIN,
    SSO_NAME,
    SSO_PROVIDER_ID,
    is_signed_in,
    signed_in_user_id,
    sso_round_trip,
    totp_for,
    verified_user,
)
from tests.accounts.fake_oidc import CLIENT_ID, CLIENT_SECRET
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db


def identity(sub: str, email: str, verified=True, **claims) -> dict:
    return {"sub": sub, "email": email, "email_verified": verified, **claims}


def test_login_page_without_provider_has_no_sso_button(client, organization):
    page = client.get(reverse("account_login")).content.decode()
    assert "Sign in with" not in page


def test_login_page_with_provider_shows_sso_button_posting_to_it(client, organization, oidc):
    page = client.get(reverse("account_login")).content.decode()
    assert f"Sign in with {SSO_NAME}" in page
    assert f'action="{SSO_LOGIN}?process=login"' in page


def test_sso_first_login_links_by_verified_email_then_mfa_stage_follows(client, user, oidc):
    generator = totp_for(user)
    oidc.identity = identity("idp-ann", user.email, name="Ann")
    response = sso_round_trip(client, oidc)
    assert response.status_code == 302
    assert response.url == OTP_VERIFY
    assert not is_signed_in(client)
    # The IdP identity is linked by its subject, to the invited user.
    account = SocialAccount.objects.get(provider=SSO_PROVIDER_ID, uid="idp-ann")
    assert account.user == user
    # Nothing behind the login answers before the code.
    assert client.get(PROFILE).status_code == 302
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert response.status_code == 302
    assert signed_in_user_id(client) == user.pk
    assert client.get(PROFILE).status_code == 200


def test_sso_with_trusted_idp_mfa_signs_in_directly(client, user, organization, oidc):
    totp_for(user)
    organization.trust_idp_mfa = True
    organization.save()
    oidc.identity = identity("idp-ann", user.email)
    response = sso_round_trip(client, oidc)
    assert response.status_code == 302
    assert response.url == django_settings.LOGIN_REDIRECT_URL
    assert signed_in_user_id(client) == user.pk


def test_sso_trusted_idp_mfa_satisfies_required_policy(client, user, organization, oidc):
    organization.trust_idp_mfa = True
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    oidc.identity = identity("idp-ann", user.email)
    sso_round_trip(client, oidc)
    assert signed_in_user_id(client) == user.pk
    # No forced enrolment: the IdP's MFA is trusted for this session.
    assert client.get(PROFILE).status_code == 200


def test_password_login_after_abandoned_trusted_sso_still_needs_enrolment(
    client, user, organization, oidc
):
    organization.trust_idp_mfa = True
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    oidc.identity = identity("idp-ann", user.email)
    sso_round_trip(client, oidc)
    client.post(reverse("account_logout"))
    response = client.post(
        reverse("account_login"),
        {"login": user.email, "password": "correct horse battery staple"},
    )
    assert response.url == reverse("accounts_otp_enrol")
    assert not is_signed_in(client)


def test_sso_unknown_email_creates_nothing_and_is_refused(client, user, oidc):
    users_before = User.objects.count()
    oidc.identity = identity("idp-stranger", "stranger@elsewhere.test")
    response = sso_round_trip(client, oidc)
    assert response.status_code == 200
    assert "No portal login" in response.content.decode()
    assert not is_signed_in(client)
    assert User.objects.count() == users_before
    assert not SocialAccount.objects.exists()


@pytest.mark.parametrize("claim", [False, "false", None])
def test_sso_unverified_email_claim_is_refused(client, user, oidc, claim):
    oidc.identity = identity("idp-ann", user.email, verified=claim)
    response = sso_round_trip(client, oidc)
    assert response.status_code == 200
    assert not is_signed_in(client)
    assert not SocialAccount.objects.exists()
    user.refresh_from_db()
    assert user.has_usable_password()


def test_sso_email_not_verified_on_our_side_is_refused(client, organization, oidc):
    pending = verified_user("pending@customer.test")
    EmailAddress.objects.filter(user=pending).update(verified=False)
    oidc.identity = identity("idp-pending", pending.email)
    sso_round_trip(client, oidc)
    assert not is_signed_in(client)
    assert not SocialAccount.objects.exists()


def test_sso_second_login_matches_sub_even_if_idp_email_changed(client, user, organization, oidc):
    organization.trust_idp_mfa = True
    organization.save()
    other = verified_user("bob@customer.test")
    oidc.identity = identity("idp-ann", user.email)
    sso_round_trip(client, oidc)
    assert signed_in_user_id(client) == user.pk
    client.post(reverse("account_logout"))

    # The IdP now says this subject's email is Bob's (verified): still Ann, never Bob.
    oidc.identity = identity("idp-ann", other.email)
    sso_round_trip(client, oidc)
    assert signed_in_user_id(client) == user.pk
    assert SocialAccount.objects.get(uid="idp-ann").user == user
    assert not SocialAccount.objects.filter(user=other).exists()


def test_sso_another_subject_with_a_linked_users_email_is_refused(client, user, organization, oidc):
    organization.trust_idp_mfa = True
    organization.save()
    oidc.identity = identity("idp-ann", user.email)
    sso_round_trip(client, oidc)
    client.post(reverse("account_logout"))
    # E.g. the address was given to someone else at the IdP: a new subject, same email.
    oidc.identity = identity("idp-newcomer", user.email)
    sso_round_trip(client, oidc)
    assert not is_signed_in(client)
    assert list(SocialAccount.objects.values_list("uid", flat=True)) == ["idp-ann"]


def test_sso_userinfo_for_another_subject_is_refused(client, user, organization, oidc):
    organization.trust_idp_mfa = True
    organization.save()
    oidc.identity = identity("idp-mallory", "mallory@elsewhere.test")
    oidc.userinfo_overrides = {"sub": "idp-ann", "email": user.email}
    sso_round_trip(client, oidc)
    assert not is_signed_in(client)
    assert not SocialAccount.objects.exists()


@pytest.mark.parametrize("has_device", [True, False])
def test_sso_staff_still_needs_otp_even_with_trusted_idp(client, organization, oidc, has_device):
    organization.trust_idp_mfa = True
    organization.save()
    staff = verified_user("clerk@northwind.example", staff=True)
    if has_device:
        totp_for(staff)
    oidc.identity = identity("idp-clerk", staff.email)
    response = sso_round_trip(client, oidc)
    expected = "accounts_otp_verify" if has_device else "accounts_otp_enrol"
    assert response.url == reverse(expected)
    assert not is_signed_in(client)
    assert client.get("/admin/").status_code == 302


def test_sso_connect_by_signed_in_user_is_refused(client, user, organization, oidc):
    login_verified(client, user)
    oidc.identity = identity("idp-someone", "someone@elsewhere.test")
    response = client.post(SSO_LOGIN, {"process": "connect"})
    back = requests.get(response.url, allow_redirects=False, timeout=5).headers["Location"]
    client.get(back.removeprefix("http://testserver"))
    assert not SocialAccount.objects.exists()


def test_sso_app_configured_in_the_admin_works_too(client, user, organization, oidc_server):
    oidc_server.reset()
    app = SocialApp.objects.create(
        provider="openid_connect",
        provider_id="corp",
        name="Corp login",
        client_id=CLIENT_ID,
        secret=CLIENT_SECRET,
        settings={"server_url": oidc_server.issuer},
    )
    app.sites.add(Site.objects.get_current())
    assert "Sign in with Corp login" in client.get(reverse("account_login")).content.decode()
    organization.trust_idp_mfa = True
    organization.save()
    oidc_server.identity = identity("idp-ann", user.email)
    sso_round_trip(client, oidc_server, provider_id="corp")
    assert signed_in_user_id(client) == user.pk
    assert SocialAccount.objects.get(uid="idp-ann").provider == "corp"


def test_sso_settings_come_from_the_environment():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "OIDC_SERVER_URL": "https://idp.example.com/realms/acme",
        "OIDC_CLIENT_ID": "portal",
        "OIDC_CLIENT_SECRET": "s3cret",
        "OIDC_PROVIDER_ID": "acme",
        "OIDC_NAME": "Acme SSO",
    }
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "app = settings.SOCIALACCOUNT_PROVIDERS['openid_connect']['APPS'][0]; "
        "print(app['provider_id'], app['name'], app['client_id'], app['secret'], "
        "app['settings']['server_url'])"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.split() == [
        "acme",
        "Acme",
        "SSO",
        "portal",
        "s3cret",
        "https://idp.example.com/realms/acme",
    ]
