"""In a real browser: an invited contact sets a password, is made to enrol an authenticator app
(the organization requires MFA), sees the backup codes, signs out, and signs in again with a
password and a fresh code. And a user adds a passkey, then signs in with password and passkey,
Chromium's virtual authenticator (DevTools protocol) standing in for the device."""

import base64
import re
import time
from urllib.parse import urlsplit

import pyotp
import pytest
from allauth.account.models import EmailAddress
from axe_playwright_python.sync_playwright import Axe
from django.core import mail
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential
from playwright.sync_api import expect

from accounts.services import contact_invite
from billing.enums import MfaPolicy
from billing.models import Event
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


def _assert_accessible(page) -> None:
    """axe-core finds nothing serious or critical on the page as it stands."""
    violations = Axe().run(page).response["violations"]
    blocking = [v["id"] for v in violations if v["impact"] in {"serious", "critical"}]
    assert not blocking, f"{page.url}: {blocking}"


def _virtual_authenticator(page) -> tuple:
    """A platform authenticator (like Touch ID) that always verifies its user, for this page."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def test_user_adds_a_passkey_then_signs_in_with_password_and_passkey(page, live_server, settings):
    started = time.monotonic()
    # WebAuthn needs a secure context (http://localhost is one) and a domain as RP ID.
    assert urlsplit(live_server.url).hostname == "localhost"
    settings.OTP_WEBAUTHN_RP_ID = "localhost"
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    settings.PASSKEYS_ENABLED = True
    OrganizationFactory(name="Northwind Cloud")
    contact = ContactPersonFactory(
        email="erin@customer.test", customer__display_name="Erin's Bakery"
    )
    user = UserFactory(email=contact.email, password=PASSWORD)
    contact.user = user
    contact.save()
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    device = TOTPDevice.objects.create(user=user, name="App", confirmed=True)
    generator = pyotp.TOTP(base64.b32encode(device.bin_key).decode())
    cdp, authenticator_id = _virtual_authenticator(page)

    # Password and an authenticator code, as before.
    _sign_in_with_password(page, user.email)
    page.wait_for_url("**/accounts/2fa/")
    expect(page.get_by_role("button", name="Use a passkey")).to_have_count(0)
    page.fill("input[name=code]", generator.now())
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")

    # Security page: add a passkey (the sign-in just now counts as a fresh confirmation).
    page.goto("/accounts/security/")
    page.click("a:has-text('Add a passkey')")
    page.wait_for_url("**/accounts/mfa/passkeys/add/")
    expect(page.locator("[data-passkey-fallback]")).to_be_hidden()
    _assert_accessible(page)
    page.fill("input[name=name]", "This browser")
    page.get_by_role("button", name="Create a passkey").click()
    page.wait_for_url("**/accounts/security/")
    expect(page.locator("[data-testid=passkeys] tbody tr")).to_have_count(1)
    expect(page.locator("[data-testid=passkeys]")).to_contain_text("This browser")
    _assert_accessible(page)
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    assert len(stored["credentials"]) == 1
    passkey = WebAuthnCredential.objects.get(user=user)
    assert passkey.name == "This browser" and passkey.last_used_at is None

    page.click("header button:has-text('Sign out')")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))

    # Password, then the passkey instead of a code.
    _sign_in_with_password(page, user.email)
    page.wait_for_url("**/accounts/2fa/")
    _assert_accessible(page)
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url("**/portal/")
    expect(page.locator("h1")).to_have_text("Erin's Bakery")
    passkey.refresh_from_db()
    assert passkey.last_used_at is not None
    assert Event.objects.filter(kind="user.passkey_added").count() == 1
    # The session is verified by the passkey, which the security page now shows as used.
    page.goto("/accounts/security/")
    expect(page.locator("main")).to_contain_text("This session is verified.")
    expect(page.locator("[data-testid=passkeys] tbody td").nth(2)).not_to_have_text("Never")

    assert time.monotonic() - started < 60


def test_forced_enrolment_with_a_passkey_in_the_browser(page, live_server, settings):
    settings.OTP_WEBAUTHN_RP_ID = "localhost"
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    settings.PASSKEYS_ENABLED = True
    OrganizationFactory(mfa_policy=MfaPolicy.REQUIRED)
    contact = ContactPersonFactory(email="finn@customer.test", customer__display_name="Finn & Co")
    user = UserFactory(email=contact.email, password=PASSWORD)
    contact.user = user
    contact.save()
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    _virtual_authenticator(page)

    _sign_in_with_password(page, user.email)
    page.wait_for_url("**/accounts/2fa/setup/")
    _assert_accessible(page)
    page.fill("input[name=name]", "Laptop")
    page.get_by_role("button", name="Create a passkey").click()
    page.wait_for_url("**/accounts/mfa/backup-codes/")
    expect(page.locator("[data-testid=backup-codes] li")).to_have_count(10)
    page.click("a:has-text('I have saved them')")
    page.wait_for_url("**/portal/")
    expect(page.locator("h1")).to_have_text("Finn & Co")
    assert WebAuthnCredential.objects.get(user=user).name == "Laptop"


def test_without_javascript_the_passkey_is_hidden_and_codes_still_work(
    chromium, live_server, settings
):
    settings.PASSKEYS_ENABLED = True
    OrganizationFactory()
    user = UserFactory(email="gus@customer.test", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    device = TOTPDevice.objects.create(user=user, name="App", confirmed=True)
    generator = pyotp.TOTP(base64.b32encode(device.bin_key).decode())
    WebAuthnCredential.objects.create(
        user=user, name="Key", credential_id=b"k" * 16, public_key=b"p", aaguid="0" * 32
    )
    context = chromium.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        _sign_in_with_password(page, user.email, next_path="/accounts/profile/")
        page.wait_for_url("**/accounts/2fa/**")
        expect(page.locator("[data-passkey]")).to_have_count(1)
        expect(page.get_by_role("button", name="Use a passkey")).to_be_hidden()
        page.fill("input[name=code]", generator.now())
        page.click("button[type=submit]")
        page.wait_for_url("**/accounts/profile/")
        page.goto("/accounts/mfa/passkeys/add/")
        expect(page.locator("[data-passkey-fallback]")).to_be_visible()
        expect(page.get_by_role("button", name="Create a passkey")).to_be_hidden()
    finally:
        context.close()
