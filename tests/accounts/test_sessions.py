"""Sessions: fixation, cookie flags and production settings, timeouts, ending other sessions."""

import os
import secrets
import subprocess
import sys

import pytest
import time_machine
from django.conf import settings
from django.test import Client

from accounts.sessions import SessionStore
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
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "another long passphrase 99"


def _planted_session_key() -> str:
    """An attacker's own, valid anonymous session, whose key they slip to the victim."""
    attacker = Client()
    attacker.get("/accounts/login/")
    session = attacker.session
    session["planted"] = True
    session.save()
    return session.session_key


def _client_with_session_key(key: str) -> Client:
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    return client


@pytest.mark.parametrize("with_mfa", [True, False])
def test_planted_session_key_is_dead_after_login(user, with_mfa):
    planted = _planted_session_key()
    victim = _client_with_session_key(planted)
    if with_mfa:
        generator = totp_for(user)
        assert password_step(victim, user.email).url == OTP_VERIFY
        victim.post(OTP_VERIFY, {"code": generator.now()})
    else:
        password_step(victim, user.email)
    assert signed_in_user_id(victim) == user.pk
    assert victim.session.session_key != planted
    assert not SessionStore().exists(planted)
    attacker = _client_with_session_key(planted)
    response = attacker.get(PROFILE)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_session_and_csrf_cookies_are_strict_under_production_flags(client, user, settings):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SESSION_COOKIE_NAME = "__Host-sessionid"
    settings.CSRF_COOKIE_NAME = "__Host-csrftoken"
    client.get("/accounts/login/", secure=True)
    response = client.post(
        "/accounts/login/", {"login": user.email, "password": PASSWORD}, secure=True
    )
    session_cookie = response.cookies["__Host-sessionid"]
    assert session_cookie["secure"] and session_cookie["httponly"]
    assert session_cookie["samesite"] == "Lax"
    assert session_cookie["path"] == "/" and not session_cookie["domain"]
    csrf_cookie = client.cookies["__Host-csrftoken"]
    assert csrf_cookie["secure"] and csrf_cookie["httponly"]
    assert not session_cookie["max-age"]  # ACCOUNT_SESSION_REMEMBER off: ends with the browser


def _production_env() -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DATABASE_URL": "postgres://billing@127.0.0.1:5432/billing",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALLOWED_HOSTS": "billing.example.com",
    }


def test_production_settings_pass_check_deploy():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=_production_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_cookie_and_header_settings():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, "
        "s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_SECURE, s.CSRF_COOKIE_HTTPONLY, "
        "s.SECURE_HSTS_SECONDS > 0, s.SECURE_SSL_REDIRECT, s.X_FRAME_OPTIONS, "
        "s.ACCOUNT_DEFAULT_HTTP_PROTOCOL, s.DEBUG)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=_production_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert output == [
        "True",
        "True",
        "Lax",
        "__Host-sessionid",
        "True",
        "True",
        "True",
        "True",
        "DENY",
        "https",
        "False",
    ]


def test_production_settings_refuse_a_weak_secret_key():
    env = {**_production_env(), "SECRET_KEY": "short"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


# ----------------------------------------------------------------------------- timeouts
def test_idle_session_ends(client, user):
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as traveller:
        login_verified(client, user)
        assert client.get(PROFILE).status_code == 200
        traveller.shift(settings.SESSION_IDLE_TIMEOUT - 60)
        assert client.get(PROFILE).status_code == 200  # activity keeps it alive
        traveller.shift(settings.SESSION_IDLE_TIMEOUT + 1)
        response = client.get(PROFILE)
        assert response.status_code == 302
        assert response.url == "/accounts/login/?next=%2Faccounts%2Fprofile%2F"
        assert not is_signed_in(client)
        assert "Your session ended" in client.get(response.url).content.decode()


def test_active_session_still_ends_at_the_absolute_limit(client, user):
    step = settings.SESSION_IDLE_TIMEOUT // 2
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as traveller:
        login_verified(client, user)
        elapsed = 0
        while elapsed + step < settings.SESSION_ABSOLUTE_TIMEOUT:
            assert client.get(PROFILE).status_code == 200, elapsed
            traveller.shift(step)
            elapsed += step
        traveller.shift(settings.SESSION_ABSOLUTE_TIMEOUT - elapsed + 1)
        response = client.get(PROFILE)
    assert response.status_code == 302
    assert not is_signed_in(client)


def test_session_timeout_applies_to_a_fresh_login_from_its_start(client, user):
    """A new login starts a new absolute clock (the old session's start is not inherited)."""
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as traveller:
        login_verified(client, user)
        client.get(PROFILE)
        client.post("/accounts/logout/")
        traveller.shift(settings.SESSION_ABSOLUTE_TIMEOUT - 600)
        login_verified(client, user)
        client.get(PROFILE)
        traveller.shift(1200)
        assert client.get(PROFILE).status_code == 200


# ----------------------------------------------------------------------------- other sessions
def test_password_change_signs_out_the_other_sessions(user):
    here, elsewhere = login_verified(Client(), user), login_verified(Client(), user)
    assert elsewhere.get(PROFILE).status_code == 200
    here.post("/accounts/confirm/", {"password": PASSWORD})
    response = here.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert here.get(PROFILE).status_code == 200  # this session continues
    assert elsewhere.get(PROFILE).status_code == 302
    assert not is_signed_in(elsewhere)


def test_sessions_page_lists_sessions_and_ends_the_others(organization):
    # Real sign-ins (allauth records a session per login); no MFA, so the password suffices.
    user = verified_user("multi@customer.test")
    here, elsewhere = Client(), Client(HTTP_USER_AGENT="Other browser/1.0")
    password_step(here, user.email)
    password_step(elsewhere, user.email)
    page = here.get("/accounts/sessions/")
    assert page.status_code == 200
    assert len(page.context["sessions"]) == 2
    assert "Other browser/1.0" in page.content.decode()
    response = here.post("/accounts/sessions/")
    assert response.status_code == 302
    assert not is_signed_in(elsewhere)
    assert elsewhere.get(PROFILE).status_code == 302
    assert here.get(PROFILE).status_code == 200
    assert len(here.get("/accounts/sessions/").context["sessions"]) == 1
