"""Settings of a Django project whose contact form mails the team after the response."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-this-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "mailer_urls"
MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware"]  # first
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Django's own SMTP mail backend, to the mail server on EMAIL_HOST:EMAIL_PORT.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ.get("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "1025"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = "website@example.com"

# jumpqueue's options, as JUMPQUEUE_* variables name them, without the prefix.
JUMPQUEUE = {"MAX_WORKERS": 4, "SHUTDOWN_TIMEOUT": 20}
