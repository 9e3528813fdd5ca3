"""Re-authentication before risky actions: password or code within the last few minutes."""

import time
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpResponseRedirect
from django.urls import reverse

REAUTH_SESSION_KEY = "accounts_reauthenticated_at"


def mark_reauthenticated(request) -> None:
    request.session[REAUTH_SESSION_KEY] = time.time()


def recently_authenticated(request) -> bool:
    at = request.session.get(REAUTH_SESSION_KEY)
    return at is not None and time.time() - at < settings.REAUTHENTICATION_WINDOW


def recent_login_required(view_func):
    """Send the user to confirm their password or a code first, then back to this page.

    A POST that arrives too late is not carried out: the user confirms, then repeats it.
    """

    @wraps(view_func)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated and not recently_authenticated(request):
            target = request.get_full_path() if request.method == "GET" else request.path
            query = urlencode({"next": target})
            return HttpResponseRedirect(f"{reverse('accounts_reauthenticate')}?{query}")
        return view_func(request, *args, **kwargs)

    return wrapper
