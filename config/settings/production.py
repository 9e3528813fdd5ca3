"""Production: PostgreSQL, Redis, real SMTP, TLS everywhere. Refuses to start half-configured."""

from django.core.exceptions import ImproperlyConfigured

from config import env
from config.settings.base import *  # noqa: F403

DEBUG = False

if len(env.SECRET_KEY) < 50 or env.SECRET_KEY.startswith(("django-insecure", "local-demo")):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters in production."
    )
SECRET_KEY = env.SECRET_KEY

if not env.DATABASE_URL.startswith("postgres"):
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL in production.")
if not env.REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL must be set in production (cache and rate limits).")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.SECURE_SSL_REDIRECT
SECURE_HSTS_SECONDS = env.SECURE_HSTS_SECONDS
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken"
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https"
CELERY_BROKER_URL = env.CELERY_BROKER_URL or env.REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
