from __future__ import annotations

import asyncio
import threading

import pytest

import jumpqueue
from jumpqueue import InvalidCallError, Status
from jumpqueue.integration import drain_runtime
from jumpqueue.testing import CapturedCall, capture, immediate


@jumpqueue.task(retries=2)
def send_email(to: str, *, subject: str) -> str:
    return f"{to}:{subject}"


def test_testing_capture_records_calls_without_running_them() -> None:
    ran = threading.Event()
    with capture() as calls:
        handle = jumpqueue.defer(ran.set)
        send_email.defer("a@example.com", subject="hi")
    assert not ran.is_set()
    assert handle.status is Status.PENDING
    assert [c.fn for c in calls] == [ran.set, send_email.fn]
    assert calls[1].args == ("a@example.com",)
    assert calls[1].kwargs == {"subject": "hi"}
    assert calls[1].options.retries == 2
    assert calls[1].run() == "a@example.com:hi"
    assert jumpqueue.stats().submitted == 0


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

    with immediate():
        assert jumpqueue.defer(double, 4).result(timeout=0) == 8
        with pytest.raises(ValueError, match="visible"):
            jumpqueue.defer(boom)


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


@pytest.mark.usefixtures("jumpqueue_immediate")
def test_testing_immediate_fixture() -> None:
    assert send_email.defer("c", subject="d").status is Status.SUCCEEDED


def test_testing_interception_ends_with_the_block() -> None:
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
