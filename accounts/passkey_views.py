"""Passkey ceremonies: django-otp-webauthn's views, bound to our login stage and our rules.

The package's views expect a signed-in user (or sign one in with a passkey alone, which we never
allow, so its own URLs are not mounted). Here:
- at the login stage's verify step, the pending login's user answers with a passkey, and a
  valid answer completes the stage exactly as a valid code does (``views.finish_login``): until
  then there is no authenticated session;
- at the enrol step, the pending login may set up a passkey instead of an authenticator app;
- signed in, a user adds a passkey (after re-authentication, or when policy forces enrolment),
  verifies the session or confirms it's them with one, or removes one (after re-authentication).

The ceremony views answer JSON to static/js/passkeys.js (``{"detail", "code"}`` on refusal).
When a view's premise no longer holds (the pending login is gone, the user signed out) it
redirects as the pages do; the script then reloads its page, whose own guard sends the user on.
"""

import logging

import django_otp
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django_otp_webauthn import exceptions
from django_otp_webauthn.models import WebAuthnCredential
from django_otp_webauthn.views import (
    BeginCredentialAuthenticationView,
    BeginCredentialRegistrationView,
    CompleteCredentialAuthenticationView,
    CompleteCredentialRegistrationView,
)

from accounts import otp, passkeys
from accounts.decorators import mark_reauthenticated, recent_login_required, recently_authenticated
from accounts.forms import PasskeyNameForm, client_ip
from accounts.stages import STEP_ENROL, STEP_VERIFY
from accounts.views import (
    BACKUP_CODES_NEXT_SESSION_KEY,
    BACKUP_CODES_SESSION_KEY,
    _safe_next,
    enrolment_finish,
    finish_login,
    otp_step_required,
    passkey_registration,
)

logger = logging.getLogger(__name__)


def _redirect_target(response) -> str:
    """Where a finished login's response sends the browser (allauth answers with a redirect)."""
    if response.status_code in (301, 302, 303):
        return response["Location"]
    return reverse("account_login")


# ----------------------------------------------------------------------------- shared rules
class PasskeyAPIMixin:
    """Every ceremony view: passkeys must be on, and the network under the failure cap.

    A refusal is logged with py_webauthn's reason (at INFO: it is the user's or the browser's
    doing, not a server error). Where ``counts_failures``, a refused sign-in answer also counts
    against the network, exactly like a wrong code.
    """

    counts_failures = False
    http_method_names = ["post"]

    def dispatch(self, request, *args, **kwargs):
        # The package runs its checks before looking at the method; a GET changes and says nothing.
        if request.method != "POST":
            return self.http_method_not_allowed(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        if not settings.PASSKEYS_ENABLED:
            raise passkeys.PasskeysUnavailable()
        if otp.ip_blocked(client_ip(request)):
            raise passkeys.TooManyFailures()
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.OTPWebAuthnApiError) and not isinstance(
            exc, passkeys.PasskeysUnavailable | passkeys.TooManyFailures
        ):
            ip = client_ip(self.request)
            reason = f"{exc.code}: {exc.__cause__}" if exc.__cause__ else exc.code
            logger.info("%s refused (%s) from %s", type(self).__name__, reason, ip)
            if self.counts_failures:
                otp.ip_failed(ip)
        return super().handle_exception(exc)


class SingleUseChallengeMixin:
    def get_state(self):
        return passkeys.challenge_consume(super().get_state())


class NamedRegistrationMixin:
    """The passkey's name is checked before the ceremony and kept for its completion."""

    def post(self, *args, **kwargs):
        data = self.request.data
        form = PasskeyNameForm({"name": data.get("name", "") if hasattr(data, "get") else ""})
        if not form.is_valid():
            raise exceptions.UnprocessableEntity(
                code="invalid_name", detail=" ".join(form.errors["name"])
            )
        self.request.session[passkeys.NAME_SESSION_KEY] = form.cleaned_data["name"]
        return super().post(*args, **kwargs)


class PendingLoginMixin:
    """The user is the pending login's (``otp_step_required`` put the stage on the request)."""

    def get_user(self):
        return self.request._login_stage.login.user


class HasPasskeyMixin:
    def check_can_authenticate(self):
        super().check_can_authenticate()
        if not otp.has_passkey(self.get_user()):
            raise passkeys.NoPasskey()


# ----------------------------------------------------------------------------- login stage
@method_decorator(otp_step_required(STEP_VERIFY), name="dispatch")
class LoginPasskeyBeginView(
    PasskeyAPIMixin, PendingLoginMixin, HasPasskeyMixin, BeginCredentialAuthenticationView
):
    """Verify step: a challenge for the pending login's own passkeys."""


@method_decorator(otp_step_required(STEP_VERIFY), name="dispatch")
class LoginPasskeyCompleteView(
    PasskeyAPIMixin,
    SingleUseChallengeMixin,
    PendingLoginMixin,
    CompleteCredentialAuthenticationView,
):
    """Verify step: a valid answer completes the login stage, as a valid code does."""

    counts_failures = True
    login_response = None

    def complete_auth(self, device):
        # The package would authenticate the user here; the stage does, then marks the session.
        self.login_response = finish_login(self.request, device, self.request._login_stage)

    def get_success_url(self):
        return _redirect_target(self.login_response)


