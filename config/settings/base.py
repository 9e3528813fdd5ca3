"""Settings shared by every environment. Values a deployer changes come from ``config.env``."""

from urllib.parse import urlsplit

import dj_database_url

from config import env

BASE_DIR = env.BASE_DIR
VAR_DIR = env.VAR_DIR

# ----------------------------------------------------------------------------- core
SECRET_KEY = env.SECRET_KEY
DEBUG = env.DEBUG
ALLOWED_HOSTS = env.ALLOWED_HOSTS
CSRF_TRUSTED_ORIGINS = env.CSRF_TRUSTED_ORIGINS
SITE_URL = env.SITE_URL
SITE_ID = 1

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ----------------------------------------------------------------------------- apps
INSTALLED_APPS = [
    "config.admin.BillingAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_otp.plugins.otp_email",
    "django_otp_webauthn",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.usersessions",
    "accounts",
    "billing",
    "portal",
]

MIDDLEWARE = [
    "billing.settings_cache.SettingsCacheMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Before ours: a session that times out is told so with a message on the login page.
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.SessionTimeoutMiddleware",
    "accounts.middleware.MFAPolicyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "allauth.usersessions.middleware.UserSessionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # Loaded by every template: the fast amount and date filters (money, day).
            "builtins": ["portal.templatetags.amounts"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "billing.context_processors.merchant",
                "portal.context_processors.portal",
            ],
        },
    },
]

# ----------------------------------------------------------------------------- data
DATABASES = {
    "default": dj_database_url.parse(
        env.DATABASE_URL,
        conn_max_age=env.DATABASE_CONN_MAX_AGE,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Portal and statement queries sit just above PostgreSQL's JIT threshold, where compiling
    # costs more (50-80 ms) than the query itself; plain execution is faster for them. Parallel
    # workers only add CPU when every core already serves a request: without them the statement
    # page served ~38% more requests/s at 16 connections on 2 cores (scripts/bench_portal.py).
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        "-c jit=off -c max_parallel_workers_per_gather=0"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo's embedded database: WAL lets the web server and the worker share the file.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

if env.REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.REDIS_URL,
            "KEY_PREFIX": "billing",
            # A Redis that hangs must not stall a request (or a write waiting to replace a
            # books token inside its transaction): fail after a second and read around it.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    # No Redis: a file cache still shares rate-limit counters between processes.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# ----------------------------------------------------------------------------- auth
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/portal/"

ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_EMAIL_NOTIFICATIONS = True
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False  # a reset never skips the second factor
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_PREVENT_ENUMERATION = True
# A reset asked for an unknown address sends nothing: no mail to strangers, same page either way.
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https"
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "confirm_email": "1/3m/key",
    "reauthenticate": "10/m/user",
}
# Sessions are recorded at sign-in; tracking every request would cost two writes a page.
USERSESSIONS_TRACK_ACTIVITY = False
# Re-authentication (password or code) is fresh for this many seconds before risky actions.
REAUTHENTICATION_WINDOW = 300

# Single sign-on (OpenID Connect) for existing, invited users only; accounts.adapter has the
# rules: matched on the IdP's subject, first linked by verified email, never creating users.
SOCIALACCOUNT_AUTO_SIGNUP = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_PROVIDERS = {}
if env.OIDC_SERVER_URL:
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": env.OIDC_PROVIDER_ID,
                "name": env.OIDC_NAME,
                "client_id": env.OIDC_CLIENT_ID,
                "secret": env.OIDC_CLIENT_SECRET,
                "settings": {"server_url": env.OIDC_SERVER_URL},
            }
        ],
    }

OTP_TOTP_ISSUER = "Billing portal"
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
OTP_EMAIL_THROTTLE_FACTOR = 1
OTP_EMAIL_TOKEN_VALIDITY = 600
OTP_EMAIL_COOLDOWN_DURATION = 60
OTP_EMAIL_SUBJECT = "Your sign-in code"
OTP_EMAIL_BODY_TEMPLATE_PATH = "emails/otp_code.txt"

