"""The demo and local development: embedded SQLite and broker, console email, no TLS."""

from config import env
from config.settings.base import *  # noqa: F403

DEBUG = env.env_bool("DEBUG", True)
# A fixed key is acceptable only here: local data is demo data. Production refuses to start without one.
SECRET_KEY = env.SECRET_KEY or "local-demo-key-not-for-production-5b1c6d0e9a7f4e2b8c3d"
EMAIL_BACKEND = env.EMAIL_BACKEND or "django.core.mail.backends.console.EmailBackend"
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
