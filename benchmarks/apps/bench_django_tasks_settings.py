"""Settings of benchmarks/django_tasks.py: one SQLite file, three Tasks backends side by side."""

from __future__ import annotations

import os

SECRET_KEY = "jumpqueue benchmark only"
USE_TZ = True
INSTALLED_APPS = ["django_tasks_db"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["JQBENCH_DB"],
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20},
    }
}
TASKS = {
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    "jumpqueue": {"BACKEND": "jumpqueue.contrib.django_tasks.JumpQueueBackend"},
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}
