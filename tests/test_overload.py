from __future__ import annotations

import asyncio
import threading

import pytest

from jumpqueue import (
    Deferred,
    OverloadedError,
    RuntimeClosedError,
    Stats,
    Status,
    TaskOptions,
    TaskTimeoutError,
    task,
)
from jumpqueue._runtime.ledger import Ledger
from jumpqueue.executors import Attempt

from .conftest import RuntimeFactory, wait_until_waiting_for_room


def fill(runtime_defer: object, gate: threading.Event, count: int) -> None:
    for _ in range(count):
        runtime_defer(gate.wait, 10)  # type: ignore[operator]


def test_overload_reject_raises_with_retry_after_and_counts(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=2, on_overload="reject", overload_wait=3)
    gate = threading.Event()
    fill(runtime.defer, gate, 2)
    with pytest.raises(OverloadedError, match="max_pending=2") as caught:
        runtime.defer(print, "never")
    assert caught.value.retry_after == 3
    stats = runtime.stats()
    assert stats.shed == {"reject": 1}
    assert stats.submitted == 3
    gate.set()


def test_overload_drop_counts_and_warns_once_per_interval(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="drop")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    dropped = [runtime.defer(print, i) for i in range(5)]
    assert all(d.status is Status.SHED for d in dropped)
    assert runtime.stats().shed == {"drop": 5}
    warnings = [r for r in caplog.records if "backlog full" in r.getMessage()]
    assert len(warnings) == 1
    gate.set()


def test_overload_inline_runs_in_the_caller(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="inline")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    inlined = runtime.defer(threading.get_ident)
    assert inlined.status is Status.SUCCEEDED
    assert inlined.result() == threading.get_ident()
    stats = runtime.stats()
    assert stats.inlined == 1
    assert stats.succeeded == 1
    gate.set()


def test_overload_inline_failure_is_reported_not_raised(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="inline")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)

    def boom() -> None:
        raise ValueError("inline failure")

    failed = runtime.defer(boom)
    assert failed.status is Status.FAILED
    assert isinstance(failed.exception(), ValueError)
    gate.set()


def test_overload_inline_call_is_running_until_it_returns_then_timed_out_if_late(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="inline")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    seen: list[Stats] = []

    def slow() -> str:
        threading.Event().wait(0.3)  # well past its 0.05 s timeout, which cannot stop it
        seen.append(runtime.stats())
        return "late"

    inlined = runtime.defer(task(slow).options(timeout=0.05))
    # While the caller ran it, the handle did not claim it had timed out.
    assert (seen[0].timed_out, seen[0].running) == (0, 2)
    assert inlined.status is Status.TIMED_OUT
    assert isinstance(inlined.exception(), TaskTimeoutError)
    stats = runtime.stats()
    assert (stats.timed_out, stats.succeeded, stats.inlined) == (1, 0, 1)
    gate.set()
    assert runtime.defer(task(slow).options(timeout=5)).result(timeout=5) == "late"


def test_overload_inline_coroutine_inside_a_loop_goes_to_that_loop(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="inline")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)

    async def answer() -> int:
        return 42

    async def main() -> int:
        deferred = runtime.defer(answer)
        assert await asyncio.to_thread(deferred.wait, 5)
        return deferred.result()

    assert asyncio.run(main()) == 42
    assert runtime.stats().inlined == 1
    gate.set()


def test_overload_wait_blocks_until_room(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="wait", overload_wait=10)
    gate = threading.Event()
    first = runtime.defer(gate.wait, 10)
    admitted = threading.Event()
    results: list[Status] = []

    def waiter() -> None:
        results.append(runtime.defer(print, end="").status)
        admitted.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until_waiting_for_room(runtime)
    assert not admitted.is_set()  # still blocked: the backlog is full
    gate.set()
    assert admitted.wait(5)
    thread.join(5)
    assert first.result(timeout=5) is True
    assert runtime.stats().waited == 1
    assert results[0] in (Status.PENDING, Status.RUNNING, Status.SUCCEEDED)


def test_overload_wait_gives_up_after_its_bound_and_rejects(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="wait", overload_wait=0.05)
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    with pytest.raises(OverloadedError):
        runtime.defer(print)
    assert runtime.stats().shed == {"reject": 1}
    assert runtime.stats().waited == 0
    gate.set()


def test_overload_wait_on_an_event_loop_rejects_without_blocking(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="wait", overload_wait=30)
    gate = threading.Event()
    fill(runtime.defer, gate, 1)

    async def main() -> None:
        with pytest.raises(OverloadedError):
            runtime.defer(print)

    asyncio.run(main())
    gate.set()


