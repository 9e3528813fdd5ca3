"""Attacks on signing in: forced browsing past the password step, code races and caps,
re-authentication before risky changes, rate limits, security headers."""

import threading
from urllib.parse import urlsplit

import pytest
import time_machine
from django.apps import apps
from django.conf import settings
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import resolve, reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import otp
from accounts.models import User
from billing.enums import MfaPolicy
from billing.models import Event
from tests.accounts.conftest import (
    LOGIN,
    OTP_VERIFY,
    PASSWORD,
    PROFILE,
    is_signed_in,
    password_step,
    signed_in_user_id,
    totp_for,
    verified_user,
)
from tests.accounts.urlsweep import all_urls
from tests.factories import ContactPersonFactory, CustomerFactory, InvoiceFactory
from tests.helpers import login_verified

pytestmark = pytest.mark.django_db

# Pages anyone may see without signing in; none of them shows account or customer data.
PUBLIC_PAGES = {
    "healthz",
    "accounts_otp_verify",  # the pending login's own step
    "account_inactive",
    "account_signup",  # "sign-up is by invitation"
    "account_email_verification_sent",
    "account_confirm_email",
    "account_reset_password",
    "account_reset_password_done",
    "account_reset_password_from_key",
    "account_reset_password_from_key_done",
    "socialaccount_login_cancelled",
    "socialaccount_login_error",
}
REFUSALS = {401, 403, 404, 405}
STAGE_OR_LOGIN = {OTP_VERIFY, LOGIN}


@pytest.fixture
def customer_data(user):
    """A customer whose contact is the user about to sign in: what a leak would show."""
    customer = CustomerFactory(
        display_name="Quillon Zephyr Holdings",
        company_name="Quillon Zephyr Holdings GmbH",
        email="zephyr-billing@quillon.test",
    )
    ContactPersonFactory(
        customer=customer, user=user, email=user.email, first_name="Annabel", last_name="Quartz"
    )
    invoice = InvoiceFactory(customer=customer, number="QZ-778899")
    User.objects.filter(pk=user.pk).update(full_name="Annabel Quartzfield")
    return {
        "invoice": invoice,
        "user_email": user.email,
        "secrets": [
            customer.display_name,
            customer.email,
            invoice.number,
            "Annabel Quartzfield",
            "Quartz",
        ],
    }


@pytest.fixture
def pending(client, user, customer_data):
    """A client that has passed the password step of a TOTP user, not the code."""
    totp_for(user)
    # "Email me a code" is part of the pending step: it keeps the code on this device row.
    otp.email_device_for(user)

    def ensure():
        if "account_login" not in client.session:
            response = password_step(client, user.email)
            assert response.url == OTP_VERIFY
        assert not is_signed_in(client)

    ensure()
    return ensure


def _path(location: str) -> str:
    parts = urlsplit(location)
    assert parts.netloc in ("", "testserver"), location
    return parts.path


def _assert_no_secrets(response, secrets, where):
    body = response.content.decode(errors="replace")
    for secret in secrets:
        assert secret not in body, f"{where} shows {secret!r}"


def _url_name(path: str) -> str | None:
    return resolve(path).view_name if path else None


def test_forced_browsing_after_password_step_gets_nothing(client, pending, customer_data):
    secrets = customer_data["secrets"]
    urls = all_urls(uuid_value=str(customer_data["invoice"].public_id))
    assert len(urls) > 100
    for url in urls:
        pending()
        response = client.get(url.path)
        _assert_no_secrets(response, secrets, f"GET {url.path}")
        if response.status_code == 200:
            assert url.name in PUBLIC_PAGES, f"GET {url.path} answered 200"
            continue
        if response.status_code in REFUSALS:
            continue
        assert response.status_code in (301, 302), (url.path, response.status_code)
        # Follow the redirects on our site: they must end at the code step or the login page
        # (or an old address of a public page).
        hops = 0
        while response.status_code in (301, 302) and hops < 6:
            target = _path(response["Location"])
            response = client.get(response["Location"])
            _assert_no_secrets(response, secrets, f"GET {target} (from {url.path})")
            hops += 1
        landed_public = response.status_code == 200 and _url_name(target) in PUBLIC_PAGES
        assert response.status_code in REFUSALS or target in STAGE_OR_LOGIN or landed_public, (
            f"GET {url.path} led to {target} ({response.status_code})"
        )
        assert not is_signed_in(client)


def _row_counts() -> dict[str, int]:
    # Sessions are the login's own bookkeeping (a pending login lives in one), not data.
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if not model._meta.proxy and model._meta.label != "sessions.Session"
    }


