"""Task timing and results: priority, delay, run_after, keep_result; result(); the running call."""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jumpqueue
import jumpqueue.testing
from jumpqueue import ConfigurationError, Status, TaskOptions
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory
from .executors import process_tasks

UTC = datetime.timezone.utc


@jumpqueue.task(keep_result=True)
def kept(x: int) -> dict[str, Any]:
    return {"x": x, "pair": (x, x)}


@jumpqueue.task(keep_result=True)
def not_json() -> object:
    return {1, 2}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"priority": 101}, "priority must be between -100 and 100"),
        ({"priority": -101}, "priority must be between"),
        ({"priority": True}, "priority must be an int"),
        ({"priority": 1.5}, "priority must be an int"),
        ({"delay": -1}, "delay must be >= 0 seconds"),
        ({"delay": "5"}, "delay must be a number of seconds"),
        ({"run_after": datetime.datetime(2030, 1, 1)}, "run_after must be timezone-aware"),
        ({"run_after": "tomorrow"}, "run_after must be a datetime"),
        (
            {"delay": 1, "run_after": datetime.datetime(2030, 1, 1, tzinfo=UTC)},
            "delay and run_after exclude each other",
        ),
        ({"keep_result": 1}, "keep_result must be a bool"),
    ],
)
def test_timing_options_are_checked_naming_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        TaskOptions(**options)
    with pytest.raises(ConfigurationError, match=named):
        jumpqueue.task(**options)


def test_options_replace_a_delay_by_a_run_after_and_back() -> None:
    later = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    delayed = jumpqueue.task(kept.fn).options(delay=5, priority=3)
    moved = delayed.options(run_after=later)
    assert (moved.task_options.delay, moved.task_options.run_after) == (None, later)
    assert moved.options(delay=1).task_options.run_after is None
    assert moved.task_options.priority == 3


def test_result_in_memory_keeps_a_json_outcome_and_its_times() -> None:
    handle = kept.defer(3)
    assert handle.result(timeout=10) == {"x": 3, "pair": (3, 3)}
    outcome = jumpqueue.result(handle.id)
    assert outcome is not None
    assert outcome.status is Status.SUCCEEDED
    assert outcome.return_value == {"x": 3, "pair": [3, 3]}  # as JSON gives it back
    assert (outcome.name, outcome.attempts, outcome.args, outcome.errors) == (
        kept.name,
        1,
        (3,),
        (),
    )
    assert outcome.enqueued_at is not None
    assert outcome.enqueued_at.tzinfo is UTC
    assert outcome.enqueued_at <= outcome.started_at <= outcome.finished_at  # type: ignore[operator]
    assert outcome.last_attempted_at == outcome.started_at
    assert len(outcome.worker_ids) == 1
    assert outcome.worker_ids[0].endswith(f":{os.getpid()}")
    assert jumpqueue.result("no-such-call") is None


def test_a_kept_result_json_cannot_hold_fails_the_call_naming_its_type() -> None:
    handle = not_json.options(retries=2).defer()
    with pytest.raises(jumpqueue.ResultNotPortableError, match="holds a set") as caught:
        handle.result(timeout=10)
    assert caught.value.type_name == "set"
    outcome = jumpqueue.result(handle.id)
    assert outcome is not None
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 1  # no retry returns anything else
    assert [f.exception_class_path for f in outcome.errors] == [
        "jumpqueue._exceptions.ResultNotPortableError"
    ]
    assert "ResultNotPortableError" in outcome.errors[0].traceback


def _whoami() -> tuple[str | None, int | None]:
    return jumpqueue.current_call_id(), jumpqueue.current_attempt()


async def _whoami_async() -> tuple[str | None, int | None]:
    return jumpqueue.current_call_id(), jumpqueue.current_attempt()


_flaky_runs: list[tuple[str | None, int | None]] = []


def _flaky() -> None:
    _flaky_runs.append(_whoami())
    if len(_flaky_runs) == 1:
        raise RuntimeError("first attempt fails")


