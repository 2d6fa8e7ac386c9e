"""The Celery app that docs/migration.md shows for a Django project."""

import os

from celery import Celery

import jumpqueue.backends.celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.backends.startup.django_settings")

app = Celery("startup")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # each installed app's tasks.py, with its @jumpqueue.task functions
jumpqueue.backends.celery.register(app)