def test_forced_posts_after_password_step_change_nothing(client, pending, customer_data):
    secrets = customer_data["secrets"]
    before = _row_counts()
    for url in all_urls(uuid_value=str(customer_data["invoice"].public_id)):
        pending()
        response = client.post(url.path, {})
        _assert_no_secrets(response, secrets, f"POST {url.path}")
        if response.status_code == 200:
            assert url.name in PUBLIC_PAGES, f"POST {url.path} answered 200"
        assert not is_signed_in(client)
    assert _row_counts() == before
    # The sweep did reach the pending login's own step: "email me a code" sent one.
    assert [message.to for message in mail.outbox] == [[customer_data["user_email"]]]


def test_pending_login_that_must_verify_cannot_enrol_a_new_device(client, user, organization):
    generator = totp_for(user)
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    password_step(client, user.email)
    response = client.get(reverse("accounts_otp_enrol"))
    assert response.url == OTP_VERIFY
    response = client.post(reverse("accounts_otp_enrol"), {"code": "123456"})
    assert response.url == OTP_VERIFY
    assert not is_signed_in(client)
    assert list(TOTPDevice.objects.filter(user=user).values_list("confirmed", flat=True)) == [True]
    client.post(OTP_VERIFY, {"code": generator.now()})
    assert signed_in_user_id(client) == user.pk


def test_pending_login_that_must_enrol_cannot_use_an_emailed_code(client, user, organization):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    response = password_step(client, user.email)
    assert response.url == reverse("accounts_otp_enrol")
    assert client.get(OTP_VERIFY).url == reverse("accounts_otp_enrol")
    assert client.post(reverse("accounts_otp_email")).url == reverse("accounts_otp_enrol")
    assert mail.outbox == []
    assert not is_signed_in(client)
    # The login page sends the pending login back to its own step.
    assert client.get(LOGIN).url == reverse("accounts_otp_enrol")


# ----------------------------------------------------------------------------- code races, caps
@pytest.mark.django_db(transaction=True)
def test_one_totp_code_submitted_twice_at_once_signs_in_once(organization):
    user = verified_user("racer@customer.test")
    generator = totp_for(user)
    clients = [Client(), Client()]
    for each in clients:
        assert password_step(each, user.email).url == OTP_VERIFY
    code = generator.now()
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def submit(each):
        try:
            barrier.wait(timeout=10)
            statuses.append(each.post(OTP_VERIFY, {"code": code}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(each,)) for each in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 302]  # one signed in (redirect), one refused (form)
    assert [is_signed_in(each) for each in clients].count(True) == 1


def test_ip_cap_refuses_even_a_valid_code(client, user):
    generator = totp_for(user)
    password_step(client, user.email)
    for _ in range(otp.MAX_IP_FAILURES):
        client.post(OTP_VERIFY, {"code": "000000"})
    device = TOTPDevice.objects.get(user=user)
    device.throttle_reset()  # not the device's own backoff: the network's cap
    response = client.post(OTP_VERIFY, {"code": generator.now()})
    assert response.status_code == 200
    assert "Too many wrong codes from this network" in response.content.decode()
    assert not is_signed_in(client)
    # Another network is not affected.
    other = Client(REMOTE_ADDR="198.51.100.7")
    password_step(other, user.email)
    other.post(OTP_VERIFY, {"code": generator.now()})
    assert is_signed_in(other)


# ----------------------------------------------------------------------------- re-authentication
@pytest.mark.parametrize("page", ["/accounts/email/", "/accounts/password/change/"])
def test_risky_pages_ask_to_confirm_first(client, user, page):
    login_verified(client, user)
    response = client.get(page)
    assert response.status_code == 302
    assert response.url == f"/accounts/confirm/?next={page.replace('/', '%2F')}"


@pytest.mark.parametrize("page", ["/accounts/email/", "/accounts/password/change/"])
def test_confirming_with_password_lets_the_user_through_for_a_while(client, user, page):
    login_verified(client, user)
    with time_machine.travel("2026-03-01 10:00:00", tick=False) as traveller:
        response = client.post("/accounts/confirm/", {"password": "wrong password", "next": page})
        assert response.status_code == 200
        assert "not correct" in response.content.decode()
        response = client.post("/accounts/confirm/", {"password": PASSWORD, "next": page})
        assert response.url == page
        assert client.get(page).status_code == 200
        traveller.shift(settings.REAUTHENTICATION_WINDOW + 1)
        assert client.get(page).url.startswith("/accounts/confirm/")


