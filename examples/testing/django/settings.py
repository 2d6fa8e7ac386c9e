"""Settings of the smallest Django project that defers work with jumpqueue."""

from __future__ import annotations

SECRET_KEY = "only-for-this-example"  # noqa: S105 -- an example, never deployed
ROOT_URLCONF = "urls"
MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware"]  # first
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
