"""The Django tasks of benchmarks/django_tasks.py: nothing, and the wall clock at their start."""

from __future__ import annotations

import time

from django.tasks import task


@task(backend="jumpqueue")
def noop() -> None:
    """Nothing: only the enqueue is measured."""


@task(backend="jumpqueue")
def started_at() -> float:
    """When it started (`time.time()`: the clock every process on the host shares)."""
    return time.time()
