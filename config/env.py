"""The one place that reads the process environment.

Every setting a deployer can change is read here, with a default that is safe for a local
demo. Settings modules import these values; nothing else calls ``os.environ``.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = env_str("SECRET_KEY")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The embedded default is an SQLite file; production and the tests use PostgreSQL.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)
REDIS_URL = env_str("REDIS_URL")
# Without a broker URL Celery uses kombu's filesystem transport under var/: no server needed.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
TIME_ZONE = env_str("TIME_ZONE", "UTC")
SITE_URL = env_str("SITE_URL", "http://localhost:8000")

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "billing@localhost")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)

PAYMENT_GATEWAY = env_str("PAYMENT_GATEWAY", "sandbox")
# Simulated network latency of the sandbox gateway, in milliseconds (benchmarks use it).
SANDBOX_GATEWAY_LATENCY_MS = env_int("SANDBOX_GATEWAY_LATENCY_MS", 0)
# How many charges of one batch job (renewals, dunning retries) are in flight at the gateway at once.
GATEWAY_CONCURRENCY = env_int("GATEWAY_CONCURRENCY", 16)
# Due subscriptions (or dunning retries) per job task; one database transaction each.
BILLING_BATCH_SIZE = env_int("BILLING_BATCH_SIZE", 500)
# How long a portal page part computed from a customer's books (dashboard, invoice list,
# statement) stays cached at most; a change to those books replaces it at once. 0: no caching.
BOOKS_CACHE_SECONDS = env_int("BOOKS_CACHE_SECONDS", 300)

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SESSION_IDLE_TIMEOUT = env_int("SESSION_IDLE_TIMEOUT", 30 * 60)
SESSION_ABSOLUTE_TIMEOUT = env_int("SESSION_ABSOLUTE_TIMEOUT", 12 * 60 * 60)
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")

# Single sign-on through an OpenID Connect provider (optional; off while OIDC_SERVER_URL is empty).
# OIDC_SERVER_URL is the issuer URL (its /.well-known/openid-configuration is read). Register
# SITE_URL + /accounts/oidc/<OIDC_PROVIDER_ID>/login/callback/ as the redirect URI at the IdP.
OIDC_SERVER_URL = env_str("OIDC_SERVER_URL")
OIDC_PROVIDER_ID = env_str("OIDC_PROVIDER_ID", "sso")
OIDC_NAME = env_str("OIDC_NAME", "Single sign-on")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET")

# Passkeys (WebAuthn). A passkey is bound to the relying party ID, a domain: changing it later
# makes every registered passkey unusable (users then sign in with a code and add a new one).
# The browser offers passkeys only on https (or http://localhost), and only for an RP ID that is
# the page's host or a parent domain of it; never an IP address.
_SITE = urlsplit(SITE_URL)
PASSKEY_RP_ID = env_str("PASSKEY_RP_ID", _SITE.hostname or "localhost")
# The name authenticators show next to a passkey; empty: the organization's name (admin).
PASSKEY_RP_NAME = env_str("PASSKEY_RP_NAME")
# The origins (scheme://host[:port]) pages that run a ceremony are served from.
PASSKEY_ALLOWED_ORIGINS = env_list("PASSKEY_ALLOWED_ORIGINS", f"{_SITE.scheme}://{_SITE.netloc}")
