"""Passkeys: WebAuthn credentials (django-otp-webauthn) as a second factor.

A passkey is a django-otp device, so ``django_otp.login`` and ``user.is_verified()`` treat it
like an authenticator app, and ``accounts.otp.has_mfa`` counts it as enrolment. py_webauthn
checks each ceremony (challenge, origin, RP ID, signature). On top of the package:
- the relying party is named after the merchant, unless PASSKEY_RP_NAME says otherwise;
- each challenge is answered once, even by two requests of one session racing with it (the
  package pops it from the session, which is not atomic across processes);
- sign-ins with one passkey are taken one at a time under a row lock, so its signature counter
  only moves forward and a cloned authenticator shows up;
- a refused answer counts towards the per-network cap shared with typed codes (the views do
  that). There is no per-device failure cap: an assertion cannot be guessed, and the cap on an
  authenticator app exists only against guessing codes;
- additions and removals are recorded as events.
"""

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django_otp.plugins.otp_email.models import EmailDevice
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp_webauthn import exceptions
from django_otp_webauthn.helpers import WebAuthnHelper
from django_otp_webauthn.models import WebAuthnCredential
from django_otp_webauthn.settings import app_settings
from django_otp_webauthn.utils import rewrite_exceptions
from webauthn.helpers import parse_authentication_credential_json

from accounts.models import User
from accounts.otp import has_mfa, has_totp, mfa_required
from billing.models import Organization
from billing.services.events import event_record

PASSKEY_NAME_DEFAULT = "Passkey"
# The name chosen before a registration ceremony, kept for its completion.
NAME_SESSION_KEY = "accounts_passkey_name"


class PasskeysUnavailable(exceptions.OTPWebAuthnApiError):
    status_code = 404
    default_detail = "Passkeys are not available on this site."
    default_code = "passkeys_unavailable"


class TooManyFailures(exceptions.OTPWebAuthnApiError):
    status_code = 429
    default_detail = "Too many failed attempts from this network. Try again in an hour."
    default_code = "too_many_failures"


class NoPasskey(exceptions.OTPWebAuthnApiError):
    status_code = 400
    default_detail = "No passkey is set up for this account. Use a code instead."
    default_code = "no_passkey"


class ReauthenticationRequired(exceptions.OTPWebAuthnApiError):
    status_code = 403
    default_detail = "Confirm it's you first."
    default_code = "reauthentication_required"


class DuplicatePasskey(exceptions.OTPWebAuthnApiError):
    status_code = 409
    default_detail = "This passkey is already registered."
    default_code = "duplicate_passkey"


class PasskeyRemovalRefused(Exception):
    """A passkey may not be removed; the message is fit to show."""


def relying_party_name(request: HttpRequest) -> str:
    """OTP_WEBAUTHN_RP_NAME_CALLABLE: the name authenticators show next to the passkey."""
    return settings.OTP_WEBAUTHN_RP_NAME or Organization.load().name


class PasskeyHelper(WebAuthnHelper):
    """The package's WebAuthn helper, taking sign-ins with one passkey one at a time."""

    def authenticate_complete(self, user, state: dict, data: dict):
        raw_id = parse_authentication_credential_json(data).raw_id
        with transaction.atomic():
            # The lock makes "check the signature counter, then store the new one" one step.
            list(
                WebAuthnCredential.objects.select_for_update().filter(
                    credential_id_sha256=WebAuthnCredential.get_credential_id_sha256(raw_id)
                )
            )
            return super().authenticate_complete(user, state, data)


def passkeys_for(user: User) -> QuerySet[WebAuthnCredential]:
    return WebAuthnCredential.objects.filter(user=user).order_by("created_at", "pk")


def challenge_consume(state: dict) -> dict:
    """Let one request answer this ceremony's challenge; any other is refused as stale."""
    key = f"passkey-challenge:{state['challenge']}"
    if not cache.add(key, True, app_settings.OTP_WEBAUTHN_TIMEOUT_SECONDS + 60):
        raise exceptions.InvalidState()
    return state


def passkey_register(
    *, request: HttpRequest, user: User, state: dict, data: dict, name: str
) -> WebAuthnCredential:
    """Verify the authenticator's answer to ``state`` and keep its new passkey as ``name``."""
    helper = WebAuthnCredential.get_webauthn_helper(request=request)
    try:
        with transaction.atomic():
            # A refused registration is the user's (or browser's) doing: no error log for it.
            with rewrite_exceptions(logger=None):
                passkey = helper.register_complete(user=user, state=state, data=data)
            passkey.name = name or PASSKEY_NAME_DEFAULT
            passkey.save(update_fields=["name"])
            _record(user, "user.passkey_added", f"Passkey “{passkey.name}” added")
    except IntegrityError as error:
        # The same authenticator answered twice (the browser normally refuses, by excludeCredentials).
        raise DuplicatePasskey() from error
    return passkey


def passkey_remove(*, passkey: WebAuthnCredential, actor: User) -> None:
    """Remove one of the user's passkeys; never the last second factor where MFA is required.

    When no passkey or authenticator app is left, the backup and email codes go too: they are
    fallbacks for a second factor, not one.
    """
    with transaction.atomic():
        # One user's factors change one at a time: two removals cannot both take "the other one".
        user = User.objects.select_for_update().get(pk=passkey.user_id)
        passkey = WebAuthnCredential.objects.filter(pk=passkey.pk, user=user).first()
        if passkey is None:
            return
        others = WebAuthnCredential.objects.filter(user=user, confirmed=True).exclude(pk=passkey.pk)
        last = not others.exists() and not has_totp(user)
        if last and mfa_required(user):
            raise PasskeyRemovalRefused(
                "Two-factor authentication is required for your account: add another passkey "
                "or an authenticator app before removing this one."
            )
        passkey.delete()
        if not has_mfa(user):
            StaticDevice.objects.filter(user=user).delete()
            EmailDevice.objects.filter(user=user).delete()
        _record(user, "user.passkey_removed", f"Passkey “{passkey.name}” removed", actor=actor)


def _record(user: User, kind: str, description: str, actor: User | None = None) -> None:
    contact = getattr(user, "contact", None)
    event_record(
        kind=kind,
        description=description,
        actor=actor or user,
        customer=contact.customer if contact else None,
        after={"user": user.email},
    )
