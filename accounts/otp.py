"""One-time-password devices: verification under a row lock, throttling caps, enrolment.

django-otp does the cryptography and per-device exponential backoff. On top of it:
- verification locks the device row, so one TOTP code submitted twice at once passes once;
- a device that has failed ``MAX_DEVICE_FAILURES`` times in a row is locked until staff reset it;
- an IP address that fails ``MAX_IP_FAILURES`` times within an hour is refused for that hour.

Passkeys (``accounts.passkeys``) are devices too, but they answer a WebAuthn ceremony instead of
a typed code: they count as enrolment, are removed with the rest, and share the per-network cap.
"""

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django_otp import devices_for_user
from django_otp.plugins.otp_email.models import EmailDevice
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts.models import User
from billing.models import Organization

MAX_DEVICE_FAILURES = 20
MAX_IP_FAILURES = 50
IP_WINDOW_SECONDS = 3600
BACKUP_CODE_COUNT = 10

DEVICE_MODELS = (TOTPDevice, StaticDevice, EmailDevice, WebAuthnCredential)


class OTPError(Exception):
    """A code was refused; the message is fit to show."""


@dataclass(frozen=True)
class Verified:
    device: object


def confirmed_devices(user: User) -> list:
    """The devices a typed code may belong to (a passkey never accepts one)."""
    return [d for d in devices_for_user(user, confirmed=True) if _allowed(d)]


def _allowed(device) -> bool:
    if isinstance(device, WebAuthnCredential):
        return False
    if isinstance(device, EmailDevice):
        return Organization.load().email_otp_enabled
    return True


def has_totp(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def has_passkey(user: User) -> bool:
    return WebAuthnCredential.objects.filter(user=user, confirmed=True).exists()


def has_mfa(user: User) -> bool:
    """Enrolled: a confirmed authenticator app or a passkey. Backup and email codes are
    fallbacks only."""
    return has_totp(user) or has_passkey(user)


def mfa_required(user: User) -> bool:
    from billing.enums import MfaPolicy

    return user.is_staff or Organization.load().mfa_policy == MfaPolicy.REQUIRED


def _ip_key(ip: str) -> str:
    return f"otp-failures:{ip}"


def ip_blocked(ip: str) -> bool:
    return (cache.get(_ip_key(ip)) or 0) >= MAX_IP_FAILURES


def ip_failed(ip: str) -> None:
    """Count one refused code or passkey against the network it came from."""
    key = _ip_key(ip)
    if not cache.add(key, 1, IP_WINDOW_SECONDS):
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, IP_WINDOW_SECONDS)


def device_locked(device) -> bool:
    return getattr(device, "throttling_failure_count", 0) >= MAX_DEVICE_FAILURES


def verify_code(*, user: User, code: str, ip: str) -> Verified:
    """Check ``code`` against the user's devices; raise ``OTPError`` with the reason if refused."""
    code = "".join(code.split())
    if ip_blocked(ip):
        raise OTPError("Too many wrong codes from this network. Try again in an hour.")
    if not code:
        raise OTPError("Enter the code.")
    devices = confirmed_devices(user)
    if not devices:
        raise OTPError("No verification method is set up for this account.")
    locked = throttled = 0
    for device in devices:
        with transaction.atomic():
            # The lock makes "verify, then remember the code as used" one step.
            current = type(device).objects.select_for_update().get(pk=device.pk)
            if device_locked(current):
                locked += 1
                continue
            if not current.verify_is_allowed()[0]:
                throttled += 1
                continue
            if current.verify_token(code):
                return Verified(device=current)
    ip_failed(ip)
    if locked == len(devices):
        raise OTPError(
            "This account's codes are locked after too many failures. Contact us to reset them."
        )
    if locked + throttled == len(devices):
        raise OTPError("Too many wrong codes. Wait a moment before trying again.")
    raise OTPError("That code is not valid. Check the time on your device and try again.")


def totp_new_device(user: User) -> TOTPDevice:
    """An unconfirmed authenticator device; confirmed by its first valid code."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def totp_confirm(*, device: TOTPDevice, code: str) -> bool:
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        if not device.verify_token("".join(code.split())):
            return False
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=device.user).exclude(pk=device.pk).delete()
    return True


def totp_provisioning_uri(device: TOTPDevice) -> str:
    issuer = Organization.load().name or settings.OTP_TOTP_ISSUER
    return device.config_url.replace(f"issuer={settings.OTP_TOTP_ISSUER}", f"issuer={issuer}")


def totp_secret_base32(device: TOTPDevice) -> str:
    import base64

    return base64.b32encode(device.bin_key).decode()


def backup_codes_regenerate(user: User) -> list[str]:
    """Replace the user's backup codes with fresh single-use ones and return them (shown once)."""
    codes = [f"{secrets.randbelow(10**8):08d}" for _ in range(BACKUP_CODE_COUNT)]
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(
            user=user, defaults={"name": "Backup codes", "confirmed": True}
        )
        device.token_set.all().delete()
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def backup_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user).count()


def email_device_for(user: User) -> EmailDevice:
    device, _ = EmailDevice.objects.get_or_create(
        user=user, defaults={"name": "Email", "confirmed": True}
    )
    return device


def email_code_send(user: User) -> str:
    """Email a fresh code (replacing any earlier one); the cooldown refuses rapid resends."""
    if not Organization.load().email_otp_enabled:
        raise OTPError("Email codes are switched off.")
    device = email_device_for(user)
    allowed, _data = device.generate_is_allowed()
    if not allowed:
        raise OTPError("A code was sent moments ago. Wait a minute before asking for another.")
    device.generate_challenge({"organization": Organization.load()})
    return device.email or user.email


def devices_reset(user: User) -> int:
    """Staff: remove every device (after identity checks), so the user enrols again."""
    removed = 0
    for model in DEVICE_MODELS:
        removed += model.objects.filter(user=user).delete()[0]
    return removed
