from __future__ import annotations

import threading

import jumpqueue
from jumpqueue import Status, task
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory, wait_until_waiting_for_room


def test_scope_holds_calls_until_release(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        held = runtime.defer(int, "4")
        assert held.status is Status.HELD
        assert runtime.stats().held == 1
        assert len(scope) == 1
    finally:
        scope.deactivate(token)
    assert not held.wait(0.02)
    scope.release(succeeded=True)
    assert held.result(timeout=5) == 4
    assert runtime.stats().held == 0


def test_scope_failed_request_skips_its_calls_unless_always(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        skipped = runtime.defer(int, "1")
        kept = runtime.defer(task(int).options(always=True), "2")
    finally:
        scope.deactivate(token)
    scope.release(succeeded=False)
    assert skipped.status is Status.SKIPPED
    assert kept.result(timeout=5) == 2
    stats = runtime.stats()
    assert stats.skipped == 1
    assert stats.submitted == stats.finished == 2


def test_scope_release_is_idempotent_and_later_calls_run_at_once(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        scope.release(succeeded=True)
        scope.release(succeeded=False)
        assert scope.released
        after = runtime.defer(int, "9")
    finally:
        scope.deactivate(token)
    assert after.result(timeout=5) == 9


def test_scope_calls_deferred_by_a_task_are_not_held() -> None:
    inner: list[jumpqueue.Deferred[int]] = []
    done = threading.Event()

    def outer() -> None:
        inner.append(jumpqueue.defer(int, "5"))
        done.set()

    scope = RequestScope()
    token = scope.activate()
    try:
        jumpqueue.defer(outer)
    finally:
        scope.deactivate(token)
    scope.release(succeeded=True)
    assert done.wait(5)
    assert inner[0].result(timeout=5) == 5


def test_scope_hold_race_with_release_still_runs_the_call(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    scope.release(succeeded=True)
    held = runtime.defer(int, "1")  # no active scope: submitted at once
    assert held.result(timeout=5) == 1
    assert scope.hold(runtime._held_calls, held) is False


def test_scope_call_admitted_after_waiting_is_held_then_runs(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1, max_pending=1, on_overload="wait", overload_wait=10)
    gate = threading.Event()
    first = runtime.defer(gate.wait, 10)
    results: list[jumpqueue.Deferred[int]] = []
    waiting = threading.Event()

    def request() -> None:
        scope = RequestScope()
        token = scope.activate()
        try:
            waiting.set()
            results.append(runtime.defer(int, "6"))  # waits for room, then is held
        finally:
            scope.deactivate(token)
        assert results[0].status is Status.HELD
        scope.release(succeeded=True)

    thread = threading.Thread(target=request)
    thread.start()
    assert waiting.wait(5)
    wait_until_waiting_for_room(runtime)
    gate.set()
    thread.join(10)
    assert first.result(timeout=5) is True
    assert results[0].result(timeout=5) == 6
    stats = runtime.stats()
    assert stats.waited == 1
    assert stats.in_flight == 0


def test_scope_discard_skips_its_calls_unless_always(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        skipped = runtime.defer(int, "1")
        kept = runtime.defer(task(int).options(always=True), "2")
    finally:
        scope.deactivate(token)
    scope.discard()
    assert scope.released
    assert skipped.status is Status.SKIPPED
    assert kept.result(timeout=5) == 2
    scope.release(succeeded=True)  # released already: nothing changes
    assert skipped.status is Status.SKIPPED
    assert runtime.stats().skipped == 1
