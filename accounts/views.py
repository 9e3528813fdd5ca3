"""Sign-in second factor, enrolment, device management, re-authentication and the profile.

The stage views run between the password step and ``login()``; the others need a signed-in
user. Every change is a POST with CSRF; GET only shows. The passkey ceremonies these pages offer
are in ``accounts.passkey_views``.
"""

from functools import wraps
from urllib.parse import urlencode

import django_otp
from allauth.account.internal.decorators import login_stage_required
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import otp, passkeys
from accounts.decorators import mark_reauthenticated, recent_login_required
from accounts.forms import CodeForm, ProfileForm, ReauthenticateForm, client_ip
from accounts.stages import STEP_ENROL, STEP_URLNAMES, STEP_VERIFY, OTPStage
from billing.models import Organization
from billing.services.events import event_record

BACKUP_CODES_SESSION_KEY = "accounts_new_backup_codes"
# Where to continue after the backup codes were shown (the login's own redirect target).
BACKUP_CODES_NEXT_SESSION_KEY = "accounts_new_backup_codes_next"
ENROL_DEVICE_SESSION_KEY = "accounts_enrol_device"


def _is_safe_path(request, target: str) -> bool:
    """A path on this site: never another host, scheme, or a relative-path trick."""
    return target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    return target if _is_safe_path(request, target) else default


def finish_login(request, device, stage):
    """The code is good: complete the pending login, then mark this session OTP-verified."""
    response = stage.exit()
    if request.user.is_authenticated:
        django_otp.login(request, device)
        mark_reauthenticated(request)
    return response


# ----------------------------------------------------------------------------- login stage
def otp_step_required(step: str):
    """The pending login must be at ``step`` of the OTP stage; other steps go to their own page.

    A login that must verify a code cannot enrol a fresh device instead (which would replace the
    enrolled one), and one that must enrol cannot skip enrolment with an emailed code.
    """

    def decorator(view_func):
        @login_stage_required(stage=OTPStage.key, redirect_urlname="account_login")
        @wraps(view_func)
        def wrapper(request, *args, **kwargs):
            stage = request._login_stage
            if stage.step not in STEP_URLNAMES:
                return stage.abort()
            if stage.step != step:
                return redirect(stage.urlname)
            return view_func(request, *args, **kwargs)

        return wrapper

    return decorator


@sensitive_post_parameters("code")
@otp_step_required(STEP_VERIFY)
def otp_verify(request):
    stage = request._login_stage
    user = stage.login.user
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            verified = otp.verify_code(
                user=user, code=form.cleaned_data["code"], ip=client_ip(request)
            )
        except otp.OTPError as error:
            form.add_error("code", str(error))
        else:
            return finish_login(request, verified.device, stage)
    return render(
        request,
        "accounts/otp_verify.html",
        {
            "form": form,
            "email_codes": Organization.load().email_otp_enabled,
            "backup_codes_left": otp.backup_codes_left(user),
            "has_totp": otp.has_totp(user),
            "passkey": passkey_authentication(
                user, "accounts_otp_passkey_begin", "accounts_otp_passkey_complete"
            ),
        },
    )


@require_POST
@otp_step_required(STEP_VERIFY)
def otp_email_send(request):
    user = request._login_stage.login.user
    try:
        address = otp.email_code_send(user)
    except otp.OTPError as error:
        messages.error(request, str(error))
    else:
        messages.info(request, f"We emailed a code to {_mask(address)}. It expires in 10 minutes.")
    return redirect("accounts_otp_verify")


def _mask(address: str) -> str:
    name, _, domain = address.partition("@")
    return f"{name[:1]}•••@{domain}"