def test_current_call_id_and_attempt_inside_a_call_only(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    assert _whoami() == (None, None)
    for fn in (_whoami, _whoami_async):
        handle = runtime.defer(fn)
        assert handle.result(timeout=10) == (handle.id, 1)
    flaky = jumpqueue.task(_flaky).options(retries=1, retry_backoff=0.01)
    handle = runtime.defer(flaky)
    handle.result(timeout=10)
    assert _flaky_runs == [(handle.id, 1), (handle.id, 2)]
    outcome = runtime.result(handle.id)
    assert outcome is None  # its task does not keep its result: forgotten once final


def test_a_delayed_call_is_scheduled_then_runs_when_due(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    ran = threading.Event()
    handle = runtime.defer(jumpqueue.task(ran.set).options(delay=0.2))
    assert handle.status.value == "scheduled"
    stats = runtime.stats()
    assert (stats.scheduled, stats.pending, stats.in_flight) == (1, 0, 1)
    assert ran.wait(10)
    assert handle.wait(10)
    assert handle.started_at - handle.enqueued_at >= 0.2
    assert handle.status is Status.SUCCEEDED
    assert runtime.stats().scheduled == 0
    past = datetime.datetime.now(UTC) - datetime.timedelta(seconds=1)
    at_once = runtime.defer(jumpqueue.task(_whoami).options(run_after=past))
    assert at_once.result(timeout=10) == (at_once.id, 1)
    # Deferred during a request: held for its response, then scheduled, then run.
    scope = RequestScope()
    token = scope.activate()
    try:
        held = runtime.defer(jumpqueue.task(_whoami).options(delay=0.2))
    finally:
        scope.deactivate(token)
    assert held.status.value == "held"
    scope.release(succeeded=True)
    assert held.result(timeout=10) == (held.id, 1)
    assert held.started_at - held.enqueued_at >= 0.2  # not before its time


def test_a_scheduled_call_counts_in_the_bound_and_is_abandoned_at_shutdown(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_pending=1, on_overload="reject")
    later = runtime.defer(jumpqueue.task(_whoami).options(delay=3600))
    with pytest.raises(jumpqueue.OverloadedError):
        runtime.defer(_whoami)
    runtime.shutdown(timeout=5)  # not waited for: it is due in an hour
    assert later.status is Status.ABANDONED
    assert runtime.stats().abandoned == 1
    # Named as not yet due, not as a call the drain's 5 s were waited for.
    assert f"abandoned 1 scheduled call(s) not yet due: {later.name} [{later.id}]" in caplog.text
    assert "after 5.0 s" not in caplog.text


def test_testing_immediate_runs_a_delayed_call_at_once() -> None:
    with jumpqueue.testing.immediate():
        handle = jumpqueue.task(_whoami).options(delay=3600).defer()
    assert handle.status is Status.SUCCEEDED


#: Priorities deferred while the pool's one worker is busy, and the order they must start in.
PRIORITIES = [0, 5, 1, 0, -3, 5]
STARTED_IN = [1, 5, 2, 0, 3, 4]  # indexes into PRIORITIES


def _note(order: list[int], index: int) -> None:
    order.append(index)


async def _note_async(order: list[int], index: int) -> None:
    order.append(index)


async def _wait_async(started: threading.Event, gate: threading.Event) -> None:
    started.set()
    await asyncio.to_thread(gate.wait, 10)


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_priorities_order_the_calls_waiting_for_a_worker(
    make_runtime: RuntimeFactory, kind: str
) -> None:
    runtime = make_runtime(max_workers=1, max_async=1)
    started, gate = threading.Event(), threading.Event()
    order: list[int] = []
    blocker = _wait_async if kind == "async" else (lambda s, g: (s.set(), g.wait(10)))
    runtime.defer(blocker, started, gate)
    assert started.wait(10)
    note: jumpqueue.Task[[list[int], int], Any] = jumpqueue.task(
        _note_async if kind == "async" else _note
    )
    handles = [runtime.defer(note.options(priority=p), order, i) for i, p in enumerate(PRIORITIES)]
    gate.set()
    assert all(handle.wait(10) for handle in handles)
    assert order == STARTED_IN


def test_priorities_order_the_calls_waiting_for_a_child_process(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = make_runtime(max_processes=1)
    pid_file, release = tmp_path / "pid", tmp_path / "release"
    runtime.defer(
        jumpqueue.task(executor="process")(process_tasks.hold), str(pid_file), str(release)
    )
    assert process_tasks.wait_for_file(pid_file, timeout=30)
    clock = jumpqueue.task(executor="process")(time.monotonic)
    handles = [runtime.defer(clock.options(priority=p)) for p in PRIORITIES]
    process_tasks.write_file(release, "go")
    times = [handle.result(timeout=30) for handle in handles]
    assert sorted(range(len(times)), key=times.__getitem__) == STARTED_IN
    # The child knows which call it runs.
    who = runtime.defer(jumpqueue.task(executor="process")(jumpqueue.current_call_id))
    assert who.result(timeout=30) == who.id
