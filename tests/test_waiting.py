from __future__ import annotations

import asyncio
import threading

import pytest

import jumpqueue
from jumpqueue import Status, WaitDeadlockError
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory


def test_waiting_on_a_held_call_in_its_own_request_raises_at_once(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        handle = runtime.defer(int, "7")
        for wait in (handle.wait, handle.result, handle.exception):
            with pytest.raises(WaitDeadlockError, match=r"builtins\.int .*jumpqueue\.submit\(\)"):
                wait(None)
        with pytest.raises(WaitDeadlockError):
            handle.result(timeout=30)
    finally:
        scope.deactivate(token)
    assert handle.status is Status.HELD
    # Another thread may wait: the response can still be sent meanwhile.
    assert handle.wait(0.01) is False
    scope.release(succeeded=True)
    assert handle.result(timeout=5) == 7


def test_waiting_on_a_held_call_from_another_thread_is_allowed(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    handle = runtime.defer(int, "3")
    scope.deactivate(token)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(handle.result(timeout=10)))
    waiter.start()
    scope.release(succeeded=True)
    waiter.join(10)
    assert results == [3]


def test_submit_runs_now_inside_a_request_with_the_task_policy(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    attempts: list[int] = []

    @jumpqueue.task(retries=2, retry_backoff=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "sent"

    scope = RequestScope()
    token = scope.activate()
    try:
        handle = runtime.submit(flaky)
        assert handle.result(timeout=10) == "sent"
    finally:
        scope.deactivate(token)
    assert handle.attempts == 3
    assert len(scope) == 0  # nothing was held for the response


def test_aresult_awaits_without_blocking_the_loop(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> tuple[int, str]:
        handle = runtime.defer(double, 4)  # on this loop
        with pytest.raises(WaitDeadlockError, match=r"await handle\.aresult"):
            handle.result(timeout=30)
        blocked = runtime.defer(threading.Event().wait, 0.5)
        with pytest.raises(TimeoutError):
            await blocked.aresult(timeout=0.01)
        scope = RequestScope()
        token = scope.activate()
        held = runtime.defer(str, "x")
        with pytest.raises(WaitDeadlockError):
            await held.aresult(timeout=30)
        scope.deactivate(token)
        scope.release(succeeded=True)
        return await handle.aresult(timeout=10), await held.aresult(timeout=10)

    assert asyncio.run(main()) == (8, "x")
