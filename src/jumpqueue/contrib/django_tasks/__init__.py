"""Django Tasks backend (Django 6+): `django.tasks` run by jumpqueue, with no worker process.

    TASKS = {
        "default": {
            "BACKEND": "jumpqueue.contrib.django_tasks.JumpQueueBackend",
            "QUEUES": ["default", "reports"],
            "OPTIONS": {"TIMEOUT": 30, "QUEUES": {"reports": {"EXECUTOR": "process"}}},
        }
    }
    MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware", ...]
    JUMPQUEUE = {"JOURNAL": "/var/lib/myapp/jumpqueue.db"}  # results from any worker

A task enqueued during a request runs after its response has been sent, and
not at all if the request failed (unless its queue says `ALWAYS`); outside a
request it starts at once. docs/django-tasks.md has the settings and the
mapping of jumpqueue's outcomes to `TaskResult` statuses.
"""

from __future__ import annotations

from ._backend import JumpQueueBackend

__all__ = ["JumpQueueBackend"]