def test_overload_waiter_is_woken_by_shutdown(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="wait", overload_wait=30)
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    errors: list[BaseException] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        try:
            runtime.defer(print)
        except RuntimeClosedError as error:
            errors.append(error)

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    wait_until_waiting_for_room(runtime)
    runtime.shutdown(timeout=0)
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1
    gate.set()


def test_overload_task_policy_overrides_the_runtime_default(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="reject")
    gate = threading.Event()
    fill(runtime.defer, gate, 1)
    best_effort = task(print).options(on_overload="drop")
    assert runtime.defer(best_effort, "x").status is Status.SHED
    gate.set()


def test_overload_backlog_stays_bounded_and_recovers(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=2, max_pending=10, on_overload="drop")
    gate = threading.Event()
    peak = 0
    handles = []
    for _ in range(200):
        handles.append(runtime.defer(gate.wait, 10))
        stats = runtime.stats()
        peak = max(peak, stats.in_flight)
    assert peak == 10
    gate.set()
    for handle in handles:
        handle.wait(5)
    # After the spike, the runtime serves normally again without a restart.
    assert runtime.defer(int, "7").result(timeout=5) == 7
    stats = runtime.stats()
    assert stats.in_flight == 0
    assert stats.submitted == stats.finished == 201
    assert stats.shed == {"drop": 190}


def test_overload_calls_waiting_too_long_to_start_shed_new_ones_until_they_start(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(
        max_workers=1, max_pending=100, max_queue_wait=0.01, on_overload="reject"
    )
    gate = threading.Event()
    running = runtime.defer(gate.wait, 10)
    waiting = runtime.defer(int, "1")  # behind it, waiting for the one worker
    threading.Event().wait(0.05)  # let it wait longer than max_queue_wait
    with pytest.raises(
        OverloadedError, match=r"calls would wait too long to start .*max_queue_wait"
    ):
        runtime.defer(int, "2")
    assert runtime.stats().shed == {"reject": 1}
    gate.set()
    assert running.wait(5)
    assert waiting.result(timeout=5) == 1
    assert runtime.defer(int, "3").result(timeout=5) == 3  # recovered by itself


def test_overload_a_retry_backoff_is_no_wait_to_start(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_queue_wait=0.01, on_overload="reject")
    failed_once = threading.Event()

    @task(retries=1, retry_backoff=3600)
    def flaky() -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise ConnectionError("later")

    retrying = runtime.defer(flaky)
    assert failed_once.wait(5)
    threading.Event().wait(0.05)  # longer than max_queue_wait, in its backoff
    assert runtime.defer(int, "4").result(timeout=5) == 4
    assert retrying.status is Status.PENDING
    runtime.shutdown(timeout=0)  # not the retry's hour, nor a drain's seconds: abandoned now
    assert (retrying.status, runtime.stats().abandoned) == (Status.ABANDONED, 1)


def test_overload_defaults_carry_a_burst_of_cheap_coroutines(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()  # defaults; "wait" cannot block a loop, so a full backlog rejects
    count = 2000

    async def burst() -> None:
        release, finished = asyncio.Event(), asyncio.Event()
        done = 0

        async def io_bound() -> None:
            nonlocal done
            await release.wait()
            done += 1
            if done == count:
                finished.set()

        for _ in range(count):
            runtime.defer(io_bound)
        release.set()
        await asyncio.wait_for(finished.wait(), 10)

    asyncio.run(burst())
    stats = runtime.stats()
    assert (stats.succeeded, stats.shed) == (count, {})


def test_overload_queue_wait_is_the_wait_a_new_call_can_expect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("jumpqueue._runtime.ledger.time.monotonic", lambda: clock[0])
    ledger = Ledger(max_pending=1000, max_queue_wait=10.0)
    calls: list[Deferred[None]] = [
        Deferred("f", print, (), {}, TaskOptions(), "thread", None) for _ in range(50)
    ]
    with ledger.lock:
        for call in calls:
            ledger.enter_locked(call, None)
    clock[0] += 2.0  # the oldest has waited 2 s ...
    for call in calls[:5]:  # ... while 5 calls started: 2.5 calls a second
        assert ledger.begin(Attempt(call, 1))
    with ledger.lock:
        assert ledger.expected_wait_locked() == pytest.approx(45 / 2.5)
        assert not ledger.has_room_locked()  # 18 s for a new call, past 10
    for call in calls[5:25]:
        assert ledger.begin(Attempt(call, 1))
    with ledger.lock:  # 25 left at the pace the oldest of them saw: room again
        assert ledger.expected_wait_locked() < 10
        assert ledger.has_room_locked()
