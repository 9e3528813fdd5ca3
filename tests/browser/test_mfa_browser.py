"""In a real browser: an invited contact sets a password, is made to enrol an authenticator app
(the organization requires MFA), sees the backup codes, signs out, and signs in again with a
password and a fresh code."""

import re
import time

import pyotp
import pytest
from django.core import mail

from accounts.services import contact_invite
from billing.enums import MfaPolicy
from tests.factories import ContactPersonFactory, OrganizationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "a sturdy passphrase 2026"


def _sign_in_with_password(page, email: str, next_path: str = "") -> None:
    page.goto(f"/accounts/login/{'?next=' + next_path if next_path else ''}")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/accounts/login/'] button[type=submit]")


def test_invited_contact_enrols_totp_then_signs_in_with_a_code(page, live_server, settings):
    started = time.monotonic()
    settings.SITE_URL = live_server.url  # the invitation's link points at the live server
    OrganizationFactory(mfa_policy=MfaPolicy.REQUIRED)
    staff = UserFactory(staff=True, email="clerk@northwind.example")
    contact = ContactPersonFactory(email="dana@customer.test", first_name="Dana")

    contact_invite(contact=contact, actor=staff)
    (invitation,) = mail.outbox
    link = re.search(r"(http://\S+/accounts/password/reset/key/\S+/)", invitation.body)[1]

    # The invitation: choose a password.
    page.goto(link)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/accounts/password/reset/key/done/")

    # Sign in: the password alone is not enough; enrolment is forced.
    _sign_in_with_password(page, contact.email)
    page.wait_for_url("**/accounts/2fa/setup/")
    secret = page.inner_text("[data-testid=totp-secret]").strip()
    generator = pyotp.TOTP(secret)
    enrolled_at = time.time()
    page.fill("input[name=code]", generator.at(enrolled_at))
    page.click("button[type=submit]")

    # The backup codes, shown once.
    page.wait_for_url("**/accounts/mfa/backup-codes/")
    codes = page.locator("[data-testid=backup-codes] li").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"\d{8}", code) for code in codes)
    assert page.get_attribute("a:has-text('I have saved them')", "href") == "/portal/"

    page.click("header button:has-text('Sign out')")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))

    # Again: password, then a code. The enrolment's code was used; the next step's code is
    # new and within django-otp's one-step tolerance.
    _sign_in_with_password(page, contact.email, next_path="/accounts/profile/")
    page.wait_for_url("**/accounts/2fa/")
    page.fill("input[name=code]", generator.at(enrolled_at + generator.interval))
    page.click("button[type=submit]")
    page.wait_for_url("**/accounts/profile/")
    assert page.inner_text("h1") == "Profile"
    assert contact.email in page.content()

    assert time.monotonic() - started < 60
