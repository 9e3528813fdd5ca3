"""The test suite: PostgreSQL and Redis, as in production; fast hashing; in-memory email."""

import os

import dj_database_url

from config import env
from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES

SECRET_KEY = "test-only-key-8f3a1c5e7b9d2f4a6c8e0b1d3f5a7c9e"  # noqa: S105
DEBUG = False
DATABASES["default"] = dj_database_url.parse(
    env.DATABASE_URL
    if env.DATABASE_URL.startswith("postgres")
    else "postgres://postgres@127.0.0.1:5432/postgres"
)
# Parallel checkouts (or helpers) can keep their test databases apart with TEST_DB_NAME.
TEST_DB_NAME = os.environ.get("TEST_DB_NAME", "test_billing")
DATABASES["default"]["TEST"] = {"NAME": TEST_DB_NAME}

REDIS_URL = env.REDIS_URL or "redis://127.0.0.1:6379/15"
# Runs sharing one Redis keep their keys (and their cache.clear()) apart by TEST_DB_NAME.
CACHES = {
    "default": {
        "BACKEND": "tests.redis_cache.RunScopedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": TEST_DB_NAME,
    }
}
# Every cached portal page part is recomputed and compared: a missed invalidation fails the test.
BOOKS_CACHE_VERIFY = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_BROKER_URL = env.CELERY_BROKER_URL or REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_ALWAYS_EAGER = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http"
SECURE_SSL_REDIRECT = False
# Tests never collect static files; WhiteNoise would only warn about the missing folder.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]  # noqa: F405