# Passkeys (django-otp-webauthn): one more django-otp device, a second factor after the password
# and never instead of it. accounts.passkeys adds our rules; the package's own views and URLs
# are not mounted (accounts.passkey_views subclasses them for our login stage).
OTP_WEBAUTHN_RP_ID = env.PASSKEY_RP_ID
OTP_WEBAUTHN_RP_NAME = env.PASSKEY_RP_NAME
OTP_WEBAUTHN_RP_NAME_CALLABLE = "accounts.passkeys.relying_party_name"
OTP_WEBAUTHN_ALLOWED_ORIGINS = env.PASSKEY_ALLOWED_ORIGINS
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
OTP_WEBAUTHN_HELPER_CLASS = "accounts.passkeys.PasskeyHelper"
# accounts.passkey_views logs refusals with their reason; no tracebacks for a user's mistake.
OTP_WEBAUTHN_EXCEPTION_LOGGER_NAME = ""
# Browsers run WebAuthn only in a secure context. A site served over plain http from another
# host (a demo on a LAN address) has no passkeys, instead of failing the package's checks.
PASSKEYS_ENABLED = bool(env.PASSKEY_ALLOWED_ORIGINS) and all(
    parts.scheme == "https" or (parts.scheme == "http" and parts.hostname == "localhost")
    for parts in map(urlsplit, env.PASSKEY_ALLOWED_ORIGINS)
)
SILENCED_SYSTEM_CHECKS = [] if PASSKEYS_ENABLED else ["otp_webauthn.E030", "otp_webauthn.E031"]

# ----------------------------------------------------------------------------- i18n
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.TIME_ZONE
USE_I18N = True
USE_TZ = True

# ----------------------------------------------------------------------------- files
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = VAR_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# ----------------------------------------------------------------------------- email
EMAIL_BACKEND = env.EMAIL_BACKEND or "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env.EMAIL_HOST
EMAIL_PORT = env.EMAIL_PORT
EMAIL_HOST_USER = env.EMAIL_HOST_USER
EMAIL_HOST_PASSWORD = env.EMAIL_HOST_PASSWORD
EMAIL_USE_TLS = env.EMAIL_USE_TLS
EMAIL_USE_SSL = env.EMAIL_USE_SSL
DEFAULT_FROM_EMAIL = env.DEFAULT_FROM_EMAIL
SERVER_EMAIL = env.SERVER_EMAIL

# ----------------------------------------------------------------------------- security
# Sessions read from the cache (Redis in production) and are kept in the database too.
# cached_db that keeps serving while Redis is down (accounts/sessions.py).
SESSION_ENGINE = "accounts.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_IDLE_TIMEOUT = env.SESSION_IDLE_TIMEOUT
SESSION_ABSOLUTE_TIMEOUT = env.SESSION_ABSOLUTE_TIMEOUT
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

# ----------------------------------------------------------------------------- jobs
CELERY_BROKER_URL = env.CELERY_BROKER_URL or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if not env.CELERY_BROKER_URL:
    # The embedded broker: kombu's filesystem transport, one folder of message files.
    _broker_queue = VAR_DIR / "broker" / "queue"
    _broker_queue.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_queue),
        "data_folder_out": str(_broker_queue),
        "store_processed": False,
        "control_folder": str(VAR_DIR / "broker" / "control"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Restart a worker child once it grows past this (KiB): a guard against slow leaks.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = 150 * 1024
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# A web request that enqueues work must not hang when the broker is down: fail fast, and let
# the tick pick the work up from the database once the broker is back.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BEAT_SCHEDULE = {
    "billing-tick": {"task": "billing.tasks.tick", "schedule": 60.0},
}

# ----------------------------------------------------------------------------- billing
PAYMENT_GATEWAY = env.PAYMENT_GATEWAY
SANDBOX_GATEWAY_LATENCY_MS = env.SANDBOX_GATEWAY_LATENCY_MS
GATEWAY_CONCURRENCY = env.GATEWAY_CONCURRENCY
BILLING_BATCH_SIZE = env.BILLING_BATCH_SIZE
BOOKS_CACHE_SECONDS = env.BOOKS_CACHE_SECONDS
# Recompute every cache hit and fail when it differs (the test suite: a stale page fails).
BOOKS_CACHE_VERIFY = False

# ----------------------------------------------------------------------------- logging
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
