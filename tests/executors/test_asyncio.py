"""The async executor when the loop a call runs on closes under it (a test client's loop)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import jumpqueue
from jumpqueue import Deferred, Status

from ..conftest import RuntimeFactory

WAIT = 5.0


def test_asyncio_call_on_a_loop_that_closes_runs_to_its_end_first() -> None:
    steps: list[str] = []

    async def send() -> str:
        await asyncio.sleep(0.01)
        steps.append("slept")
        await asyncio.sleep(0)
        return "sent"

    async def request() -> Deferred[str]:
        return jumpqueue.defer(send)  # the loop closes before the call's first await ends

    call = asyncio.run(request())
    assert (call.status, call.result(), steps) == (Status.SUCCEEDED, "sent", ["slept"])


def test_asyncio_call_that_fails_while_its_loop_closes_fails_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def send() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("mail server down")

    async def request() -> Deferred[None]:
        return jumpqueue.defer(send)

    with caplog.at_level(logging.ERROR):
        call = asyncio.run(request())
    assert call.status is Status.FAILED
    assert isinstance(call.exception(), ConnectionError)
    # Logged by jumpqueue, not again by asyncio as an error of its shutdown.
    assert [record.name for record in caplog.records] == ["jumpqueue"]


def test_asyncio_call_past_the_deadline_of_a_closing_loop_is_abandoned_and_logged(
    use_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = use_runtime(shutdown_timeout=0.1)

    async def hang() -> None:
        await asyncio.Event().wait()

    async def request() -> Deferred[None]:
        return jumpqueue.defer(hang)

    with caplog.at_level(logging.WARNING, logger="jumpqueue"):
        call = asyncio.run(request())
    assert call.status is Status.ABANDONED
    assert runtime.stats().abandoned == 1
    assert f"hang [{call.id}] was still running 0.1 s after its event loop" in caplog.text


def test_asyncio_calls_waiting_for_a_slot_on_a_closing_loop_run_on_the_background_loop(
    use_runtime: RuntimeFactory,
) -> None:
    use_runtime(max_async=1)
    threads: list[str] = []

    async def send() -> None:
        await asyncio.sleep(0.01)
        threads.append(threading.current_thread().name)

    async def request() -> list[Deferred[None]]:
        return [jumpqueue.defer(send), jumpqueue.defer(send)]

    calls = asyncio.run(request())
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SUCCEEDED] * 2
    # The first ran on the closing loop (the main thread), the second on the background loop.
    assert threads == [threading.current_thread().name, "jumpqueue-asyncio"]


def test_asyncio_cancellation_inside_a_running_loop_still_goes_through() -> None:
    async def send() -> str:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), 0.01)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return "timed out inside"
        return "unreachable"

    async def request() -> str:
        call = jumpqueue.defer(send)
        return await call.aresult(timeout=WAIT)

    assert asyncio.run(request()) == "timed out inside"


def test_asyncio_call_cancelled_by_its_application_is_abandoned_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    async def request() -> Deferred[None]:
        call = jumpqueue.defer(hang)
        await asyncio.sleep(0)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.to_thread(call.wait, WAIT)
        return call

    with caplog.at_level(logging.WARNING, logger="jumpqueue"):
        call = asyncio.run(request())
    assert call.status is Status.ABANDONED
    assert f"hang [{call.id}] was cancelled by its event loop" in caplog.text


def test_asyncio_timeout_of_a_call_on_a_closing_loop_still_applies(
    use_runtime: RuntimeFactory,
) -> None:
    use_runtime(task_timeout=0.05)

    async def hang() -> None:
        await asyncio.Event().wait()

    async def request() -> Deferred[None]:
        return jumpqueue.defer(hang)

    call = asyncio.run(request())
    assert call.wait(WAIT)
    assert call.status is Status.TIMED_OUT


def test_asyncio_call_posted_to_a_loop_that_stops_before_starting_it_runs_on_the_background_loop(
    use_runtime: RuntimeFactory,
) -> None:
    runtime = use_runtime(max_async=1)
    application = asyncio.new_event_loop()
    serving = threading.Thread(target=application.run_forever)
    serving.start()
    gate = threading.Event()
    threads: list[str] = []

    async def occupy() -> None:
        await asyncio.to_thread(gate.wait, WAIT)

    async def send() -> str:
        threads.append(threading.current_thread().name)
        return "sent"

    async def defer_send() -> Deferred[str]:
        return jumpqueue.defer(send)

    try:
        first = jumpqueue.defer(occupy)  # the only slot, on the background loop
        waiting = asyncio.run_coroutine_threadsafe(defer_send(), application).result(WAIT)
        application.call_soon_threadsafe(application.stop)
        serving.join(WAIT)
        # The slot frees up now: the waiting call is posted to the stopped loop, which
        # never runs again. It once kept its slot, and never ran, for ever.
        gate.set()
        assert first.wait(WAIT)
        assert waiting.result(timeout=WAIT) == "sent"
        assert threads == ["jumpqueue-asyncio"]
        assert runtime.defer(send).result(timeout=WAIT) == "sent"  # and the slot is free
    finally:
        gate.set()
        application.close()
