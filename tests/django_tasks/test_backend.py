"""What JumpQueueBackend adds to the Tasks API: requests, transactions, queues' OPTIONS, checks.

In process, with the Django middleware around small views (WSGI and ASGI);
test_real_server.py runs a whole project under gunicorn.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

import jumpqueue
from jumpqueue import Status

from .conftest import WAIT, settled, tasks_setting

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6 (Python 3.12+)")

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.tasks import TaskResult, TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.test import RequestFactory, override_settings
from django.utils import timezone

from jumpqueue.contrib.django import JumpQueueMiddleware

if TYPE_CHECKING:
    Result = TaskResult[..., Any]


def serve(view: Callable[[HttpRequest], HttpResponseBase]) -> HttpResponseBase:
    """One request through the middleware; the response closed as a WSGI server closes it."""
    response: HttpResponseBase = JumpQueueMiddleware(view)(RequestFactory().get("/"))
    response.close()
    return response


def call_of(result: Result) -> jumpqueue.Deferred[Any]:
    """The jumpqueue call behind a result (no public handle by id: the ledger's)."""
    deferred = jumpqueue.get_runtime()._ledger.known(result.id)
    assert deferred is not None
    return deferred


@pytest.fixture
def opened_gate(tasks: ModuleType) -> Iterator[None]:
    """The gate of `wait_gate` closed, and open again after the test, whatever happened."""
    tasks.gate.clear()
    tasks.started.clear()
    tasks.recorded.clear()
    yield
    tasks.gate.set()


def test_backend_a_task_enqueued_in_a_request_runs_after_its_response(tasks: ModuleType) -> None:
    enqueued: list[Result] = []
    held: list[Status] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        enqueued.append(tasks.meaning.enqueue())
        held.append(call_of(enqueued[0]).status)
        return HttpResponse("ok")

    serve(view)
    assert held == [Status.HELD]
    done = settled(enqueued[0])
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 42


def test_backend_a_failed_request_skips_its_tasks_unless_their_queue_says_always(
    tasks: ModuleType,
) -> None:
    enqueued: list[Result] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        enqueued.append(tasks.meaning.enqueue())
        enqueued.append(tasks.meaning.using(queue_name="other").enqueue())
        return HttpResponse("failed", status=500)

    with override_settings(TASKS=tasks_setting(QUEUES={"other": {"ALWAYS": True}})):
        serve(view)
        skipped, always = (settled(result) for result in enqueued)
    assert skipped.status == TaskResultStatus.FAILED
    assert skipped.errors[-1].exception_class is jumpqueue.TaskNotRunError
    assert "skipped: the request that enqueued it failed" in skipped.errors[-1].traceback
    assert skipped.started_at is None
    assert always.status == TaskResultStatus.SUCCESSFUL


def test_backend_under_asgi_a_coroutine_task_runs_on_the_applications_loop(
    tasks: ModuleType, opened_gate: None
) -> None:
    enqueued: list[Result] = []

    async def view(request: HttpRequest) -> HttpResponseBase:
        enqueued.append(await tasks.arecord.aenqueue("async"))
        return HttpResponse("ok")

    async def main() -> tuple[int, Result]:
        middleware = JumpQueueMiddleware(view)
        response = await middleware(RequestFactory().get("/"))
        assert call_of(enqueued[0]).status is Status.HELD
        await asyncio.to_thread(response.close)  # Django's ASGI handler closes it in a thread
        return id(asyncio.get_running_loop()), await asyncio.to_thread(settled, enqueued[0])

    loop_id, done = asyncio.run(main())
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == loop_id


def test_backend_enqueue_on_commit_waits_for_the_transaction(tasks: ModuleType) -> None:
    with override_settings(TASKS=tasks_setting(ENQUEUE_ON_COMMIT=True)):
        with transaction.atomic():
            committed = tasks.meaning.enqueue()
            with transaction.atomic():
                rolled_back = tasks.meaning.enqueue()
                transaction.set_rollback(True)
            assert call_of(committed).status is Status.HELD
        outside = tasks.meaning.enqueue()  # no transaction: at once
        from_a_coroutine = asyncio.run(tasks.meaning.aenqueue())  # through sync_to_async
        failed: list[Result] = []
        with pytest.raises(RuntimeError, match="rolled back"):
            enqueue_then_fail(tasks, failed)
        done = [
            settled(result)
            for result in (committed, rolled_back, outside, *failed, from_a_coroutine)
        ]
    assert [result.status for result in done] == [
        TaskResultStatus.SUCCESSFUL,
        TaskResultStatus.FAILED,
        TaskResultStatus.SUCCESSFUL,
        TaskResultStatus.FAILED,
        TaskResultStatus.SUCCESSFUL,
    ]
    assert "transaction rolled back" in done[1].errors[-1].traceback


def enqueue_then_fail(tasks: ModuleType, enqueued: list[Result]) -> None:
    """Enqueue in a transaction that an exception rolls back."""
    with transaction.atomic():
        enqueued.append(tasks.meaning.enqueue())
        raise RuntimeError("rolled back")


def test_backend_enqueue_on_commit_in_a_request_waits_for_both(tasks: ModuleType) -> None:
    enqueued: list[Result] = []
    after_commit: list[Status] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        with transaction.atomic(using="default"):
            enqueued.append(tasks.meaning.enqueue())
        after_commit.append(call_of(enqueued[0]).status)
        return HttpResponse("ok")

    with override_settings(TASKS=tasks_setting(ENQUEUE_ON_COMMIT="default")):
        serve(view)
        assert after_commit == [Status.HELD]  # the request's, now
        assert settled(enqueued[0]).status == TaskResultStatus.SUCCESSFUL


def test_backend_signals_carry_the_running_and_finished_result(tasks: ModuleType) -> None:
    seen: list[tuple[str, type, str, int]] = []

    def receiver(sender: type, task_result: Result, **kwargs: Any) -> None:
        seen.append((task_result.id, sender, str(task_result.status), task_result.attempts))

    task_started.connect(receiver)
    task_finished.connect(receiver)
    try:
        result = settled(tasks.meaning.enqueue())
    finally:
        task_started.disconnect(receiver)
        task_finished.disconnect(receiver)
    backend = type(task_backends["default"])
    assert seen == [
        (result.id, backend, "RUNNING", 1),
        (result.id, backend, "SUCCESSFUL", 1),
    ]


def test_backend_priorities_order_the_tasks_waiting_for_a_worker(
    tasks: ModuleType, opened_gate: None, use_runtime: Callable[..., jumpqueue.Runtime]
) -> None:
    use_runtime(max_workers=1)
    blocker = tasks.wait_gate.enqueue()
    assert tasks.started.wait(WAIT)
    waiting = [
        tasks.record.using(priority=priority).enqueue(tag)
        for tag, priority in [("low", -100), ("high", 100), ("default", 0), ("higher", 100)]
    ]
    tasks.gate.set()
    assert all(settled(result).is_finished for result in [blocker, *waiting])
    assert tasks.recorded == ["high", "higher", "default", "low"]


def test_backend_run_after_keeps_a_task_ready_until_its_time(tasks: ModuleType) -> None:
    run_after = timezone.now() + datetime.timedelta(seconds=0.5)
    result = tasks.meaning.using(run_after=run_after).enqueue()
    assert call_of(result).status is Status.SCHEDULED
    assert task_backends["default"].get_result(result.id).status == TaskResultStatus.READY
    done = settled(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.started_at is not None
    assert done.started_at >= run_after
    with override_settings(USE_TZ=False):  # naive times are then Django's TIME_ZONE
        naive = settled(tasks.meaning.using(run_after=datetime.datetime.now()).enqueue())
    assert naive.status == TaskResultStatus.SUCCESSFUL
    assert naive.started_at is not None
    assert timezone.is_naive(naive.started_at)


def test_backend_a_queue_timeout_fails_the_task_naming_it(
    tasks: ModuleType, opened_gate: None
) -> None:
    with override_settings(TASKS=tasks_setting(QUEUES={"other": {"TIMEOUT": 0.1}})):
        result = settled(tasks.wait_gate.using(queue_name="other").enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is jumpqueue.TaskTimeoutError
    assert [e.exception_class_path.rpartition(".")[2] for e in result.errors].count(
        "TaskTimeoutError"
    ) == 1


def test_backend_without_kept_results_there_is_nothing_to_get(tasks: ModuleType) -> None:
    with override_settings(TASKS=tasks_setting(KEEP_RESULTS=False)):
        backend = task_backends["default"]
        assert backend.supports_get_result is False
        result = tasks.meaning.enqueue()
        jumpqueue.get_runtime().shutdown(WAIT)  # it ran: nothing waits any more
        assert jumpqueue.stats().succeeded == 1
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result.id)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"NOPE": 1}, "unknown key 'NOPE'"),
        ({"EXECUTOR": "async"}, "EXECUTOR must be one of thread, process"),
        ({"TIMEOUT": -1}, "timeout"),
        ({"QUEUES": {"elsewhere": {}}}, "queue 'elsewhere' is not in the backend's QUEUES"),
        ({"QUEUES": {"other": {"ENQUEUE_ON_COMMIT": True}}}, "unknown key 'ENQUEUE_ON_COMMIT'"),
        ({"ENQUEUE_ON_COMMIT": 1}, "ENQUEUE_ON_COMMIT must be a bool or a database alias"),
        ({"KEEP_RESULTS": "yes"}, "KEEP_RESULTS must be a bool"),
    ],
)
def test_backend_bad_options_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    with (
        override_settings(TASKS=tasks_setting(**options)),
        pytest.raises(InvalidTaskBackend, match=message),
    ):
        task_backends["default"]


