"""Signing in: password, then the MFA stage; nothing is authenticated in between."""

import base64
import re

import pyotp
import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.otp import MAX_DEVICE_FAILURES, backup_codes_regenerate
from billing.enums import MfaPolicy
from billing.models import Event
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"
LOGIN = "/accounts/login/"
PROFILE = "/accounts/profile/"
PORTAL = "/portal/"


@pytest.fixture
def user(organization):
    from allauth.account.models import EmailAddress

    user = UserFactory(email="ann@customer.test")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


@pytest.fixture
def totp(user):
    device = TOTPDevice.objects.create(user=user, name="App", confirmed=True)
    return device, pyotp.TOTP(base64.b32encode(device.bin_key).decode())


def password_step(client, email="ann@customer.test", password=PASSWORD, **extra):
    return client.post(LOGIN, {"login": email, "password": password, **extra})


def is_signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_login_without_mfa_optional_policy_signs_in(client, user):
    response = password_step(client)
    assert response.status_code == 302
    assert response.url == PORTAL
    assert is_signed_in(client)


def test_login_with_totp_password_alone_is_not_a_session(client, user, totp):
    response = password_step(client)
    assert response.url == reverse("accounts_otp_verify")
    assert not is_signed_in(client)
    # Nothing behind the login answers yet.
    assert client.get(PROFILE).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_login_with_totp_valid_code_signs_in_verified(client, user, totp):
    device, generator = totp
    password_step(client)
    response = client.post(reverse("accounts_otp_verify"), {"code": generator.now()})
    assert response.status_code == 302
    assert is_signed_in(client)
    assert client.session.get("otp_device_id") == device.persistent_id


def test_login_session_key_rotates_after_password_and_after_code(client, user, totp):
    _device, generator = totp
    client.get(LOGIN)
    client.session.save()
    before = client.session.session_key
    password_step(client)
    after_password = client.session.session_key
    client.post(reverse("accounts_otp_verify"), {"code": generator.now()})
    after_code = client.session.session_key
    assert len({before, after_password, after_code}) == 3


def test_totp_code_reused_after_logout_is_rejected(client, user, totp):
    _device, generator = totp
    with time_machine.travel("2026-03-01 10:00:05", tick=False):
        code = generator.now()
        password_step(client)
        client.post(reverse("accounts_otp_verify"), {"code": code})
        assert is_signed_in(client)
        client.post(reverse("account_logout"))
        password_step(client)
        response = client.post(reverse("accounts_otp_verify"), {"code": code})
    assert response.status_code == 200
    assert "not valid" in response.content.decode()
    assert not is_signed_in(client)


def test_totp_codes_outside_one_step_are_rejected(client, user, totp):
    _device, generator = totp
    with time_machine.travel("2026-03-01 10:00:05", tick=False):
        stale = (
            generator.at(generator.timecode(time_machine.time.time()) * 30 - 60) if False else None
        )
    del stale
    with time_machine.travel("2026-03-01 10:00:05", tick=False) as traveller:
        old = generator.now()
        traveller.shift(95)  # more than one 30-second step later
        password_step(client)
        response = client.post(reverse("accounts_otp_verify"), {"code": old})
    assert "not valid" in response.content.decode()
    assert not is_signed_in(client)


def test_wrong_codes_back_off_then_lock_the_device(client, user, totp):
    device, generator = totp
    password_step(client)
    client.post(reverse("accounts_otp_verify"), {"code": "000000"})
    # Exponential backoff: an immediate retry with the right code is refused too.
    response = client.post(reverse("accounts_otp_verify"), {"code": generator.now()})
    assert "Wait a moment" in response.content.decode()
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_count=MAX_DEVICE_FAILURES, throttling_failure_timestamp=None
    )
    response = client.post(reverse("accounts_otp_verify"), {"code": generator.now()})
    assert "locked" in response.content.decode()
    assert not is_signed_in(client)


