"""/accounts/: our MFA and account pages, then allauth's (login, logout, reset, email, SSO).

allauth's email, password-change and password-set views are wrapped so they ask for
re-authentication first.
"""

from allauth.account import views as allauth_views
from django.urls import include, path

from accounts import views
from accounts.decorators import recent_login_required

urlpatterns = [
    path("2fa/", views.otp_verify, name="accounts_otp_verify"),
    path("2fa/email/", views.otp_email_send, name="accounts_otp_email"),
    path("2fa/setup/", views.otp_enrol, name="accounts_otp_enrol"),
    path("security/", views.security, name="accounts_security"),
    path("mfa/setup/", views.mfa_setup, name="accounts_mfa_setup"),
    path("mfa/backup-codes/", views.backup_codes_new, name="accounts_backup_codes_new"),
    path(
        "mfa/backup-codes/regenerate/",
        views.backup_codes_regenerate,
        name="accounts_backup_codes_regenerate",
    ),
    path("mfa/remove/", views.mfa_remove, name="accounts_mfa_remove"),
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
