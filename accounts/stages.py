"""The MFA login stage: a login is not complete until a one-time code is verified.

allauth runs its login stages after the password (or SSO) step and before ``login()``; until
they all pass there is no authenticated session at all, only a stashed pending login.
"""

from allauth.account.stages import LoginStage
from allauth.core.internal.httpkit import headed_redirect_response

from accounts.otp import has_mfa, mfa_required
from billing.models import Organization


class OTPStage(LoginStage):
    key = "otp"
    urlname = "accounts_otp_verify"

    def handle(self):
        user = self.login.user
        if self._trusted_sso():
            return None, True
        # A new session key once the password is known: a planted pre-login key is worthless.
        self.request.session.cycle_key()
        if has_mfa(user):
            return headed_redirect_response("accounts_otp_verify"), True
        if mfa_required(user):
            return headed_redirect_response("accounts_otp_enrol"), True
        return None, True

    def _trusted_sso(self) -> bool:
        via_sso = self.login.state.get("socialaccount_sociallogin") or getattr(
            self.login, "social_login", None
        )
        return bool(via_sso) and Organization.load().trust_idp_mfa and not self.login.user.is_staff