# A child process that starts up and sets Django up, under coverage, on a busy machine.
@pytest.mark.timeout(90)
def test_backend_a_process_queue_runs_tasks_in_a_child_that_sets_django_up(
    tasks: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.web.apps.django_site")
    process = {"EXECUTOR": "process", "TIMEOUT": 60}
    with override_settings(TASKS=tasks_setting(QUEUES={"other": process})):
        result = settled(tasks.echo.using(queue_name="other").enqueue(1), wait=60)
        coroutine = settled(tasks.ameaning.using(queue_name="other").enqueue())
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value["args"] == [1]
    assert result.worker_ids[0].rpartition(":")[2] != str(os.getpid())
    assert coroutine.worker_ids[0].rpartition(":")[2] == str(os.getpid())  # the async executor


def test_backend_checks_middleware_results_and_workers(
    tasks: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    use_runtime: Callable[..., jumpqueue.Runtime],
    tmp_path: Path,
) -> None:
    def ids() -> list[str]:
        return sorted(message.id or "" for message in task_backends["default"].check())

    assert ids() == ["jumpqueue.W002"]
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with override_settings(MIDDLEWARE=[]):
        assert ids() == ["jumpqueue.W001", "jumpqueue.W002", "jumpqueue.W003"]
    with override_settings(TASKS=tasks_setting(KEEP_RESULTS=False)):
        assert ids() == ["jumpqueue.W003"]
    use_runtime(journal=str(tmp_path / "journal.db"))
    with override_settings(TASKS=tasks_setting()):
        assert ids() == []
        assert task_backends["default"].supports_get_result is True
        # Outside a request, with a journal: its commit in a thread, off the loop.
        done = settled(asyncio.run(tasks.ameaning.aenqueue()))
        assert done.return_value == 42


def test_backend_a_failing_task_enqueued_receiver_fails_the_enqueue_and_skips_the_task(
    tasks: ModuleType,
) -> None:
    def refuse(**kwargs: Any) -> None:
        raise RuntimeError("refused by a receiver")

    task_enqueued.connect(refuse)
    try:
        with pytest.raises(RuntimeError, match="refused by a receiver"):
            tasks.meaning.enqueue()
        with pytest.raises(RuntimeError, match="refused by a receiver"):
            asyncio.run(tasks.ameaning.aenqueue())
    finally:
        task_enqueued.disconnect(refuse)
    stats = jumpqueue.stats()
    assert (stats.submitted, stats.skipped, stats.started) == (2, 2, 0)


def test_backend_server_workers_are_read_from_the_command_line_and_environment() -> None:
    from jumpqueue.contrib.django_tasks._checks import server_workers

    assert server_workers({}, ["gunicorn", "app:wsgi"]) == 1
    assert server_workers({"WEB_CONCURRENCY": "3"}, ["uvicorn"]) == 3
    assert server_workers({"WEB_CONCURRENCY": "3"}, ["gunicorn", "-w", "5"]) == 5
    assert server_workers({}, ["uvicorn", "--workers=4", "app:asgi"]) == 4
    assert server_workers({}, ["gunicorn", "--workers"]) == 1
