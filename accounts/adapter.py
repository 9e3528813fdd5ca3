"""The one override point for django-allauth: no open sign-up, and our MFA stage."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.urls import reverse


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # Portal logins exist only by merchant invitation (accounts.services.contact_invite).
        return False

    def get_login_stages(self) -> list[str]:
        return [*super().get_login_stages(), "accounts.stages.OTPStage"]

    def get_login_redirect_url(self, request) -> str:
        from accounts.views import BACKUP_CODES_SESSION_KEY

        if request.session.get(BACKUP_CODES_SESSION_KEY):
            return reverse("accounts_backup_codes_new")
        return super().get_login_redirect_url(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """SSO signs in existing, invited users only; it never creates an account."""

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return False
