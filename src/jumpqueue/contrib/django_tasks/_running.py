"""How an enqueued Django task runs: the calls jumpqueue defers, with Django's signals and context.

Every Django task is deferred as a call of `run_task` (or `arun_task`, on the
async executor, for a coroutine task), both registered jumpqueue tasks, whose
arguments name the Django task by its import path: they are JSON, so the call
can wait in the journal, survive a restart, be taken up by another worker
process, or be handed to RQ or Celery. In this process the call bears the
Django task's own name (logs, `jumpqueue status`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import socket
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

import jumpqueue

# django-stubs declares the members as `...`: looked up by value, they are typed.
READY, RUNNING, SUCCESSFUL, FAILED = (
    TaskResultStatus(name) for name in ("READY", "RUNNING", "SUCCESSFUL", "FAILED")
)

#: What a call carries of its Django task, beside the arguments.
Spec = dict[str, Any]


def spec_of(task: Task[..., Any]) -> Spec:
    """The Django task as JSON: its path, and what `using()` may change (backend, queue, ...)."""
    return {
        "path": task.module_path,
        "backend": task.backend,
        "queue": task.queue_name,
        "priority": task.priority,
        "run_after": None if task.run_after is None else task.run_after.isoformat(),
    }


def task_of(spec: Mapping[str, Any]) -> Task[..., Any]:
    """The Django task a spec names, as it was enqueued (`using()` included).

    Raises:
        ImportError: the path leads nowhere.
        TypeError: the path does not lead to a Django task.
    """
    path = spec["path"]
    declared = import_string(path)
    if not isinstance(declared, Task):
        raise TypeError(f"{path!r} is not a Django task ({type(declared).__name__})")
    run_after = spec["run_after"]
    changes = {
        "backend": spec["backend"],
        "queue_name": spec["queue"],
        "priority": spec["priority"],
        "run_after": None if run_after is None else datetime.datetime.fromisoformat(run_after),
    }
    if all(getattr(declared, name) == value for name, value in changes.items()):
        return declared
    # Not `replace()`: it validates again, against this process's settings, a task
    # that was valid where it was enqueued (a child process may have other TASKS).
    task = object.__new__(type(declared))
    for field in dataclasses.fields(declared):
        object.__setattr__(task, field.name, changes.get(field.name, getattr(declared, field.name)))
    return task


@jumpqueue.task
def run_task(spec: Spec, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a Django task's function, between its `task_started` and `task_finished` signals."""
    with _attempt(spec, args, kwargs) as (task, result):
        value = normalize_json(task.func(*_arguments(task, result, args), **kwargs))
        _finish(result, SUCCESSFUL, value=value)
    return value


@jumpqueue.task
async def arun_task(spec: Spec, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """`run_task` for a coroutine task, on the async executor's event loop."""
    with _attempt(spec, args, kwargs) as (task, result):
        value = normalize_json(await task.func(*_arguments(task, result, args), **kwargs))
        _finish(result, SUCCESSFUL, value=value)
    return value


@contextlib.contextmanager
def _attempt(
    spec: Spec, args: list[Any], kwargs: dict[str, Any]
) -> Iterator[tuple[Task[..., Any], TaskResult[..., Any]]]:
    if not apps.ready:  # a child process of the "process" executor, not forked
        django.setup()
    task = task_of(spec)
    result = _running(task, spec, args, kwargs)
    sender = type(task.get_backend())
    task_started.send(sender=sender, task_result=result)
    try:
        yield task, result
    except BaseException as error:
        _finish(result, FAILED, error=error)
        # Sent in the handler, as Django's backends do: its log line takes exc_info.
        task_finished.send(sender=sender, task_result=result)
        raise
    task_finished.send(sender=sender, task_result=result)


def _arguments(task: Task[..., Any], result: TaskResult[..., Any], args: list[Any]) -> list[Any]:
    return [TaskContext(task_result=result), *args] if task.takes_context else args


def _running(
    task: Task[..., Any], spec: Spec, args: list[Any], kwargs: dict[str, Any]
) -> TaskResult[..., Any]:
    """The task's result as the attempt starts: what the signals and `TaskContext` see."""
    call_id = jumpqueue.current_call_id() or ""
    attempt = jumpqueue.current_attempt() or 1
    known = jumpqueue.result(call_id) if call_id else None
    now = timezone.now()
    worker_ids = list(known.worker_ids) if known is not None else []
    if len(worker_ids) != attempt:  # a child process, or a runtime that does not keep it
        worker_ids = [f"{socket.gethostname()}:{os.getpid()}"] * attempt
    return TaskResult(
        task=task,
        id=call_id,
        status=RUNNING,
        enqueued_at=local_time(known.enqueued_at) if known is not None else None,
        started_at=(local_time(known.started_at) if known is not None else None) or now,
        finished_at=None,
        last_attempted_at=now,
        args=args,
        kwargs=kwargs,
        backend=spec["backend"],
        errors=task_errors(known.errors if known is not None else ()),
        worker_ids=worker_ids,
    )


def _finish(
    result: TaskResult[..., Any],
    status: TaskResultStatus,
    *,
    value: Any = None,
    error: BaseException | None = None,
) -> None:
    # A TaskResult is frozen; Django's own backends update theirs the same way.
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    if error is not None:
        kind = type(error)
        result.errors.append(
            TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback="".join(traceback.format_exception(error)),
            )
        )


def task_errors(failures: Iterable[jumpqueue.CallFailure]) -> list[TaskError]:
    """How a call's attempts failed, as Django's `TaskError`s."""
    return [
        TaskError(exception_class_path=failure.exception_class_path, traceback=failure.traceback)
        for failure in failures
    ]


def local_time(moment: datetime.datetime | None) -> datetime.datetime | None:
    """An aware time as Django's `timezone.now()` gives times: naive (local) without USE_TZ."""
    if moment is None or timezone.is_naive(moment):
        return moment
    return moment if settings.USE_TZ else timezone.make_naive(moment)
