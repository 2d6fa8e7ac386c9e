"""defer() from a signal handler that interrupted the runtime's own code, holding a lock."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Deferred, Runtime, Status
from jumpqueue._journal.writer import Writer
from jumpqueue._runtime.ledger import Ledger
from jumpqueue._scheduler import Scheduler
from jumpqueue.executors import EXECUTORS
from jumpqueue.executors.asyncio import AsyncExecutor
from jumpqueue.executors.thread import ThreadExecutor
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")

WAIT = 5.0


class DeadlockedError(Exception):
    """The main thread waited for a lock it holds itself."""


@contextlib.contextmanager
def deadlock_watchdog(seconds: float = WAIT) -> Iterator[None]:
    """Break a deadlock of the main thread after `seconds`, so that the test fails, not hangs."""

    def give_up(signum: int, frame: FrameType | None) -> None:
        raise DeadlockedError(f"the main thread still waited after {seconds} s")

    previous = signal.signal(signal.SIGUSR2, give_up)
    main = threading.get_ident()
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            signal.pthread_kill(main, signal.SIGUSR2)  # a blocked lock.acquire() gives way

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGUSR2, previous)


@contextlib.contextmanager
def on_signal(handler: Callable[[], object]) -> Iterator[Callable[[], None]]:
    """Install `handler` for SIGUSR1; yield what raises that signal in this thread, once."""
    raised: list[bool] = []

    def run(signum: int, frame: FrameType | None) -> None:
        handler()

    def raise_once() -> None:
        if not raised:
            raised.append(True)
            signal.raise_signal(signal.SIGUSR1)  # its handler runs before this returns

    previous = signal.signal(signal.SIGUSR1, run)
    try:
        with deadlock_watchdog():
            yield raise_once
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert raised, "the patched path never ran"


def interrupt_inside(
    monkeypatch: pytest.MonkeyPatch, owner: object, method: str, raise_signal: Callable[[], None]
) -> None:
    """Patch `owner.method`, which runs with a lock held, to raise the signal in the middle."""
    original = getattr(owner, method)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        raise_signal()
        return result

    monkeypatch.setattr(owner, method, interrupted)


def add(a: int, b: int) -> int:
    return a + b


async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@pytest.mark.parametrize(
    ("owner", "method", "function"),
    [
        (Ledger, "enter_locked", add),  # the runtime's lock, taken by every defer()
        (ThreadExecutor, "_grow", add),  # the thread pool's lock
        (AsyncExecutor, "_take_ready", add_async),  # the async executor's lock
    ],
    ids=["ledger", "thread-executor", "async-executor"],
)
def test_signal_handler_defer_on_top_of_a_held_lock_is_handed_over_not_deadlocked(
    make_runtime: RuntimeFactory,
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    method: str,
    function: Callable[[int, int], Any],
) -> None:
    runtime = make_runtime(max_workers=2)
    handled: list[Deferred[int]] = []
    with on_signal(lambda: handled.append(runtime.defer(function, 1, 2))) as raise_signal:
        interrupt_inside(monkeypatch, owner, method, raise_signal)
        first = runtime.defer(function, 0, 1)  # the handler runs while this holds the lock
    assert first.result(timeout=WAIT) == 1
    assert handled[0].result(timeout=WAIT) == 3
    stats = runtime.stats()
    assert stats.submitted == stats.succeeded == 2


def test_signal_handler_defer_held_by_a_request_on_top_of_its_scope_runs_after_it(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    handled: list[Deferred[int]] = []

    class Interrupting(list[Any]):
        def append(self, item: Any) -> None:  # runs with the scope's lock held
            super().append(item)
            raise_signal()

    with on_signal(lambda: handled.append(runtime.defer(add, 1, 2))) as raise_signal:
        scope._held = Interrupting()
        token = scope.activate()
        try:
            first = runtime.defer(add, 0, 1)
        finally:
            scope.deactivate(token)
    assert handled[0].status is Status.HELD  # the request's, as any call it defers
    # Held from the hand-over thread; or, released before that, handed over at once.
    scope.release(succeeded=True)
    assert first.result(timeout=WAIT) == 1
    assert handled[0].result(timeout=WAIT) == 3


def test_signal_handler_timer_on_top_of_the_scheduler_is_scheduled_from_another_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler = Scheduler()
    fired = [threading.Event(), threading.Event()]
    try:
        with on_signal(lambda: scheduler.call_later(0.0, fired[1].set)) as raise_signal:
            interrupt_inside(monkeypatch, Scheduler, "_schedule_locked", raise_signal)
            scheduler.call_later(0.0, fired[0].set)
        assert all(event.wait(WAIT) for event in fired)
    finally:
        scheduler.stop()


def test_signal_handler_defer_on_top_of_the_runtime_making_its_executor_is_handed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = Runtime()
    handled: list[Deferred[int]] = []
    try:
        with on_signal(lambda: handled.append(runtime.defer(add, 1, 2))) as raise_signal:

            def make_and_interrupt(*args: Any) -> ThreadExecutor:
                executor = ThreadExecutor(*args)
                raise_signal()  # with the dispatcher's lock held
                return executor

            monkeypatch.setitem(EXECUTORS, "thread", make_and_interrupt)
            first = runtime.defer(add, 0, 1)
        assert first.result(timeout=WAIT) == 1
        assert handled[0].result(timeout=WAIT) == 3
    finally:
        runtime.shutdown(timeout=WAIT)
    assert runtime.stats().succeeded == 2


def test_signal_handler_defer_handed_over_and_then_refused_ends_counted(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    handled: list[Deferred[int]] = []
    with on_signal(lambda: handled.append(runtime.defer(add, 1, 2))) as raise_signal:
        interrupt_inside(monkeypatch, Ledger, "enter_locked", raise_signal)
        first = runtime.defer(gate.wait, WAIT)  # fills the backlog
    assert handled[0].wait(WAIT)
    assert handled[0].status is Status.SHED  # rejected on the hand-over thread
    gate.set()
    assert first.result(timeout=WAIT) is True
    stats = runtime.stats()
    assert (stats.submitted, stats.shed) == (2, {"reject": 1})
    assert stats.submitted == stats.finished + stats.in_flight


def test_signal_handler_defer_shed_on_the_hand_over_thread_wakes_a_caller_already_waiting(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race a loaded machine shows: the handle is waited on before the hand-over
    # thread sheds the call. Here the hand-over waits until someone waits on the handle.
    runtime = make_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    original_take_over = Runtime._take_over

    def take_over_late(self: Runtime, deferred: Deferred[int], *rest: Any) -> None:
        deadline = time.monotonic() + WAIT
        while deferred._done is None:  # no signal that a caller waits but the event it makes
            assert time.monotonic() < deadline, "nobody waited on the handle"
            threading.Event().wait(0.001)
        original_take_over(self, deferred, *rest)

    monkeypatch.setattr(Runtime, "_take_over", take_over_late)
    handled: list[Deferred[int]] = []
    with on_signal(lambda: handled.append(runtime.defer(add, 1, 2))) as raise_signal:
        interrupt_inside(monkeypatch, Ledger, "enter_locked", raise_signal)
        first = runtime.defer(gate.wait, WAIT)  # fills the backlog
    assert handled[0].wait(WAIT)  # woken when shed, not at the end of its timeout
    assert handled[0].status is Status.SHED
    gate.set()
    assert first.result(timeout=WAIT) is True


def test_signal_handler_defer_on_top_of_a_journal_commit_neither_waits_nor_goes_unjournaled(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = make_runtime(journal=str(tmp_path / "journal.db"))
    assert runtime.open_journal()
    handled: list[tuple[Deferred[int], float]] = []

    def defer_in_handler() -> None:
        started = time.monotonic()
        handled.append((runtime.defer(add, 1, 2), time.monotonic() - started))

    with on_signal(defer_in_handler) as raise_signal:
        interrupt_inside(monkeypatch, Writer, "write", raise_signal)  # with the commit's turn
        first = runtime.defer(add, 0, 1)
    handle, waited = handled[0]
    assert waited < 1.0  # it once waited out the commit the handler interrupted (5 s)
    assert first.result(timeout=WAIT) == 1
    assert handle.result(timeout=WAIT) == 3
    assert runtime.stats().journal_fallbacks == 0


def test_signal_handler_defer_on_top_of_the_process_queue_is_handed_over(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1)
    in_child = jumpqueue.task(add).options(executor="process", name="tests.test_signals.add")
    executor = runtime._dispatcher.executor("process")
    handled: list[Deferred[int]] = []
    with on_signal(lambda: handled.append(runtime.defer(in_child, 1, 2))) as raise_signal:

        class InterruptedQueue(collections.deque[Any]):
            def append(self, item: Any) -> None:
                super().append(item)
                raise_signal()  # the handler runs while submit() holds the pool's lock

        executor._queue = InterruptedQueue()  # type: ignore[attr-defined]
        with deadlock_watchdog():
            first = runtime.defer(in_child, 0, 1)
    assert first.result(timeout=WAIT) == 1
    assert handled[0].result(timeout=WAIT) == 3
