from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from jumpqueue import OverloadedError, TaskTimeoutError, task
from jumpqueue.backends import _message
from jumpqueue.integration import CallObserver, ObservedCall, add_observer, remove_observer
from jumpqueue.testing import capture

from .conftest import RuntimeFactory

seen: contextvars.ContextVar[str | None] = contextvars.ContextVar("seen", default=None)


class Recorder(CallObserver):
    """Records every hook, as (hook, call id, details)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.settled_event = threading.Event()

    def deferred(self, call: ObservedCall) -> Mapping[str, str]:
        self.events.append(("deferred", call.id, call.destination))
        return {"k": "v"}

    def attempt_started(self, call: ObservedCall, attempt: int) -> object:
        seen.set(f"attempt {attempt}")  # the call's code sees what the hook sets
        self.events.append(("started", call.id, (attempt, dict(call.carrier))))
        return f"token {attempt}"

    def attempt_finished(
        self,
        call: ObservedCall,
        attempt: int,
        outcome: str,
        error: BaseException | None,
        token: object,
    ) -> None:
        self.events.append(("finished", call.id, (attempt, outcome, type(error).__name__, token)))

    def settled(self, call: ObservedCall, status: str, error: BaseException | None) -> None:
        self.events.append(("settled", call.id, (status, call.destination)))
        self.settled_event.set()

    def shed(self, call: ObservedCall, policy: str) -> None:
        self.events.append(("shed", call.id, policy))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    observer = Recorder()
    add_observer(observer)
    yield observer
    remove_observer(observer)


def flaky(state: dict[str, int]) -> str | None:
    state["runs"] += 1
    if state["runs"] == 1:
        raise ValueError("first")
    return seen.get()


def test_observe_every_hook_of_a_retried_thread_call_in_order(
    make_runtime: RuntimeFactory, recorder: Recorder
) -> None:
    runtime = make_runtime()
    handle = runtime.defer(task(flaky).options(retries=1, retry_backoff=0), {"runs": 0})
    assert handle.result(timeout=5) == "attempt 2"
    assert recorder.events == [
        ("deferred", handle.id, "thread"),
        ("started", handle.id, (1, {"k": "v"})),
        ("finished", handle.id, (1, "failed", "ValueError", "token 1")),
        ("started", handle.id, (2, {"k": "v"})),
        ("finished", handle.id, (2, "succeeded", "NoneType", "token 2")),
        ("settled", handle.id, ("succeeded", "thread")),
    ]


def test_observe_timeout_async_and_shed(make_runtime: RuntimeFactory, recorder: Recorder) -> None:
    runtime = make_runtime(max_pending=1)
    release = threading.Event()
    hung = runtime.defer(task(release.wait).options(timeout=0.05), 10)
    with pytest.raises(TaskTimeoutError):
        hung.result(timeout=5)
    finished = [e for e in recorder.events if e[0] == "finished"]
    assert finished == [("finished", hung.id, (1, "timed_out", "TaskTimeoutError", "token 1"))]
    blocker = runtime.defer(release.wait, 10)
    with pytest.raises(OverloadedError):
        runtime.defer(task(int).options(on_overload="reject"), "1")
    release.set()
    blocker.wait(5)
    assert [e[2] for e in recorder.events if e[0] == "shed"] == ["reject"]
    assert ("settled", "shed") in {(e[0], e[2][0]) for e in recorder.events}

    async def coro() -> str | None:
        return seen.get()

    async def main() -> str | None:
        return await runtime.defer(coro).aresult(timeout=5)

    assert asyncio.run(main()) == "attempt 1"
    assert recorder.events[-1][2] == ("succeeded", "async")


def test_observe_failing_observer_is_logged_and_the_call_runs(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CallObserver):
        def deferred(self, call: ObservedCall) -> Mapping[str, str]:
            raise RuntimeError("broken observer")

        def attempt_started(self, call: ObservedCall, attempt: int) -> object:
            raise RuntimeError("broken observer")

        def settled(self, call: ObservedCall, status: str, error: BaseException | None) -> None:
            raise RuntimeError("broken observer")

    broken = Broken()
    add_observer(broken)
    try:
        caplog.set_level(logging.WARNING, logger="jumpqueue")
        assert make_runtime().defer(int, "7").result(timeout=5) == 7
    finally:
        remove_observer(broken)
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert failures  # logged, rate-limited
    assert "broken observer" in failures[0].getMessage()


def test_observe_registration_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="CallObserver"):
        add_observer(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a registered"):
        remove_observer(CallObserver())


def test_observe_carrier_travels_in_the_message_and_worker_side_attempts(
    recorder: Recorder,
) -> None:
    message = {
        "id": "abc",
        "name": "tests.f",
        "context": {},
        "headers": {"traceparent": "00-x", "bad": 1},
    }
    assert _message.run(message, seen.get, (), {}, attempt=2, destination="rq:q") == "attempt 2"
    assert seen.get() is None  # nothing an observer set stays in the worker's context
    assert recorder.events == [
        ("started", "abc", (2, {"traceparent": "00-x"})),
        ("finished", "abc", (2, "succeeded", "NoneType", "token 2")),
    ]


def test_observe_handoff_message_carries_the_carrier(
    make_runtime: RuntimeFactory, recorder: Recorder
) -> None:
    runtime = make_runtime()
    with capture(runtime) as calls:
        runtime.defer(flaky, {"runs": 0})
    message = _message.build(calls[0].deferred, serializer="json")
    assert message["headers"] == {"k": "v"}
    assert ("settled", calls[0].deferred.id, ("abandoned", "thread")) in recorder.events
