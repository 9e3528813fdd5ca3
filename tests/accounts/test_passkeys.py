"""Passkeys (django-otp-webauthn) as a second factor: signing in with one at the login stage,
enrolling one, adding, using and removing one when signed in, and the attacks on each step.

A software authenticator (tests/accounts/authenticator.py) answers the ceremonies the way the
browser script (static/js/passkeys.js) posts them.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts import otp, passkeys
from accounts.decorators import REAUTH_SESSION_KEY
from accounts.services import user_mfa_reset
from billing.enums import MfaPolicy
from billing.models import Event, Organization
from tests.accounts.authenticator import SoftAuthenticator, b64url
from tests.accounts.conftest import (
    OTP_VERIFY,
    PASSWORD,
    PROFILE,
    is_signed_in,
    password_step,
    signed_in_user_id,
    totp_for,
    verified_user,
)
from tests.factories import ContactPersonFactory, UserFactory
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

RP_ID = "billing.example.test"
ORIGIN = f"https://{RP_ID}"
PORTAL = "/portal/"
SECURITY = "/accounts/security/"
LOGIN_BEGIN = "/accounts/2fa/passkey/begin/"
LOGIN_COMPLETE = "/accounts/2fa/passkey/complete/"
ENROL = "/accounts/2fa/setup/"
ENROL_BEGIN = "/accounts/2fa/setup/passkey/begin/"
ENROL_COMPLETE = "/accounts/2fa/setup/passkey/complete/"
ADD = "/accounts/mfa/passkeys/add/"
REGISTER_BEGIN = "/accounts/mfa/passkeys/register/begin/"
REGISTER_COMPLETE = "/accounts/mfa/passkeys/register/complete/"
VERIFY_BEGIN = "/accounts/mfa/passkeys/verify/begin/"
VERIFY_COMPLETE = "/accounts/mfa/passkeys/verify/complete/"
REMOVE = "/accounts/mfa/passkeys/remove/"


@pytest.fixture(autouse=True)
def _relying_party(settings):
    settings.OTP_WEBAUTHN_RP_ID = RP_ID
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [ORIGIN]
    settings.PASSKEYS_ENABLED = True


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)


def passkey_enrol(user, authenticator, name: str = "Laptop") -> WebAuthnCredential:
    """A registered passkey, made through the same service the views use."""
    request = RequestFactory().post("/")
    helper = WebAuthnCredential.get_webauthn_helper(request=request)
    options, state = helper.register_begin(user=user)
    return passkeys.passkey_register(
        request=request, user=user, state=state, data=authenticator.register(options), name=name
    )


@pytest.fixture
def passkey(user, authenticator) -> WebAuthnCredential:
    return passkey_enrol(user, authenticator)


def post_json(client, url: str, body: dict | None = None, **extra):
    return client.post(url, json.dumps(body or {}), content_type="application/json", **extra)


def sign_in_with_passkey(client, authenticator, **extra):
    """Begin and complete the verify step's ceremony: the complete step's response."""
    begin = post_json(client, LOGIN_BEGIN, **extra)
    assert begin.status_code == 200, begin.content
    return post_json(client, LOGIN_COMPLETE, authenticator.authenticate(begin.json()), **extra)


def fake_registration_options() -> dict:
    """Options no server issued: enough for the authenticator to produce an answer."""
    return {"rp": {"id": RP_ID}, "user": {"id": b64url(b"someone")}, "challenge": "x"}


def reauthenticated(client):
    session = client.session
    session[REAUTH_SESSION_KEY] = time.time()
    session.save()
    return client


# ----------------------------------------------------------------------------- login stage
def test_passkey_completes_the_login_stage_like_a_code(client, user, passkey, authenticator):
    totp_for(user)  # a passkey and an app: either may answer
    password_step(client, user.email)
    page = client.get(OTP_VERIFY).content.decode()
    assert 'data-passkey="authenticate"' in page and "Use a passkey" in page
    assert f'data-begin-url="{LOGIN_BEGIN}"' in page

    begin = post_json(client, LOGIN_BEGIN)
    options = begin.json()
    assert options["rpId"] == RP_ID
    assert [item["id"] for item in options["allowCredentials"]] == [
        b64url(authenticator.credential_id)
    ]
    assert not is_signed_in(client)

    response = post_json(client, LOGIN_COMPLETE, authenticator.authenticate(options))
    assert response.status_code == 200, response.content
    assert response.json()["redirect_url"] == PORTAL
    assert signed_in_user_id(client) == user.pk
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id
    assert REAUTH_SESSION_KEY in client.session  # as after a code: fresh for risky pages
    passkey.refresh_from_db()
    assert passkey.last_used_at is not None and passkey.sign_count == 1
    assert client.get(PROFILE).status_code == 200


def test_passkey_login_rotates_the_session_key_at_each_step(client, user, passkey, authenticator):
    client.get("/accounts/login/")
    client.session.save()
    before = client.session.session_key
    password_step(client, user.email)
    after_password = client.session.session_key
    sign_in_with_passkey(client, authenticator)
    assert len({before, after_password, client.session.session_key}) == 3


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [(PROFILE, PROFILE), ("https://evil.example/steal", PORTAL), ("//evil.example/", PORTAL)],
)
def test_passkey_login_keeps_next_on_site(client, user, passkey, authenticator, next_url, lands_on):
    password_step(client, user.email, next=next_url)
    response = sign_in_with_passkey(client, authenticator)
    assert response.json()["redirect_url"] == lands_on


def test_passkey_ceremony_without_a_pending_login_is_refused(client, user, passkey, authenticator):
    response = post_json(client, LOGIN_BEGIN)
    assert response.status_code == 302
    assert response.url == reverse("account_login")
    assert "otp_webauthn_authentication_state" not in client.session
    response = post_json(
        client, LOGIN_COMPLETE, authenticator.authenticate({"rpId": RP_ID, "challenge": "x"})
    )
    assert response.status_code == 302
    assert not is_signed_in(client)
    assert client.get(LOGIN_BEGIN).status_code == 302  # GET: not even the stage's method


def test_passkey_ceremony_refused_to_a_user_without_a_passkey(client, user):
    totp_for(user)
    password_step(client, user.email)
    assert "Use a passkey" not in client.get(OTP_VERIFY).content.decode()
    response = post_json(client, LOGIN_BEGIN)
    assert response.status_code == 400
    assert response.json()["code"] == "no_passkey"
    assert client.get(LOGIN_BEGIN).status_code == 405


def test_half_signed_in_session_reaches_no_portal_data(client, user, passkey, authenticator):
    ContactPersonFactory(user=user, email=user.email)
    password_step(client, user.email)
    begin = post_json(client, LOGIN_BEGIN).json()
    # An answer from the wrong origin (a phishing page relaying the ceremony) is refused.
    refused = post_json(
        client, LOGIN_COMPLETE, authenticator.authenticate(begin, origin="https://evil.example")
    )
    assert refused.status_code == 422
    assert not is_signed_in(client)
    for path in (PORTAL, PROFILE, SECURITY, "/portal/invoices/", ADD):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.url.startswith("/accounts/login/"), path
    # Nor can the pending login use the signed-in ceremonies.
    for url in (REGISTER_BEGIN, VERIFY_BEGIN):
        response = post_json(client, url, {"name": "Mine now"})
        assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert not is_signed_in(client)
    assert WebAuthnCredential.objects.filter(user=user).count() == 1


def test_an_answer_is_accepted_once(client, user, passkey, authenticator):
    password_step(client, user.email)
    begin = post_json(client, LOGIN_BEGIN).json()
    answer = authenticator.authenticate(begin)
    # A fresh challenge, then the old answer replayed: the challenge does not match.
    post_json(client, LOGIN_BEGIN)
    assert post_json(client, LOGIN_COMPLETE, answer).status_code == 422
    # And the state was spent by that attempt: nothing left to answer.
    response = post_json(client, LOGIN_COMPLETE, answer)
    assert response.status_code == 400 and response.json()["code"] == "invalid_state"
    assert not is_signed_in(client)


@pytest.mark.django_db(transaction=True)
def test_one_answer_posted_twice_at_once_signs_in_once(organization):
    user = verified_user("racer@customer.test")
    authenticator = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    passkey_enrol(user, authenticator)
    first = Client()
    password_step(first, user.email)
    answer = authenticator.authenticate(post_json(first, LOGIN_BEGIN).json())
    # A second client with the same session: both read the challenge before either spends it.
    second = Client()
    second.cookies[django_settings.SESSION_COOKIE_NAME] = first.cookies[
        django_settings.SESSION_COOKIE_NAME
    ].value
    clients = [first, second]
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def submit(each):
        try:
            barrier.wait(timeout=10)
            statuses.append(post_json(each, LOGIN_COMPLETE, answer).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(each,)) for each in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 400]


def test_another_users_passkey_cannot_answer(client, user, passkey, organization):
    mallory = verified_user("mallory@customer.test")
    mallorys_authenticator = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    passkey_enrol(mallory, mallorys_authenticator)
    password_step(client, user.email)
    begin = post_json(client, LOGIN_BEGIN).json()
    response = post_json(client, LOGIN_COMPLETE, mallorys_authenticator.authenticate(begin))
    assert response.status_code == 403
    assert response.json()["code"] == "credential_user_mismatch"
    assert not is_signed_in(client)


def test_refused_passkeys_count_towards_the_network_cap(client, user, passkey, authenticator):
    ip = "127.0.0.1"
    for _ in range(otp.MAX_IP_FAILURES - 1):
        otp.ip_failed(ip)
    password_step(client, user.email)
    begin = post_json(client, LOGIN_BEGIN).json()
    wrong = authenticator.authenticate(begin, origin="https://evil.example")
    assert post_json(client, LOGIN_COMPLETE, wrong).status_code == 422
    # The cap is reached: even a good passkey (and a good code) is refused from this network.
    response = post_json(client, LOGIN_BEGIN)
    assert response.status_code == 429
    assert "Too many failed attempts" in response.json()["detail"]
    assert not is_signed_in(client)
    other = Client(REMOTE_ADDR="198.51.100.7")
    password_step(other, user.email)
    assert sign_in_with_passkey(other, authenticator).status_code == 200
    assert is_signed_in(other)


def test_a_locked_authenticator_app_does_not_lock_the_passkey(client, user, passkey, authenticator):
    generator = totp_for(user)
    TOTPDevice.objects.filter(user=user).update(throttling_failure_count=otp.MAX_DEVICE_FAILURES)
    password_step(client, user.email)
    # Codes say "locked" (the passkey is not counted among the code devices)...
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert "locked" in response.content.decode()
    # ...while the passkey, which cannot be guessed, still signs in.
    assert sign_in_with_passkey(client, authenticator).status_code == 200
    assert is_signed_in(client)


def test_a_passkey_alone_counts_as_enrolment_under_a_required_policy(
    client, user, passkey, organization
):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    assert password_step(client, user.email).url == OTP_VERIFY
    assert client.get(ENROL).url == OTP_VERIFY
    page = client.get(OTP_VERIFY).content.decode()
    assert "Enter one of your backup codes" in page  # no authenticator app to ask about


# ----------------------------------------------------------------------------- forced enrolment
@pytest.fixture
def must_enrol(client, user, organization):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    assert password_step(client, user.email, next=PROFILE).url == ENROL
    return client


def test_forced_enrolment_with_a_passkey_signs_in_and_shows_backup_codes(
    must_enrol, user, authenticator
):
    client = must_enrol
    page = client.get(ENROL).content.decode()
    assert 'data-passkey="register"' in page and f'data-begin-url="{ENROL_BEGIN}"' in page

    options = post_json(client, ENROL_BEGIN, {"name": "Phone"}).json()
    assert options["rp"] == {"id": RP_ID, "name": Organization.load().name}
    assert not is_signed_in(client)
    response = post_json(client, ENROL_COMPLETE, authenticator.register(options))
    assert response.status_code == 200, response.content
    assert response.json()["redirect_url"] == reverse("accounts_backup_codes_new")

    passkey = WebAuthnCredential.objects.get(user=user)
    assert passkey.name == "Phone"
    assert signed_in_user_id(client) == user.pk
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id
    codes_page = client.get(reverse("accounts_backup_codes_new")).content.decode()
    assert codes_page.count("<li>") == otp.BACKUP_CODE_COUNT
    assert f'href="{PROFILE}"' in codes_page  # then where the login was going
    assert Event.objects.filter(kind="user.passkey_added").count() == 1


def test_pending_login_that_must_verify_cannot_enrol_a_passkey(client, user, authenticator):
    generator = totp_for(user)
    password_step(client, user.email)
    response = post_json(client, ENROL_BEGIN, {"name": "Sneaky"})
    assert response.status_code == 302 and response.url == OTP_VERIFY
    assert not WebAuthnCredential.objects.filter(user=user).exists()
    assert not is_signed_in(client)
    client.post(OTP_VERIFY, {"code": generator.now()})
    assert is_signed_in(client)


def test_pending_login_that_must_enrol_cannot_answer_with_a_passkey(
    must_enrol, user, authenticator
):
    response = post_json(must_enrol, LOGIN_BEGIN)
    assert response.status_code == 302 and response.url == ENROL
    assert not is_signed_in(must_enrol)


def test_passkey_name_is_checked_before_the_ceremony(must_enrol):
    response = post_json(must_enrol, ENROL_BEGIN, {"name": "x" * 65})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_name"
    assert "otp_webauthn_register_state" not in must_enrol.session


# ----------------------------------------------------------------------------- signed in
def test_adding_a_passkey_needs_a_fresh_confirmation(client, user, authenticator):
    login_verified(client, user)
    response = client.get(ADD)
    assert response.url == f"/accounts/confirm/?next={ADD.replace('/', '%2F')}"
    response = post_json(client, REGISTER_BEGIN, {"name": "Laptop"})
    assert response.status_code == 403
    assert response.json()["code"] == "reauthentication_required"
    assert "otp_webauthn_register_state" not in client.session
    response = post_json(
        client, REGISTER_COMPLETE, authenticator.register(fake_registration_options())
    )
    assert response.status_code == 403
    assert not WebAuthnCredential.objects.exists()


def test_adding_a_passkey_after_confirming_lists_it(client, user, authenticator):
    login_verified(client, user)
    client.post("/accounts/confirm/", {"password": PASSWORD, "next": ADD})
    page = client.get(ADD).content.decode()
    assert f'data-begin-url="{REGISTER_BEGIN}"' in page
    assert "<script src=" in page and "<script>" not in page and " onclick=" not in page

    options = post_json(client, REGISTER_BEGIN, {"name": "Work laptop"}).json()
    assert options["excludeCredentials"] == []
    response = post_json(client, REGISTER_COMPLETE, authenticator.register(options))
    assert response.status_code == 200, response.content
    assert response.json()["redirect_url"] == SECURITY  # a second factor already existed

    page = client.get(SECURITY).content.decode()
    assert "Work laptop" in page and "Never" in page
    assert "Passkey “Work laptop” added." in page
    event = Event.objects.get(kind="user.passkey_added")
    assert event.actor_user == user and event.data["after"] == {"user": user.email}
    # The same authenticator again: the browser is told to refuse it (excludeCredentials).
    options = post_json(client, REGISTER_BEGIN, {"name": "Again"}).json()
    assert [item["id"] for item in options["excludeCredentials"]] == [
        b64url(authenticator.credential_id)
    ]


def test_a_first_passkey_turns_mfa_on_with_backup_codes(client, user, authenticator):
    client.force_login(user)
    reauthenticated(client)
    options = post_json(client, REGISTER_BEGIN, {"name": ""}).json()
    response = post_json(client, REGISTER_COMPLETE, authenticator.register(options))
    assert response.json()["redirect_url"] == reverse("accounts_backup_codes_new")
    passkey = WebAuthnCredential.objects.get(user=user)
    assert passkey.name == passkeys.PASSKEY_NAME_DEFAULT
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id
    assert otp.backup_codes_left(user) == otp.BACKUP_CODE_COUNT
    assert otp.has_mfa(user)
    client.post("/accounts/logout/")
    assert password_step(client, user.email).url == OTP_VERIFY


def test_an_unverified_session_of_an_enrolled_user_cannot_add_a_passkey(
    client, user, passkey, organization
):
    other = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    client.force_login(user)  # signed in, but no second factor verified in this session
    reauthenticated(client)
    response = post_json(client, REGISTER_BEGIN, {"name": "Attacker's key"})
    assert response.status_code == 403
    assert response.json()["code"] == "user_not_verified"
    assert (
        post_json(
            client, REGISTER_COMPLETE, other.register(fake_registration_options())
        ).status_code
        == 403
    )
    assert WebAuthnCredential.objects.filter(user=user).count() == 1


def test_removing_a_passkey_needs_a_fresh_confirmation(client, user, passkey):
    login_verified(client, user)
    response = client.post(REMOVE, {"passkey": passkey.credential_id_sha256})
    assert response.url.startswith("/accounts/confirm/")
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    # Confirming sends the user back to the security page, to repeat the removal.
    response = client.post("/accounts/confirm/", {"password": PASSWORD, "next": REMOVE})
    assert client.get(response.url).url == SECURITY
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    response = client.post(REMOVE, {"passkey": passkey.credential_id_sha256})
    assert response.url == SECURITY
    assert not WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    event = Event.objects.get(kind="user.passkey_removed")
    assert event.description == "Passkey “Laptop” removed"


def test_removing_someone_elses_passkey_is_not_found(client, user, organization):
    mallory = verified_user("mallory@customer.test")
    theirs = passkey_enrol(mallory, SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID))
    reauthenticated(login_verified(client, user))
    response = client.post(REMOVE, {"passkey": theirs.credential_id_sha256})
    assert response.status_code == 404
    assert WebAuthnCredential.objects.filter(pk=theirs.pk).exists()


def test_the_last_second_factor_stays_while_mfa_is_required(client, user, organization):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    authenticator = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    only = passkey_enrol(user, authenticator)
    otp.backup_codes_regenerate(user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = only.persistent_id
    session.save()
    reauthenticated(client)
    response = client.post(REMOVE, {"passkey": only.credential_id_sha256}, follow=True)
    assert "add another passkey or an authenticator app" in response.content.decode()
    assert WebAuthnCredential.objects.filter(pk=only.pk).exists()
    # With a second passkey, the first may go.
    second = passkey_enrol(user, SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID), name="Key")
    client.post(REMOVE, {"passkey": only.credential_id_sha256})
    assert list(WebAuthnCredential.objects.filter(user=user)) == [second]


def test_removing_the_last_passkey_turns_mfa_off_with_its_backup_codes(client, user, passkey):
    otp.backup_codes_regenerate(user)
    reauthenticated(login_verified(client, user))
    # login_verified gave the user an authenticator app; without it, the passkey is the last.
    TOTPDevice.objects.filter(user=user).delete()
    client.post(REMOVE, {"passkey": passkey.credential_id_sha256})
    assert not otp.has_mfa(user)
    assert not StaticDevice.objects.filter(user=user).exists()


def test_turning_mfa_off_and_a_staff_reset_remove_passkeys(client, user, passkey, staff_user):
    reauthenticated(login_verified(client, user))
    client.post("/accounts/mfa/remove/")
    assert not WebAuthnCredential.objects.filter(user=user).exists()
    passkey_enrol(user, SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID))
    user_mfa_reset(user=user, actor=staff_user)
    assert not WebAuthnCredential.objects.filter(user=user).exists()
    assert not otp.has_mfa(user)


def test_a_passkey_verifies_a_session_the_policy_holds_back(
    client, user, passkey, authenticator, organization
):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    client.force_login(user)  # e.g. enrolled in another session after this one signed in
    response = client.get(PROFILE)
    assert response.url == reverse("accounts_mfa_setup")
    page = client.get(f"{reverse('accounts_mfa_setup')}?next={PROFILE}").content.decode()
    assert f'data-complete-url="{VERIFY_COMPLETE}?next=%2Faccounts%2Fprofile%2F"' in page
    options = post_json(client, VERIFY_BEGIN).json()
    response = post_json(
        client, f"{VERIFY_COMPLETE}?next={PROFILE}", authenticator.authenticate(options)
    )
    assert response.json()["redirect_url"] == PROFILE
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id
    assert client.get(PROFILE).status_code == 200


def test_a_passkey_confirms_its_you_before_risky_pages(client, user, passkey, authenticator):
    login_verified(client, user)
    page = client.get("/accounts/confirm/?next=/accounts/email/").content.decode()
    assert "or use a passkey" in page
    options = post_json(client, VERIFY_BEGIN).json()
    response = post_json(
        client,
        f"{VERIFY_COMPLETE}?next=https://evil.example/",
        authenticator.authenticate(options),
    )
    assert response.json()["redirect_url"] == SECURITY
    assert client.get("/accounts/email/").status_code == 200


def test_passkeys_switched_off_offer_and_answer_nothing(client, user, passkey, settings):
    settings.PASSKEYS_ENABLED = False
    password_step(client, user.email)
    assert "data-passkey" not in client.get(OTP_VERIFY).content.decode()
    response = post_json(client, LOGIN_BEGIN)
    assert response.status_code == 404 and response.json()["code"] == "passkeys_unavailable"


def test_pages_run_passkeys_from_a_static_script_only(client, user, passkey):
    password_step(client, user.email)
    page = client.get(OTP_VERIFY).content.decode()
    assert '<script src="/static/js/passkeys.js" defer></script>' in page
    assert "<script>" not in page and " onclick=" not in page


# ----------------------------------------------------------------------------- settings
def _local_env(**environ) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PASSKEY_")}
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings.local", **environ}


def _relying_party_settings(**environ) -> list[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.OTP_WEBAUTHN_RP_ID, ','.join(s.OTP_WEBAUTHN_ALLOWED_ORIGINS), s.PASSKEYS_ENABLED)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env=_local_env(**environ),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_relying_party_defaults_follow_site_url():
    assert _relying_party_settings(SITE_URL="https://billing.example.com:8443") == [
        "billing.example.com",
        "https://billing.example.com:8443",
        "True",
    ]
    assert _relying_party_settings(
        SITE_URL="https://billing.example.com", PASSKEY_RP_ID="example.com"
    ) == ["example.com", "https://billing.example.com", "True"]


def test_plain_http_away_from_localhost_has_no_passkeys_and_still_starts():
    lan = {"SITE_URL": "http://10.0.0.5:8000"}
    assert _relying_party_settings(**lan) == ["10.0.0.5", "http://10.0.0.5:8000", "False"]
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=_local_env(**lan),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_relying_party_name_defaults_to_the_organization(organization, settings):
    settings.OTP_WEBAUTHN_RP_NAME = ""
    assert passkeys.relying_party_name(RequestFactory().get("/")) == organization.name
    settings.OTP_WEBAUTHN_RP_NAME = "Northwind Billing"
    assert passkeys.relying_party_name(RequestFactory().get("/")) == "Northwind Billing"


def test_staff_passkey_sign_in_reaches_the_admin(client, organization, authenticator):
    staff = UserFactory(staff=True, email="clerk@northwind.example")
    verified_user(staff.email)
    passkey_enrol(staff, authenticator)
    password_step(client, staff.email, next="/admin/")
    response = sign_in_with_passkey(client, authenticator)
    assert response.json()["redirect_url"] == "/admin/"
    assert client.get("/admin/").status_code == 200
