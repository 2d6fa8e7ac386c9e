"""An RQ worker for Django tasks handed off by jumpqueue, started as docs/django-tasks.md says."""

from __future__ import annotations

import os

import django
from rq import Worker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_tasks.rq_site")
django.setup()  # before a job imports a task's module

import jumpqueue.contrib.django_tasks  # noqa: E402, F401 -- registers the task that runs them


class DjangoWorker(Worker):
    """RQ's worker, started once Django is set up."""