@pytest.mark.parametrize(
    "action", ["/accounts/mfa/remove/", "/accounts/mfa/backup-codes/regenerate/"]
)
def test_a_late_post_to_a_confirmed_action_lands_back_on_the_security_page(client, user, action):
    """Confirming sends the user back to the action's URL with a GET: that shows the security
    page to repeat the action from (no 405), and changes nothing."""
    login_verified(client, user)
    devices = list(TOTPDevice.objects.filter(user=user).values_list("pk", flat=True))
    response = client.post(action)
    assert response.url == f"/accounts/confirm/?next={action.replace('/', '%2F')}"

    back = client.post("/accounts/confirm/", {"password": PASSWORD, "next": action})
    assert back.url == action
    landing = client.get(action)

    assert (landing.status_code, landing.url) == (302, reverse("accounts_security"))
    assert list(TOTPDevice.objects.filter(user=user).values_list("pk", flat=True)) == devices
    changed = ("user.mfa_removed", "user.backup_codes_regenerated")
    assert not Event.objects.filter(kind__in=changed).exists()
    assert client.get(landing.url).status_code == 200


def test_password_set_for_a_passwordless_login_asks_to_confirm_first(client, user):
    generator = totp_for(user)
    user.set_unusable_password()
    user.save()
    login_verified(client, user)
    response = client.get("/accounts/password/set/")
    assert response.url.startswith("/accounts/confirm/")
    client.post("/accounts/confirm/", {"code": generator.now()})
    assert client.get("/accounts/password/set/").status_code == 200


def test_confirming_is_rate_limited_even_for_the_right_password(client, user):
    login_verified(client, user)
    for _ in range(10):  # ACCOUNT_RATE_LIMITS["reauthenticate"]: 10/m per user
        client.post("/accounts/confirm/", {"password": "a wrong guess"})
    response = client.post("/accounts/confirm/", {"password": PASSWORD, "next": PROFILE})
    assert response.status_code == 200
    assert "Too many attempts" in response.content.decode()
    assert client.get("/accounts/email/").url.startswith("/accounts/confirm/")


def test_confirming_with_a_totp_code_lets_the_user_through(client, user):
    generator = totp_for(user)
    login_verified(client, user)
    response = client.post(
        "/accounts/confirm/", {"code": generator.now(), "next": "/accounts/password/change/"}
    )
    assert response.url == "/accounts/password/change/"
    assert client.get("/accounts/password/change/").status_code == 200


# ----------------------------------------------------------------------------- rate limits
def test_failed_logins_for_one_account_lock_it_even_with_the_right_password(client, user):
    for _ in range(5):  # ACCOUNT_RATE_LIMITS["login_failed"]: 5/5m per account
        response = password_step(client, user.email, password="not the password")
        assert response.status_code == 200
    response = password_step(client, user.email)
    assert response.status_code in (200, 429)
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_signed_in(client)
    assert "account_login" not in client.session  # not even a pending login


def test_failed_logins_from_one_address_lock_it_for_every_account(client, user):
    for number in range(10):  # ACCOUNT_RATE_LIMITS["login_failed"]: 10/m per IP
        password_step(client, f"guess{number}@customer.test", password="not the password")
    response = password_step(client, user.email)
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_signed_in(client)


@pytest.mark.parametrize("method", ["get", "post"])
def test_admin_login_is_the_throttled_portal_login(client, user, method):
    response = getattr(client, method)(
        "/admin/login/", {"username": user.email, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.url.startswith(f"{LOGIN}?next=")
    assert not is_signed_in(client)


# ----------------------------------------------------------------------------- headers
def _assert_security_headers(response) -> None:
    csp = response["Content-Security-Policy"]
    directives = {}
    for part in csp.split(";"):
        name, _, value = part.strip().partition(" ")
        directives[name] = value
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_security_headers_on_public_and_signed_in_pages(client, user):
    _assert_security_headers(client.get(LOGIN))
    login_verified(client, user)
    _assert_security_headers(client.get(PROFILE))


def test_hsts_on_secure_requests_with_production_values(client, organization, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get(LOGIN, secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_pages_have_no_inline_script(client, user, organization):
    login_verified(client, user)
    for path in (PROFILE, "/accounts/security/"):
        body = client.get(path).content.decode()
        assert "<script>" not in body
        assert " onclick=" not in body
    client.logout()
    body = client.get(LOGIN).content.decode()
    assert "<script>" not in body