def test_backup_code_works_once(client, user, totp):
    codes = backup_codes_regenerate(user)
    password_step(client)
    client.post(reverse("accounts_otp_verify"), {"code": codes[0]})
    assert is_signed_in(client)
    client.post(reverse("account_logout"))
    password_step(client)
    response = client.post(reverse("accounts_otp_verify"), {"code": codes[0]})
    assert not is_signed_in(client)
    assert "not valid" in response.content.decode()
    assert StaticToken.objects.filter(device__user=user).count() == len(codes) - 1


def test_email_code_cooldown_newest_only_and_expiry(client, user, totp):
    with time_machine.travel("2026-03-01 10:00:00", tick=False) as traveller:
        password_step(client)
        client.post(reverse("accounts_otp_email"))
        first = re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)
        response = client.post(reverse("accounts_otp_email"), follow=True)
        assert "Wait a minute" in response.content.decode()
        assert len(mail.outbox) == 1
        traveller.shift(61)
        client.post(reverse("accounts_otp_email"))
        second = re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)
        if first != second:
            client.post(reverse("accounts_otp_verify"), {"code": first})
            assert not is_signed_in(client)  # only the newest code counts
        traveller.shift(601)
        client.post(reverse("accounts_otp_verify"), {"code": second})
        assert not is_signed_in(client)  # expired after 10 minutes


def test_email_code_signs_in_and_is_bound_to_its_user(client, user, totp):
    other = UserFactory(email="other@customer.test")
    TOTPDevice.objects.create(user=other, name="App", confirmed=True)
    password_step(client)
    client.post(reverse("accounts_otp_email"))
    code = re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)
    assert mail.outbox[-1].to == ["ann@customer.test"]
    client.post(reverse("accounts_otp_verify"), {"code": code})
    assert is_signed_in(client)
    assert int(client.session["_auth_user_id"]) == user.pk


def test_email_codes_switched_off_refused(client, user, totp, organization):
    organization.email_otp_enabled = False
    organization.save()
    password_step(client)
    client.post(reverse("accounts_otp_email"))
    assert mail.outbox == []


def test_required_policy_forces_enrolment_before_anything_else(client, user, organization):
    organization.mfa_policy = MfaPolicy.REQUIRED
    organization.save()
    response = password_step(client)
    assert response.url == reverse("accounts_otp_enrol")
    assert not is_signed_in(client)
    page = client.get(response.url).content.decode()
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page).group(1)
    response = client.post(response.url, {"code": pyotp.TOTP(secret).now()})
    assert is_signed_in(client)
    assert response.url == reverse("accounts_backup_codes_new")
    codes_page = client.get(response.url)
    assert codes_page["Cache-Control"] == "no-store"
    assert len(re.findall(r"<li>\d{8}</li>", codes_page.content.decode())) == 10
    # Shown once only.
    assert client.get(reverse("accounts_backup_codes_new")).status_code == 302
    assert Event.objects.filter(kind="user.mfa_enrolled").count() == 1


def test_staff_without_device_must_enrol(client, organization):
    from allauth.account.models import EmailAddress

    staff = UserFactory(staff=True, email="clerk@northwind.example")
    EmailAddress.objects.create(user=staff, email=staff.email, verified=True, primary=True)
    response = password_step(client, email=staff.email)
    assert response.url == reverse("accounts_otp_enrol")


def test_admin_refuses_staff_session_without_otp(client, organization):
    staff = UserFactory(staff=True, email="clerk@northwind.example")
    client.force_login(staff)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts_mfa_setup"))


def test_signup_is_closed(client, organization):
    response = client.post(
        "/accounts/signup/",
        {"email": "new@x.test", "password1": "A-long-pass-1234", "password2": "A-long-pass-1234"},
    )
    from accounts.models import User

    assert not User.objects.filter(email="new@x.test").exists()
    assert response.status_code in (200, 302)
