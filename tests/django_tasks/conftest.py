"""The Django project the backend's tests share, with `TASKS` on jumpqueue, and waiting for a task.

Django 6 (the first with `django.tasks`) needs Python 3.12: on older Pythons, or
an older Django, every test here is skipped by its module's `importorskip`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

import jumpqueue
from tests.conftest import django_test_project

if TYPE_CHECKING:
    from django.tasks import TaskResult

WAIT = 10.0
BACKEND = "jumpqueue.contrib.django_tasks.JumpQueueBackend"


def tasks_setting(**options: Any) -> dict[str, Any]:
    """`TASKS` with jumpqueue's backend as "default", queues "default" and "other", and OPTIONS."""
    return {
        "default": {"BACKEND": BACKEND, "QUEUES": ["default", "other"], "OPTIONS": options},
        "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The test project of tests/web (settings once per process), with an SQLite database."""
    with django_test_project(tmp_path_factory):
        pass


@pytest.fixture(autouse=True)
def jumpqueue_tasks(django_project: None, default_runtime: jumpqueue.Runtime) -> Iterator[None]:
    """`TASKS` on jumpqueue's backend, made anew (after the test's fresh runtime) per test."""
    from django.test import override_settings

    with override_settings(TASKS=tasks_setting()):
        yield


@pytest.fixture
def tasks(django_project: None) -> ModuleType:
    """tests/django_tasks/tasks.py: declared once Django is set up, as `@task` needs `TASKS`."""
    return importlib.import_module("tests.django_tasks.tasks")


def settled(result: TaskResult[..., Any], wait: float = WAIT) -> TaskResult[..., Any]:
    """Wait until the task's call is final; its result as `get_result()` then reads it."""
    # No public handle by id: the ledger keeps the call while it runs and once kept.
    deferred = jumpqueue.get_runtime()._ledger.known(result.id)
    assert deferred is not None, f"no call {result.id} in the default runtime"
    assert deferred.wait(wait), f"{deferred!r} did not end within {wait} s"
    return result.task.get_backend().get_result(result.id)


def assert_in_order(result: TaskResult[..., Any]) -> None:
    """Enqueued, started (the last attempt too) and finished times are all there, in order."""
    enqueued, started, last, finished = (
        result.enqueued_at,
        result.started_at,
        result.last_attempted_at,
        result.finished_at,
    )
    times = [moment for moment in (enqueued, started, last, finished) if moment is not None]
    assert len(times) == 4, result
    assert times == sorted(times), result
