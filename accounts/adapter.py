"""The override points for django-allauth: no open sign-up, our MFA stage, and SSO rules.

Single sign-on (OpenID Connect) signs in existing, invited users only:
- an IdP identity is its stable subject (``SocialAccount.uid`` = the ``sub`` claim);
- the first SSO login links it to the user whose *verified* email equals the email the IdP
  asserts as verified, provided that user has no other identity at that IdP yet;
- later logins match on ``sub`` alone, so a changed email at the IdP never switches accounts;
- nothing else signs in: no account is ever created by SSO, and a signed-in user cannot link
  an arbitrary IdP identity by hand.
"""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialAccount, SocialLogin
from allauth.socialaccount.providers.base import AuthProcess
from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse

from accounts.models import User


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # Portal logins exist only by merchant invitation (accounts.services.contact_invite).
        return False

    def get_login_stages(self) -> list[str]:
        return [*super().get_login_stages(), "accounts.stages.OTPStage"]


def _claims(sociallogin: SocialLogin) -> dict:
    """The identity claims allauth uses for the login (userinfo if fetched, else the ID token)."""
    extra = sociallogin.account.extra_data or {}
    return extra.get("userinfo") or extra.get("id_token") or extra


def _asserted_true(value) -> bool:
    # Some IdPs send booleans as strings; "false" must not count as verified.
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """SSO signs in existing, invited users only; it never creates an account."""

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return False

    def is_auto_signup_allowed(self, request, sociallogin) -> bool:
        return False

    def pre_social_login(self, request, sociallogin: SocialLogin) -> None:
        extra = sociallogin.account.extra_data or {}
        userinfo, id_token = extra.get("userinfo"), extra.get("id_token")
        if userinfo and id_token and str(userinfo.get("sub")) != str(id_token.get("sub")):
            # OpenID Connect Core §5.3.2: userinfo is about the ID token's subject, or unusable.
            raise ImmediateHttpResponse(
                self._refuse(request, "The sign-in provider's answer was inconsistent.")
            )
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            # Identities link themselves at the first SSO sign-in, by verified email only.
            raise ImmediateHttpResponse(
                self._refuse(
                    request, "Single sign-on is linked automatically when you first use it."
                )
            )
        super().pre_social_login(request, sociallogin)

    def authenticate_by_email(self, sociallogin: SocialLogin) -> tuple[User, str] | None:
        """The first SSO login of an identity: link it to the user with this verified email."""
        claims = _claims(sociallogin)
        email = (claims.get("email") or "").strip()
        if not email or not _asserted_true(claims.get("email_verified")):
            return None
        if not self.can_authenticate_by_email(sociallogin, email):
            return None
        address = (
            EmailAddress.objects.filter(email__iexact=email, verified=True)
            .select_related("user")
            .first()
        )
        if address is None:
            return None
        already_linked = SocialAccount.objects.filter(
            user=address.user, provider=sociallogin.account.provider
        ).exists()
        if already_linked:
            # The user has another identity at this IdP (e.g. an email address that was given to
            # someone else there): only that identity's subject signs in.
            return None
        return address.user, address.email

    def _refuse(self, request, message: str) -> HttpResponseRedirect:
        messages.error(request, message)
        return HttpResponseRedirect(reverse("account_login"))
