"""The Django project's tasks (Celery's autodiscovery finds them): they use settings and models."""

from __future__ import annotations

from django.apps import apps
from django.conf import settings

import jumpqueue

from ..backend_tasks import report


@jumpqueue.task
def greet(tag: str) -> None:
    """Report a setting and a model: both fail in a worker that did not set Django up."""
    report(tag, greeting=settings.GREETING, model=apps.get_model("auth", "User")._meta.label)
