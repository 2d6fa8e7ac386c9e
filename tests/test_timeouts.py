from __future__ import annotations

import asyncio
import logging
import math
import threading
import time

import pytest

from jumpqueue import Status, TaskTimeoutError, task

from .conftest import RuntimeFactory


def test_timeout_thread_call_is_reported_and_its_slot_reclaimed(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1, max_stuck_threads=2)
    release = threading.Event()
    hung = runtime.defer(task(release.wait).options(timeout=0.05), 10)
    # With the only thread hung, this call runs only if a replacement took the slot.
    assert runtime.defer(int, "5").result(timeout=5) == 5
    with pytest.raises(TaskTimeoutError, match="timeout"):
        hung.result(timeout=5)
    assert hung.status is Status.TIMED_OUT
    stats = runtime.stats()
    assert stats.timed_out == 1
    assert stats.stuck_threads == 1
    release.set()


def test_timeout_stuck_thread_returning_late_is_discarded_and_uncounted(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_workers=1)
    release = threading.Event()
    returned = threading.Event()

    def hang() -> str:
        release.wait(10)
        returned.set()
        return "late"

    hung = runtime.defer(task(hang).options(timeout=0.05))
    hung.wait(5)
    caplog.set_level(logging.INFO, logger="jumpqueue")
    release.set()
    assert returned.wait(5)
    # The stuck thread reports its late return after `returned`: wait for that report.
    deadline = time.monotonic() + 5
    while not any("outcome discarded" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the late return was not reported"
        threading.Event().wait(0.01)
    runtime.shutdown(timeout=5)
    stats = runtime.stats()
    assert hung.status is Status.TIMED_OUT
    assert stats.succeeded == 0
    assert stats.submitted == stats.finished == 1


def test_timeout_stuck_thread_bound_shrinks_the_pool_loudly_then_heals(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_workers=1, max_stuck_threads=1)
    release = threading.Event()
    hang = task(release.wait).options(timeout=0.05)
    first = runtime.defer(hang, 10)
    first.wait(5)
    second = runtime.defer(hang, 10)
    second.wait(5)
    assert first.status is second.status is Status.TIMED_OUT
    assert any(
        r.levelname == "ERROR" and "max_stuck_threads" in r.getMessage() for r in caplog.records
    )
    waiting = runtime.defer(int, "1")
    assert not waiting.wait(0.05)  # no thread may start: the bound holds
    assert runtime.stats().workers == 0
    release.set()
    assert waiting.result(timeout=5) == 1  # a stuck thread returned: the pool heals
    assert runtime.stats().stuck_threads <= 1


def test_timeout_async_call_is_cancelled(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    cancelled = threading.Event()

    async def sleeper() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    deferred = runtime.defer(task(sleeper).options(timeout=0.05))
    with pytest.raises(TaskTimeoutError):
        deferred.result(timeout=5)
    assert cancelled.wait(5)
    assert runtime.stats().timed_out == 1


def test_timeout_async_call_ignoring_cancellation_frees_its_slot(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_async=1)
    release = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    async def quick() -> int:
        return 1

    hung = runtime.defer(task(stubborn).options(timeout=0.05))
    assert hung.exception(timeout=5) is not None
    assert runtime.defer(quick).result(timeout=5) == 1
    assert runtime.stats().stuck_threads == 1
    release.set()


def test_timeout_default_comes_from_config_and_inf_disables_it(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(task_timeout=0.05, max_stuck_threads=2)
    release = threading.Event()
    assert runtime.defer(release.wait, 10).exception(timeout=5) is not None
    unlimited = runtime.defer(task(release.wait).options(timeout=math.inf), 0.2)
    assert unlimited.result(timeout=5) is False
    release.set()


def test_timeout_of_a_queued_call_still_leaves_a_thread_for_the_next(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1, max_stuck_threads=2)
    first_gate, hang = threading.Event(), threading.Event()
    first = runtime.defer(first_gate.wait, 10)
    # Queued while the only thread is busy: the thread takes it straight after the first.
    hung = runtime.defer(task(hang.wait).options(timeout=0.05), 10)
    first_gate.set()
    assert first.result(timeout=5) is True
    assert isinstance(hung.exception(timeout=5), TaskTimeoutError)
    assert runtime.defer(int, "3").result(timeout=5) == 3
    hang.set()


def test_timeout_of_any_finite_length_leaves_the_timer_thread_serving(
    make_runtime: RuntimeFactory,
) -> None:
    # A wait of 1e300 s once overflowed the timer thread, and no later timeout fired.
    runtime = make_runtime(max_stuck_threads=2)
    release = threading.Event()
    very_long = runtime.defer(task(release.wait).options(timeout=1e300), 10)
    short = runtime.defer(task(release.wait).options(timeout=0.05), 10)
    assert isinstance(short.exception(timeout=5), TaskTimeoutError)
    release.set()
    assert very_long.result(timeout=5) is True
