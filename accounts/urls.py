"""/accounts/: our MFA and account pages, then allauth's (login, logout, reset, email, SSO).

allauth's email, password-change and password-set views are wrapped so they ask for
re-authentication first. Passkey ceremonies answer JSON to static/js/passkeys.js: under 2fa/
for the login stage, under mfa/passkeys/ once signed in. django-otp-webauthn's own URLs are not
mounted: its views would let a passkey replace the password, or skip our re-authentication.
"""

from allauth.account import views as allauth_views
from django.urls import include, path

from accounts import passkey_views, views
from accounts.decorators import recent_login_required

urlpatterns = [
    path("2fa/", views.otp_verify, name="accounts_otp_verify"),
    path("2fa/email/", views.otp_email_send, name="accounts_otp_email"),
    path("2fa/setup/", views.otp_enrol, name="accounts_otp_enrol"),
    path(
        "2fa/passkey/begin/",
        passkey_views.LoginPasskeyBeginView.as_view(),
        name="accounts_otp_passkey_begin",
    ),
    path(
        "2fa/passkey/complete/",
        passkey_views.LoginPasskeyCompleteView.as_view(),
        name="accounts_otp_passkey_complete",
    ),
    path(
        "2fa/setup/passkey/begin/",
        passkey_views.EnrolPasskeyBeginView.as_view(),
        name="accounts_otp_enrol_passkey_begin",
    ),
    path(
        "2fa/setup/passkey/complete/",
        passkey_views.EnrolPasskeyCompleteView.as_view(),
        name="accounts_otp_enrol_passkey_complete",
    ),
    path("security/", views.security, name="accounts_security"),
    path("mfa/setup/", views.mfa_setup, name="accounts_mfa_setup"),
    path("mfa/backup-codes/", views.backup_codes_new, name="accounts_backup_codes_new"),
    path(
        "mfa/backup-codes/regenerate/",
        views.backup_codes_regenerate,
        name="accounts_backup_codes_regenerate",
    ),
    path("mfa/remove/", views.mfa_remove, name="accounts_mfa_remove"),
    path("mfa/passkeys/add/", passkey_views.passkey_add, name="accounts_passkey_add"),
    path(
        "mfa/passkeys/register/begin/",
        passkey_views.PasskeyRegisterBeginView.as_view(),
        name="accounts_passkey_register_begin",
    ),
    path(
        "mfa/passkeys/register/complete/",
        passkey_views.PasskeyRegisterCompleteView.as_view(),
        name="accounts_passkey_register_complete",
    ),
    path(
        "mfa/passkeys/verify/begin/",
        passkey_views.PasskeyVerifyBeginView.as_view(),
        name="accounts_passkey_verify_begin",
    ),
    path(
        "mfa/passkeys/verify/complete/",
        passkey_views.PasskeyVerifyCompleteView.as_view(),
        name="accounts_passkey_verify_complete",
    ),
    path("mfa/passkeys/remove/", passkey_views.passkey_remove, name="accounts_passkey_remove"),
    path("confirm/", views.reauthenticate, name="accounts_reauthenticate"),
    path("profile/", views.profile, name="accounts_profile"),
    path("email/", recent_login_required(allauth_views.email), name="account_email"),
    path(
        "password/change/",
        recent_login_required(allauth_views.password_change),
        name="account_change_password",
    ),
    path(
        "password/set/",
        recent_login_required(allauth_views.password_set),
        name="account_set_password",
    ),
    path("", include("allauth.urls")),
]