@sensitive_post_parameters("code")
@otp_step_required(STEP_ENROL)
def otp_enrol(request):
    """Forced enrolment right after the password step: nothing else is reachable until done."""
    stage = request._login_stage
    user = stage.login.user
    device = _enrolment_device(request, user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if otp.totp_confirm(device=device, code=form.cleaned_data["code"]):
            request.session.pop(ENROL_DEVICE_SESSION_KEY, None)
            _record(user, "user.mfa_enrolled", "Authenticator app set up")
            return enrolment_finish(request, TOTPDevice.objects.get(pk=device.pk), stage)
        form.add_error(
            "code", "That code is not valid. Check the time on your phone and try again."
        )
    context = _enrol_context(form, device, forced=True)
    context["passkey"] = passkey_registration(
        "accounts_otp_enrol_passkey_begin", "accounts_otp_enrol_passkey_complete"
    )
    return render(request, "accounts/otp_enrol.html", context)


def enrolment_finish(request, device, stage):
    """The first second factor is set up at the login stage: complete the login, then show the
    new backup codes once before going wherever the login was going (e.g. its ?next=)."""
    # Kept in the session for one display, right after the login completes.
    request.session[BACKUP_CODES_SESSION_KEY] = otp.backup_codes_regenerate(device.user)
    response = finish_login(request, device, stage)
    if request.user.is_authenticated and isinstance(response, HttpResponseRedirect):
        request.session[BACKUP_CODES_NEXT_SESSION_KEY] = response.url
        return redirect("accounts_backup_codes_new")
    return response


def passkey_authentication(user, begin_urlname: str, complete_urlname: str) -> dict | None:
    """What a page needs to offer "Use a passkey" (templates/accounts/_passkey.html): only to
    a user who has one, and only where passkeys are on."""
    if not settings.PASSKEYS_ENABLED or not otp.has_passkey(user):
        return None
    return {
        "mode": "authenticate",
        "begin_url": reverse(begin_urlname),
        "complete_url": reverse(complete_urlname),
    }


def passkey_registration(begin_urlname: str, complete_urlname: str) -> dict | None:
    """What a page needs to offer "Add a passkey", where passkeys are on."""
    if not settings.PASSKEYS_ENABLED:
        return None
    return {
        "mode": "register",
        "begin_url": reverse(begin_urlname),
        "complete_url": reverse(complete_urlname),
    }


def _enrolment_device(request, user) -> TOTPDevice:
    device_id = request.session.get(ENROL_DEVICE_SESSION_KEY)
    device = (
        TOTPDevice.objects.filter(pk=device_id, user=user, confirmed=False).first()
        if device_id
        else None
    )
    if device is None:
        device = otp.totp_new_device(user)
        request.session[ENROL_DEVICE_SESSION_KEY] = device.pk
    return device


def _enrol_context(form, device, *, forced: bool) -> dict:
    import segno

    uri = otp.totp_provisioning_uri(device)
    return {
        "form": form,
        "forced": forced,
        "secret": otp.totp_secret_base32(device),
        "qr_data_uri": segno.make(uri, error="m").svg_data_uri(scale=5, border=2),
    }


def _record(user, kind: str, description: str, actor=None) -> None:
    contact = getattr(user, "contact", None)
    event_record(
        kind=kind,
        description=description,
        actor=actor or user,
        customer=contact.customer if contact else None,
        after={"user": user.email},
    )


# ----------------------------------------------------------------------------- signed in
@login_required
def backup_codes_new(request):
    """Backup codes, shown exactly once right after they were made."""
    codes = request.session.pop(BACKUP_CODES_SESSION_KEY, None)
    next_url = request.session.pop(BACKUP_CODES_NEXT_SESSION_KEY, None) or ""
    if not _is_safe_path(request, next_url):
        next_url = ""
    if not codes:
        return redirect(next_url or "accounts_security")
    response = render(
        request,
        "accounts/backup_codes.html",
        {"codes": codes, "next_url": next_url or reverse("accounts_security")},
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
def security(request):
    user = request.user
    return render(
        request,
        "accounts/security.html",
        {
            "has_totp": otp.has_totp(user),
            "has_mfa": otp.has_mfa(user),
            "passkeys": passkeys.passkeys_for(user),
            "passkeys_enabled": settings.PASSKEYS_ENABLED,
            "backup_codes_left": otp.backup_codes_left(user),
            "email_codes": Organization.load().email_otp_enabled,
            "mfa_required": otp.mfa_required(user),
            "verified": user.is_verified(),
        },
    )


@sensitive_post_parameters("code")
@login_required
def mfa_setup(request):
    """Set up an authenticator app (or, if one exists, verify it for this session)."""
    user = request.user
    if otp.has_mfa(user) and not user.is_verified():
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                verified = otp.verify_code(
                    user=user, code=form.cleaned_data["code"], ip=client_ip(request)
                )
            except otp.OTPError as error:
                form.add_error("code", str(error))
            else:
                django_otp.login(request, verified.device)
                mark_reauthenticated(request)
                return redirect(_safe_next(request, reverse("accounts_security")))
        return render(
            request,
            "accounts/otp_verify_session.html",
            {
                "form": form,
                "has_totp": otp.has_totp(user),
                "passkey": _passkey_verification(request),
            },
        )
    if otp.has_totp(user):
        return redirect("accounts_security")
    if otp.mfa_required(user) and not user.is_verified():
        return _mfa_setup_form(request, user, forced=True)
    return _mfa_setup_guarded(request)


def _passkey_verification(request) -> dict | None:
    """The passkey ceremony that verifies a signed-in session, returning to the page's next."""
    ceremony = passkey_authentication(
        request.user, "accounts_passkey_verify_begin", "accounts_passkey_verify_complete"
    )
    next_url = _safe_next(request, "")
    if ceremony and next_url:
        ceremony["complete_url"] += f"?{urlencode({'next': next_url})}"
    return ceremony


@recent_login_required
def _mfa_setup_guarded(request):
    return _mfa_setup_form(request, request.user, forced=False)


def _mfa_setup_form(request, user, *, forced: bool):
    device = _enrolment_device(request, user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if otp.totp_confirm(device=device, code=form.cleaned_data["code"]):
            request.session.pop(ENROL_DEVICE_SESSION_KEY, None)
            confirmed = TOTPDevice.objects.get(pk=device.pk)
            django_otp.login(request, confirmed)
            mark_reauthenticated(request)
            request.session[BACKUP_CODES_SESSION_KEY] = otp.backup_codes_regenerate(user)
            _record(user, "user.mfa_enrolled", "Authenticator app set up")
            return redirect("accounts_backup_codes_new")
        form.add_error(
            "code", "That code is not valid. Check the time on your phone and try again."
        )
    context = _enrol_context(form, device, forced=forced)
    context["passkey"] = passkey_registration(
        "accounts_passkey_register_begin", "accounts_passkey_register_complete"
    )
    return render(request, "accounts/otp_enrol.html", context)


@require_http_methods(["GET", "POST"])
@login_required
@recent_login_required
def backup_codes_regenerate(request):
    if request.method != "POST":
        # A confirmation sends a POST that came too late back here: the page to repeat it from.
        return redirect("accounts_security")
    request.session[BACKUP_CODES_SESSION_KEY] = otp.backup_codes_regenerate(request.user)
    _record(request.user, "user.backup_codes_regenerated", "Backup codes replaced")
    return redirect("accounts_backup_codes_new")


@require_http_methods(["GET", "POST"])
@login_required
@recent_login_required
def mfa_remove(request):
    if request.method != "POST":
        return redirect("accounts_security")  # after a confirmation, as above
    user = request.user
    if otp.mfa_required(user):
        messages.error(
            request, "Two-factor authentication is required for your account and cannot be removed."
        )
        return redirect("accounts_security")
    with transaction.atomic():
        otp.devices_reset(user)
        _record(user, "user.mfa_removed", "Two-factor authentication removed")
    messages.success(request, "Two-factor authentication is off. We recommend turning it back on.")
    return redirect("accounts_security")


@sensitive_post_parameters("password", "code")
@login_required
def reauthenticate(request):
    form = ReauthenticateForm(request.POST or None, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        mark_reauthenticated(request)
        if form.device is not None:
            django_otp.login(request, form.device)
        return HttpResponseRedirect(_safe_next(request, reverse("accounts_profile")))
    return render(
        request,
        "accounts/reauthenticate.html",
        {
            "form": form,
            "next": _safe_next(request, ""),
            "has_totp": otp.has_totp(request.user),
            "passkey": _passkey_verification(request),
        },
    )


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            _record(request.user, "user.profile_changed", "Name changed")
        messages.success(request, "Your details are saved.")
        return redirect("accounts_profile")
    contact = getattr(request.user, "contact", None)
    return render(request, "accounts/profile.html", {"form": form, "contact": contact})
