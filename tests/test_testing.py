from __future__ import annotations

import asyncio
import threading
import time

import pytest

import jumpqueue
from jumpqueue import InvalidCallError, Status, TaskTimeoutError, WaitDeadlockError
from jumpqueue.integration import RequestScope, drain_runtime
from jumpqueue.testing import CapturedCall, capture, immediate, live

from .conftest import RuntimeFactory


@jumpqueue.task(retries=2)
def send_email(to: str, *, subject: str) -> str:
    return f"{to}:{subject}"


@jumpqueue.task(always=True)
def audit(event: str) -> str:
    return event


def _request(*, succeeded: bool, defer: list[tuple[object, tuple[object, ...]]]) -> None:
    """What a middleware does around a handler that defers these calls."""
    scope = RequestScope()
    token = scope.activate()
    try:
        for fn, args in defer:
            jumpqueue.defer(fn, *args)  # type: ignore[call-overload]
    finally:
        scope.deactivate(token)
    scope.release(succeeded=succeeded)


def test_testing_capture_records_each_call_with_its_fate_and_runs_none() -> None:
    ran = threading.Event()
    with capture() as calls:
        handle = jumpqueue.defer(ran.set)
        send_email.defer("a@example.com", subject="hi")
        _request(succeeded=False, defer=[(ran.set, ()), (audit, ("failed",))])
        _request(succeeded=True, defer=[(ran.set, ())])
        scope = RequestScope()  # a request still being served when the block ends
        token = scope.activate()
        jumpqueue.defer(ran.set)
        scope.deactivate(token)
    assert not ran.is_set()
    assert [c.status for c in calls] == [
        Status.PENDING,  # deferred outside a request: it would run
        Status.PENDING,
        Status.SKIPPED,  # its request failed
        Status.PENDING,  # always=True
        Status.PENDING,  # its request succeeded
        Status.HELD,  # its request had not finished
    ]
    assert [c.fn for c in calls[:2]] == [ran.set, send_email.fn]
    assert calls[1].args == ("a@example.com",)
    assert calls[1].kwargs == {"subject": "hi"}
    assert calls[1].options.retries == 2
    assert calls[1].run() == "a@example.com:hi"
    assert handle.status is Status.ABANDONED  # never run: abandoned with the block
    scope.release(succeeded=True)  # after the block: the held call runs for real
    assert calls[5].deferred.wait(5)
    assert ran.is_set()


def test_testing_capture_records_shed_calls(use_runtime: RuntimeFactory) -> None:
    use_runtime(max_pending=1, on_overload="reject")
    with capture() as calls:
        jumpqueue.defer(print)
        with pytest.raises(jumpqueue.OverloadedError):
            jumpqueue.defer(print)
    assert [c.status for c in calls] == [Status.PENDING, Status.SHED]


def test_testing_capture_sees_calls_from_other_threads() -> None:
    with capture() as calls:
        thread = threading.Thread(target=jumpqueue.defer, args=(print, "x"))
        thread.start()
        thread.join(5)
    assert len(calls) == 1


def test_testing_capture_still_rejects_bad_input() -> None:
    with capture() as calls, pytest.raises(InvalidCallError):
        jumpqueue.defer(send_email, "missing subject")  # type: ignore[call-overload]
    assert calls == []


def test_testing_immediate_runs_inside_defer_and_propagates() -> None:
    async def double(x: int) -> int:
        return 2 * x

    def boom() -> None:
        raise ValueError("visible")

    with immediate() as calls:
        assert jumpqueue.defer(double, 4).result(timeout=0) == 8
        with pytest.raises(ValueError, match="visible"):
            jumpqueue.defer(boom)
    assert [c.status for c in calls] == [Status.SUCCEEDED, Status.FAILED]


