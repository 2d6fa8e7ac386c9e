"""The RQ worker start-up that docs/migration.md shows for a Django project."""

import os

import django
from django.db import connections
from rq import Worker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.backends.startup.django_settings")
django.setup()  # before any job imports a task's module
connections.close_all()  # each job runs in a forked process: it opens its own


class DjangoWorker(Worker):
    """RQ's worker, started once Django is set up."""
