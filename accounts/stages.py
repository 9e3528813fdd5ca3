"""The MFA login stage: a login is not complete until a one-time code (or a passkey) is verified.

allauth runs its login stages after the password (or SSO) step and before ``login()``; until
they all pass there is no authenticated session at all, only a stashed pending login.

The stage decides once, when it starts, which step the pending login must pass: ``verify`` (a
code from an enrolled device, or a passkey) or ``enrol`` (set up an authenticator app or a
passkey first). The step is kept in the stashed login and each stage view serves only its own
step, so a pending login that must verify cannot enrol a new device instead, and one that must
enrol cannot slip through with an emailed code.
"""

from allauth.account.stages import LoginStage
from allauth.core.internal.httpkit import headed_redirect_response

from accounts.otp import has_mfa, mfa_required
from billing.models import Organization

# Set for a session signed in by SSO whose MFA the organization trusts (see MFAPolicyMiddleware).
SSO_TRUSTED_SESSION_KEY = "accounts_sso_trusted"

STEP_VERIFY = "verify"
STEP_ENROL = "enrol"
STEP_URLNAMES = {STEP_VERIFY: "accounts_otp_verify", STEP_ENROL: "accounts_otp_enrol"}


def login_via_sso(login) -> bool:
    """Whether a pending allauth login came from a social (SSO) login.

    allauth 65 passes the ``SocialLogin`` in ``Login.signal_kwargs["sociallogin"]`` (kept when the
    login is stashed between stages); a password login has no ``signal_kwargs``.
    """
    return (login.signal_kwargs or {}).get("sociallogin") is not None


class OTPStage(LoginStage):
    key = "otp"

    @property
    def urlname(self) -> str:
        # allauth sends a pending login back here (e.g. from the login page): the right step.
        return STEP_URLNAMES.get(self.step, STEP_URLNAMES[STEP_VERIFY])

    @property
    def step(self) -> str | None:
        return self.state.get("step")

    def handle(self):
        user = self.login.user
        session = self.request.session
        session.pop(SSO_TRUSTED_SESSION_KEY, None)
        if self._trusted_sso():
            session[SSO_TRUSTED_SESSION_KEY] = True
            return None, True
        # A new session key once the password is known: a planted pre-login key is worthless.
        session.cycle_key()
        if has_mfa(user):
            self.state["step"] = STEP_VERIFY
        elif mfa_required(user):
            self.state["step"] = STEP_ENROL
        else:
            return None, True
        return headed_redirect_response(STEP_URLNAMES[self.step]), True

    def _trusted_sso(self) -> bool:
        """SSO login, the organization trusts the IdP's MFA, and not staff (staff always verify)."""
        user = self.login.user
        if user is None or user.is_staff or user.is_superuser:
            return False
        return login_via_sso(self.login) and Organization.load().trust_idp_mfa