class PendingEnrolmentMixin(PendingLoginMixin):
    def _check_user_verified(self, user):
        # A pending login is never verified; the enrol step is for a login without MFA only.
        if otp.has_mfa(user):
            raise exceptions.NotVerified()


@method_decorator(otp_step_required(STEP_ENROL), name="dispatch")
class EnrolPasskeyBeginView(
    PasskeyAPIMixin, PendingEnrolmentMixin, NamedRegistrationMixin, BeginCredentialRegistrationView
):
    """Enrol step: set up a passkey instead of an authenticator app."""


@method_decorator(otp_step_required(STEP_ENROL), name="dispatch")
class EnrolPasskeyCompleteView(
    PasskeyAPIMixin,
    SingleUseChallengeMixin,
    PendingEnrolmentMixin,
    CompleteCredentialRegistrationView,
):
    """Enrol step: keep the passkey, complete the login with it, then show the backup codes."""

    def post(self, *args, **kwargs):
        request = self.request
        user = self.get_user()
        state = self.get_state()
        passkey = passkeys.passkey_register(
            request=request,
            user=user,
            state=state,
            data=request.data,
            name=request.session.pop(passkeys.NAME_SESSION_KEY, ""),
        )
        response = enrolment_finish(request, passkey, request._login_stage)
        return JsonResponse({"id": passkey.pk, "redirect_url": _redirect_target(response)})


# ----------------------------------------------------------------------------- signed in
def _enrolment_forced(request) -> bool:
    """The policy requires MFA and this session has none: enrolment needs no re-authentication
    (as for an authenticator app at /accounts/mfa/setup/)."""
    user = request.user
    return otp.mfa_required(user) and not otp.has_mfa(user) and not user.is_verified()


class SignedInRegistrationMixin:
    def user_is_mfa_enrolled(self, user) -> bool:
        # The package counts backup and email codes as enrolment; we count what signs in.
        return otp.has_mfa(user)

    def check_can_register(self):
        if not (recently_authenticated(self.request) or _enrolment_forced(self.request)):
            raise passkeys.ReauthenticationRequired()


@method_decorator(login_required, name="dispatch")
class PasskeyRegisterBeginView(
    PasskeyAPIMixin,
    SignedInRegistrationMixin,
    NamedRegistrationMixin,
    BeginCredentialRegistrationView,
):
    """Add a passkey: the options for the browser."""


@method_decorator(login_required, name="dispatch")
class PasskeyRegisterCompleteView(
    PasskeyAPIMixin,
    SignedInRegistrationMixin,
    SingleUseChallengeMixin,
    CompleteCredentialRegistrationView,
):
    """Add a passkey: keep it; a first second factor also gets backup codes."""

    def post(self, *args, **kwargs):
        request = self.request
        user = request.user
        first_factor = not otp.has_mfa(user)
        verified = user.is_verified()
        state = self.get_state()
        passkey = passkeys.passkey_register(
            request=request,
            user=user,
            state=state,
            data=request.data,
            name=request.session.pop(passkeys.NAME_SESSION_KEY, ""),
        )
        if not verified:
            # As with a new authenticator app: the device just proven verifies this session.
            django_otp.login(request, passkey)
            mark_reauthenticated(request)
        if first_factor:
            request.session[BACKUP_CODES_SESSION_KEY] = otp.backup_codes_regenerate(user)
            request.session[BACKUP_CODES_NEXT_SESSION_KEY] = _safe_next(
                request, reverse("accounts_security")
            )
            redirect_url = reverse("accounts_backup_codes_new")
        else:
            messages.success(request, f"Passkey “{passkey.name}” added.")
            redirect_url = reverse("accounts_security")
        return JsonResponse({"id": passkey.pk, "redirect_url": redirect_url})


@method_decorator(login_required, name="dispatch")
class PasskeyVerifyBeginView(PasskeyAPIMixin, HasPasskeyMixin, BeginCredentialAuthenticationView):
    """Verify this session, or confirm it's you: a challenge for the user's passkeys."""


@method_decorator(login_required, name="dispatch")
class PasskeyVerifyCompleteView(
    PasskeyAPIMixin,
    SingleUseChallengeMixin,
    CompleteCredentialAuthenticationView,
):
    """A valid answer verifies the session and counts as a fresh re-authentication."""

    counts_failures = True

    def complete_auth(self, device):
        django_otp.login(self.request, device)
        mark_reauthenticated(self.request)

    def get_success_url(self):
        return _safe_next(self.request, reverse("accounts_security"))


@login_required
@recent_login_required
def passkey_add(request):
    """The page that runs the registration ceremony (with static/js/passkeys.js)."""
    ceremony = passkey_registration(
        "accounts_passkey_register_begin", "accounts_passkey_register_complete"
    )
    if ceremony is None:
        raise Http404("Passkeys are not available on this site.")
    return render(request, "accounts/passkey_add.html", {"passkey": ceremony})


@login_required
@recent_login_required
def passkey_remove(request):
    if request.method != "POST":
        # A confirmation sends a POST that came too late back here: the page to repeat it from.
        return redirect("accounts_security")
    passkey = get_object_or_404(
        WebAuthnCredential,
        user=request.user,
        credential_id_sha256=request.POST.get("passkey", ""),
    )
    try:
        passkeys.passkey_remove(passkey=passkey, actor=request.user)
    except passkeys.PasskeyRemovalRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Passkey “{passkey.name}” removed.")
    return redirect("accounts_security")
