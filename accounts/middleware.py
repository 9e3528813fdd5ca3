"""Session lifetime and the MFA policy, enforced on every request of a signed-in user."""

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpResponseRedirect
from django.urls import reverse

from accounts.stages import SSO_TRUSTED_SESSION_KEY

STARTED_KEY = "accounts_session_started"
SEEN_KEY = "accounts_session_seen"
# Where a user who must enrol in MFA (or verify this session) may still go: the setup page and
# the passkey ceremonies it runs.
ENROLMENT_PATHS = (
    "/accounts/mfa/setup/",
    "/accounts/mfa/passkeys/register/",
    "/accounts/mfa/passkeys/verify/",
    "/accounts/logout/",
    "/static/",
    "/healthz",
)


class SessionTimeoutMiddleware:
    """End sessions idle longer than SESSION_IDLE_TIMEOUT or older than SESSION_ABSOLUTE_TIMEOUT."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            started = request.session.setdefault(STARTED_KEY, now)
            seen = request.session.get(SEEN_KEY, now)
            if (
                now - seen > settings.SESSION_IDLE_TIMEOUT
                or now - started > settings.SESSION_ABSOLUTE_TIMEOUT
            ):
                logout(request)
                messages.info(request, "Your session ended. Please sign in again.")
                query = urlencode({"next": request.path})
                return HttpResponseRedirect(f"{reverse('account_login')}?{query}")
            # Write at most once a minute, so reads don't save the session on every request.
            if now - seen > 60 or SEEN_KEY not in request.session:
                request.session[SEEN_KEY] = now
        return self.get_response(request)


class MFAPolicyMiddleware:
    """A signed-in user whom policy requires to use MFA, but who has not verified a device in
    this session, can reach nothing but the enrolment page and sign-out."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and not user.is_verified()
            and not request.path.startswith(ENROLMENT_PATHS)
            and not request.session.get(SSO_TRUSTED_SESSION_KEY)
        ):
            from accounts.otp import mfa_required

            if mfa_required(user):
                return HttpResponseRedirect(reverse("accounts_mfa_setup"))
        return self.get_response(request)
