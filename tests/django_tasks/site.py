"""Settings of the Django project that test_real_server.py serves with gunicorn.

The journal comes from `JUMPQUEUE_JOURNAL`, as a deployment may set it.
"""

from __future__ import annotations

SECRET_KEY = "jumpqueue tests only"  # noqa: S105 -- a test project
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_tasks.views"
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware"]
DATABASES: dict[str, object] = {}
TASKS = {
    "default": {
        "BACKEND": "jumpqueue.contrib.django_tasks.JumpQueueBackend",
        "OPTIONS": {"TIMEOUT": 10},
    }
}
# Errors go to the server's log, which a failing test prints.
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
