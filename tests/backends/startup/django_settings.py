"""Settings of the tiny Django project (`DJANGO_SETTINGS_MODULE` of its workers)."""

import os

SECRET_KEY = "tests-only"  # noqa: S105 -- a test project's
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tests.backends.startup",  # its tasks.py, for Celery's autodiscovery
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
GREETING = "read from the Django settings"

# Celery's settings (the CELERY_ namespace), for the broker and queue the test sets.
CELERY_BROKER_URL = os.environ.get("JQ_TEST_BROKER", "memory://")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("JQ_TEST_QUEUE", "celery")
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The web process's: jumpqueue's middleware, and its settings.
MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware"]
JUMPQUEUE = {"MAX_WORKERS": 4}
