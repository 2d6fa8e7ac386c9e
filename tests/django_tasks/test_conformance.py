"""Django's backend-agnostic Tasks tests (its `tests/tasks/`), run on JumpQueueBackend.

Adapted, not copied: the same checks, on this backend, with pytest. Covered:
task validation (module-level functions, `takes_context`, priorities, naive
`run_after`, queues, on `using()` and again on `enqueue`), enqueue and
aenqueue of plain and coroutine tasks, arguments and return values normalised
to JSON (and refused when they cannot be), `get_result`/`aget_result`,
`refresh`/`arefresh`, `TaskResultDoesNotExist`, `TaskResultMismatch`, errors
(class path and traceback, nested exceptions, `SystemExit`), the `django.tasks`
log lines, `TaskContext`, and the `supports_*` flags.

What does not apply, and why:

- A result that is SUCCESSFUL (or FAILED) as `enqueue()` returns
  (`ImmediateBackend`): this backend runs tasks after the response, or in its
  pool, so `enqueue()` returns a READY result; the tests wait for the call and
  read the outcome with `get_result()`.
- `KeyboardInterrupt` propagating out of `enqueue()` (`ImmediateBackend`): a
  task does not run in its caller, so there is nothing to interrupt; a task
  that raises it FAILS, with the error named (tested below).
- `NotImplementedError` from `get_result()`/`refresh()` and "Backend does not
  support run_after" (`ImmediateBackend`): this backend supports both.
- `DummyBackend.results` and `clear()`: that backend's own API.
- The Task API tests that involve no backend (`Task.call`/`acall`, `name`,
  `module_path`, unknown or missing backends, `TaskError.exception_class` of a
  forged path): they test Django, whichever backend is configured.
- `enqueue_on_commit` of the django-tasks backport: Django 6 dropped it; this
  backend's `ENQUEUE_ON_COMMIT` option is tested in test_backend.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from types import ModuleType
from typing import Any

import pytest

import jumpqueue

from .conftest import assert_in_order, settled, tasks_setting

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6 (Python 3.12+)")

from django.tasks import (
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
)
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from django.tasks.exceptions import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.test import override_settings
from django.utils import timezone

from jumpqueue.contrib.django_tasks import JumpQueueBackend


def test_conformance_backend_is_jumpqueues_with_its_options() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, JumpQueueBackend)
    assert default_task_backend.alias == "default"
    assert backend.options == {}
    assert backend.queues == {"default", "other"}
    assert backend.supports_defer is backend.supports_priority is backend.supports_async_task
    assert backend.supports_async_task is True
    assert backend.supports_get_result is False  # no journal: results of this process only


@pytest.mark.parametrize("name", ["noop", "anoop"])
def test_conformance_enqueue_returns_a_ready_result_then_it_succeeds(
    tasks: ModuleType, name: str
) -> None:
    declared = getattr(tasks, name)
    result = declared.enqueue(1, two=3)
    assert result.status == TaskResultStatus.READY
    assert not result.is_finished
    assert result.task == declared
    assert (result.args, result.kwargs) == ([1], {"two": 3})
    assert result.enqueued_at is not None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    done = settled(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.is_finished
    assert done.return_value is None
    assert_in_order(done)
    assert done.last_attempted_at == done.started_at
    assert done.attempts == 1
    assert done.errors == []
    assert (done.task, done.args, done.kwargs) == (declared, [1], {"two": 3})


def test_conformance_aenqueue_and_aget_result_on_an_event_loop(tasks: ModuleType) -> None:
    async def main() -> tuple[Any, ...]:
        results = [await tasks.meaning.aenqueue(), await tasks.ameaning.aenqueue()]
        return tuple([await asyncio.to_thread(settled, r) for r in results] + results)

    done, adone, result, aresult = asyncio.run(main())
    assert (done.return_value, adone.return_value) == (42, 42)
    assert (result.status, aresult.status) == (TaskResultStatus.READY, TaskResultStatus.READY)

    async def read() -> tuple[Any, Any]:
        return await tasks.meaning.aget_result(result.id), await tasks.ameaning.aget_result(
            aresult.id
        )

    again, aagain = asyncio.run(read())
    assert dataclasses.asdict(again) == dataclasses.asdict(done)
    assert dataclasses.asdict(aagain) == dataclasses.asdict(adone)


def test_conformance_arguments_that_are_not_json_are_refused_at_enqueue(tasks: ModuleType) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.noop.enqueue(datetime.datetime.now(tz=datetime.timezone.utc))
    with pytest.raises(TypeError, match="Unsupported type"):
        asyncio.run(tasks.noop.aenqueue(object()))
    assert jumpqueue.stats().submitted == 0


def test_conformance_return_values_are_normalised_to_json_or_the_task_fails(
    tasks: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    echoed = settled(tasks.echo.enqueue(1, (2, 3), key=b"bytes"))
    assert echoed.status == TaskResultStatus.SUCCESSFUL
    assert echoed.return_value == {"args": [1, [2, 3]], "kwargs": {"key": "bytes"}, "bytes": "text"}
    assert (echoed.args, echoed.kwargs) == ([1, [2, 3]], {"key": "bytes"})
    with caplog.at_level(logging.ERROR, "django.tasks"):
        refused = settled(tasks.not_json.enqueue())
    assert refused.status == TaskResultStatus.FAILED
    assert refused.errors[0].exception_class is TypeError
    assert "Unsupported type" in refused.errors[0].traceback
    assert refused.errors[0].exception_class_path == "builtins.TypeError"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("fail_value_error", ValueError),
        ("fail_system_exit", SystemExit),
        ("fail_keyboard_interrupt", KeyboardInterrupt),
    ],
    ids=["ValueError", "SystemExit", "KeyboardInterrupt"],
)
def test_conformance_exceptions_fail_the_task_with_class_and_traceback(
    tasks: ModuleType, name: str, kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    message = f"the task failed with {kind.__name__}"
    with caplog.at_level(logging.ERROR, "django.tasks"):
        result = settled(getattr(tasks, name).enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.is_finished
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert_in_order(result)
    assert [error.exception_class for error in result.errors] == [kind]
    assert result.errors[0].traceback.endswith(f"{kind.__name__}: {message}\n")
    logged = [r for r in caplog.records if r.name == "django.tasks" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert result.id in logged[0].getMessage()
    assert "state=FAILED" in logged[0].getMessage()


def test_conformance_a_nested_exception_is_shown_in_the_traceback(
    tasks: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, "django.tasks"):
        result = settled(tasks.fail_nested.enqueue())
    assert result.errors[0].exception_class is ValueError
    assert "ValueError(ValueError('nested'))" in result.errors[0].traceback or (
        "ValueError: nested" in result.errors[0].traceback
    )


def test_conformance_log_lines_are_those_of_djangos_own_backends(
    tasks: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, "django.tasks"):
        result = settled(tasks.noop.enqueue())
    lines = [r.getMessage() for r in caplog.records if r.name == "django.tasks"]
    assert len(lines) == 3, lines
    assert all(result.id in line for line in lines)
    assert "enqueued" in lines[0]
    assert "state=RUNNING" in lines[1]
    assert "state=SUCCESSFUL" in lines[2]
    assert not any("NoneType" in line for line in lines)


def test_conformance_get_result_missing_and_mismatched(tasks: ModuleType) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.noop.get_result("123")
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(tasks.noop.aget_result("123"))
    other = settled(tasks.anoop.enqueue())
    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        tasks.noop.get_result(other.id)
    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        asyncio.run(tasks.noop.aget_result(other.id))
    assert tasks.anoop.get_result(other.id).status == TaskResultStatus.SUCCESSFUL


def test_conformance_refresh_and_arefresh_read_the_outcome(tasks: ModuleType) -> None:
    result = tasks.meaning.enqueue()
    settled(result)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    before = dataclasses.asdict(result)
    asyncio.run(result.arefresh())
    assert dataclasses.asdict(result) == before


def test_conformance_takes_context_gets_its_result_and_attempt(tasks: ModuleType) -> None:
    result = settled(tasks.own_id.enqueue())
    assert result.return_value == result.id
    with override_settings(TASKS=tasks_setting(RETRIES=2, RETRY_BACKOFF=0.0)):
        retried = settled(tasks.attempt_of.enqueue(fail_until=2))
    assert retried.status == TaskResultStatus.SUCCESSFUL
    assert retried.return_value == 2
    assert retried.attempts == 2
    assert len(retried.worker_ids) == 2
    assert [error.exception_class for error in retried.errors] == [RuntimeError]


def test_conformance_validation_of_functions_and_context(tasks: ModuleType) -> None:
    def local() -> None:
        pass

    for invalid in (any, local):
        with pytest.raises(InvalidTask, match="must be defined at a module level"):
            task()(invalid)
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(tasks.meaning.func)


def test_conformance_priorities_run_after_and_queues_are_validated(tasks: ModuleType) -> None:
    for priority in (TASK_MIN_PRIORITY - 1, TASK_MAX_PRIORITY + 1, 3.1):
        with pytest.raises(InvalidTask, match="priority must be a whole number"):
            tasks.noop.using(priority=priority)
    for priority in (TASK_MIN_PRIORITY, 0, TASK_MAX_PRIORITY):
        assert tasks.noop.using(priority=priority).priority == priority
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        tasks.noop.using(run_after=datetime.datetime.now())
    now = timezone.now()
    assert tasks.noop.using(run_after=now).using(priority=10).run_after == now
    with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid for backend"):
        tasks.noop.using(queue_name="nowhere")
    assert tasks.noop.using(queue_name="other").queue_name == "other"
    other = tasks.noop.using(queue_name="other")
    with override_settings(TASKS={"default": {**tasks_setting()["default"], "QUEUES": ["x"]}}):
        with pytest.raises(InvalidTask, match="Queue 'other' is not valid for backend"):
            other.enqueue()
        with pytest.raises(InvalidTask, match="Queue 'other' is not valid for backend"):
            asyncio.run(other.aenqueue())
    with override_settings(TASKS={"default": {**tasks_setting()["default"], "QUEUES": []}}):
        assert tasks.noop.using(queue_name="anything").queue_name == "anything"


def test_conformance_a_result_carries_the_task_as_enqueued_with_using(tasks: ModuleType) -> None:
    run_after = timezone.now() - datetime.timedelta(seconds=1)
    declared = tasks.meaning.using(priority=7, queue_name="other", run_after=run_after)
    result = settled(declared.enqueue())
    assert result.task == declared
    assert result.task.run_after == run_after
    assert result.return_value == 42