def test_testing_immediate_runs_held_calls_at_release_unless_the_request_failed() -> None:
    threads: list[int] = []

    def note() -> None:
        threads.append(threading.get_ident())

    with immediate() as calls:
        scope = RequestScope()
        token = scope.activate()
        handle = jumpqueue.defer(note)
        with pytest.raises(WaitDeadlockError):  # as in production
            handle.result()
        scope.deactivate(token)
        assert threads == []  # held until the response is complete
        scope.release(succeeded=True)
        assert threads == [threading.get_ident()]  # ran in the releasing thread
        _request(succeeded=False, defer=[(note, ()), (audit, ("failed",))])
    assert threads == [threading.get_ident()]
    assert [c.status for c in calls] == [Status.SUCCEEDED, Status.SKIPPED, Status.SUCCEEDED]


def test_testing_immediate_applies_retries_without_sleeping_their_backoff() -> None:
    attempts: list[int] = []

    @jumpqueue.task(retries=3, retry_backoff=3600)  # a sleep would time the test out
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "sent"

    with immediate():
        handle = flaky.defer()
    assert (handle.result(0), handle.attempts) == ("sent", 3)


def test_testing_immediate_sleeps_the_backoff_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    attempts: list[int] = []

    @jumpqueue.task(retries=1, retry_backoff=8)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("not yet")

    with immediate(sleep_backoff=True):
        flaky.defer()
    assert len(slept) == 1
    assert 4 <= slept[0] <= 8  # the backoff, less up to half of it as jitter


def test_testing_immediate_applies_timeouts() -> None:
    @jumpqueue.task(timeout=0.05)
    def slow() -> None:
        time.sleep(0.5)  # stands for work that runs past its timeout

    with immediate() as calls, pytest.raises(TaskTimeoutError):
        slow.defer()
    assert calls[0].status is Status.TIMED_OUT


def test_testing_immediate_runs_coroutines_under_a_running_loop() -> None:
    async def triple(x: int) -> int:
        await asyncio.sleep(0)
        return 3 * x

    async def main() -> int:
        return jumpqueue.defer(triple, 2).result(0)  # ran to its end inside defer()

    with immediate():
        assert asyncio.run(main()) == 6


def test_testing_live_suspends_a_mode() -> None:
    threads: list[int] = []
    with immediate():
        with live():
            handle = jumpqueue.defer(lambda: threads.append(threading.get_ident()))
            handle.wait(5)
        assert threads != [threading.get_ident()]  # on a pool thread
        jumpqueue.defer(lambda: threads.append(threading.get_ident()))
    assert threads[-1] == threading.get_ident()


def test_testing_captured_coroutine_can_be_run() -> None:
    async def three() -> int:
        await asyncio.sleep(0)
        return 3

    with capture() as calls:
        jumpqueue.defer(three)
    assert calls[0].run() == 3


def test_testing_capture_fixture(jumpqueue_capture: list[CapturedCall]) -> None:
    send_email.defer("b@example.com", subject="yo")
    assert jumpqueue_capture[0].kwargs == {"subject": "yo"}


def test_testing_immediate_fixture(jumpqueue_immediate: list[CapturedCall]) -> None:
    assert send_email.defer("c", subject="d").status is Status.SUCCEEDED
    assert jumpqueue_immediate[0].status is Status.SUCCEEDED


@pytest.mark.usefixtures("jumpqueue_immediate", "jumpqueue_live")
def test_testing_live_fixture_suspends_the_mode() -> None:
    handle = send_email.defer("e", subject="f")
    assert handle.result(timeout=5) == "e:f"
    assert handle.status is Status.SUCCEEDED


def test_testing_modes_end_with_the_block() -> None:
    with capture():
        pass
    assert jumpqueue.defer(int, "1").result(timeout=5) == 1


def test_testing_capture_after_a_server_drained_the_default_runtime_sees_the_calls() -> None:
    # What a test client's lifespan shutdown leaves behind, in an earlier test.
    asyncio.run(drain_runtime(None))
    ran = threading.Event()
    with capture() as calls:
        jumpqueue.defer(ran.set)
    assert [call.fn for call in calls] == [ran.set]
    assert not ran.is_set()


def test_testing_immediate_warns_of_calls_left_held_by_an_unclosed_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scope = RequestScope()
    with immediate():
        token = scope.activate()
        jumpqueue.defer(print, "never closed")
        scope.deactivate(token)
    assert any(
        "still held" in r.getMessage() and "buffered=True" in r.getMessage() for r in caplog.records
    )
    scope.discard()
