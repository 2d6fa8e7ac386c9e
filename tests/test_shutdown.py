from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jumpqueue
from jumpqueue import ConfigurationError, RuntimeClosedError, Status, TaskNotRunError
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory


def test_shutdown_drains_running_and_pending_calls(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=2)
    started = threading.Semaphore(0)
    release = threading.Event()

    def work(n: int) -> int:
        started.release()
        release.wait(10)
        return n

    handles = [runtime.defer(work, n) for n in range(6)]
    started.acquire(timeout=5)
    threading.Timer(0.05, release.set).start()
    runtime.shutdown(timeout=10)
    assert [h.result(timeout=0) for h in handles] == list(range(6))
    stats = runtime.stats()
    assert stats.succeeded == 6
    assert stats.abandoned == 0


def test_shutdown_abandons_what_misses_the_deadline_counted_and_logged(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_workers=1)
    release = threading.Event()
    running = runtime.defer(release.wait, 10)
    pending = runtime.defer(print, "never")
    runtime.shutdown(timeout=0.05)
    assert running.status is Status.ABANDONED
    assert pending.status is Status.ABANDONED
    with pytest.raises(TaskNotRunError):
        pending.result(timeout=0)
    stats = runtime.stats()
    assert stats.abandoned == 2
    assert stats.submitted == stats.finished
    warning = next(r for r in caplog.records if "abandoned 2 call" in r.getMessage())
    assert running.id in warning.getMessage()
    release.set()


def test_shutdown_warning_says_how_long_it_waited_and_names_scheduled_calls_apart(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(max_workers=1)
    release = threading.Event()
    running = runtime.defer(release.wait, 10)
    later = runtime.defer(jumpqueue.task(print).options(delay=3600), "never")
    runtime.shutdown(timeout=0.2)
    release.set()
    assert (running.status, later.status) == (Status.ABANDONED, Status.ABANDONED)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"jumpqueue: shutdown after 0.2 s abandoned 1 call(s): {running.name} [{running.id}]",
        f"jumpqueue: shutdown abandoned 1 scheduled call(s) not yet due: {later.name} [{later.id}]",
    ]


def test_shutdown_stops_admitting(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    runtime.shutdown()
    assert runtime.closed
    with pytest.raises(RuntimeClosedError):
        runtime.defer(print)
    assert runtime.stats().submitted == 0


def test_shutdown_is_idempotent_and_safe_from_many_threads(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    release = threading.Event()
    handle = runtime.defer(release.wait, 10)
    threads = [threading.Thread(target=runtime.shutdown, args=(5,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    runtime.shutdown()
    assert handle.status is Status.SUCCEEDED


def test_shutdown_rejects_a_negative_timeout(make_runtime: RuntimeFactory) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        make_runtime().shutdown(timeout=-1)


def test_shutdown_abandons_held_calls_released_later(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        held = runtime.defer(print, "held")
    finally:
        scope.deactivate(token)
    assert runtime.stats().held == 1
    runtime.shutdown(timeout=0)
    scope.release(succeeded=True)
    assert held.status is Status.ABANDONED
    assert runtime.stats().abandoned == 1


def test_shutdown_via_configure_drains_the_previous_default() -> None:
    release = threading.Event()
    old = jumpqueue.get_runtime()
    handle = jumpqueue.defer(release.wait, 10)
    threading.Timer(0.05, release.set).start()
    new = jumpqueue.configure(max_workers=2)
    assert old.closed
    assert handle.status is Status.SUCCEEDED
    assert jumpqueue.get_runtime() is new
    assert jumpqueue.defer(int, "2").result(timeout=5) == 2


def test_shutdown_module_level_closes_the_default() -> None:
    jumpqueue.shutdown()
    with pytest.raises(RuntimeClosedError):
        jumpqueue.defer(print)


def test_shutdown_async_lets_coroutines_on_the_loop_finish(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    finished = threading.Event()

    async def work() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async def main() -> None:
        runtime.defer(work)
        await runtime.ashutdown(timeout=5)

    asyncio.run(main())
    assert finished.is_set()
    assert runtime.stats().succeeded == 1


def test_shutdown_blocking_on_a_loop_warns(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime()

    async def main() -> None:
        runtime.shutdown(timeout=0)

    asyncio.run(main())
    assert any("ashutdown" in r.getMessage() for r in caplog.records)


def test_shutdown_at_interpreter_exit_drains(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = textwrap.dedent(
        f"""
        import time, jumpqueue
        def work():
            time.sleep(0.2)
            open({str(marker)!r}, "w").write("done")
        jumpqueue.defer(work)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=20)
    assert marker.read_text() == "done"


def test_shutdown_in_a_forked_child_starts_over(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, warnings, jumpqueue
        warnings.simplefilter("ignore", DeprecationWarning)
        assert jumpqueue.defer(int, "1").result(timeout=5) == 1
        pid = os.fork()
        if pid == 0:
            ok = jumpqueue.defer(int, "2").result(timeout=5) == 2
            ok = ok and jumpqueue.stats().submitted == 1
            jumpqueue.shutdown()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=20)


def test_shutdown_logs_nothing_when_all_drained(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jumpqueue")
    runtime = make_runtime()
    runtime.defer(int, "1").wait(5)
    runtime.shutdown()
    assert not caplog.records


class _BlockingHandler(logging.Handler):
    """Holds the thread that logs `text` until released: a slow log sink."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.reached = threading.Event()
        self.unblock = threading.Event()

    def handle(self, record: logging.LogRecord) -> bool:
        # Not emit(): that runs under the handler's lock, which would hold every other
        # thread's log line (the shutdown's own) behind this one.
        if self.text in record.getMessage():
            self.reached.set()
            self.unblock.wait(10)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Nothing is written anywhere."""


@pytest.fixture
def blocking_log() -> Iterator[Callable[[str], _BlockingHandler]]:
    added: list[_BlockingHandler] = []

    def add(text: str) -> _BlockingHandler:
        handler = _BlockingHandler(text)
        logging.getLogger("jumpqueue").addHandler(handler)
        added.append(handler)
        return handler

    yield add
    for handler in added:
        handler.unblock.set()
        logging.getLogger("jumpqueue").removeHandler(handler)


def test_shutdown_racing_a_failure_being_recorded_counts_the_call_once(
    make_runtime: RuntimeFactory, blocking_log: Callable[[str], _BlockingHandler]
) -> None:
    runtime = make_runtime(max_workers=1)
    slow = blocking_log("failed after")

    workers: list[threading.Thread] = []

    def boom() -> None:
        workers.append(threading.current_thread())
        raise ValueError("x")

    handle = runtime.defer(boom)
    assert slow.reached.wait(5)  # the failure is decided, not recorded yet
    runtime.shutdown(timeout=0)  # abandons the call meanwhile
    slow.unblock.set()
    workers[0].join(10)
    assert not workers[0].is_alive()
    stats = runtime.stats()
    assert handle.status is Status.ABANDONED
    assert stats.submitted == stats.finished == 1
    assert (stats.abandoned, stats.failed) == (1, 0)


def test_shutdown_racing_a_retry_being_scheduled_settles_the_call(
    make_runtime: RuntimeFactory, blocking_log: Callable[[str], _BlockingHandler]
) -> None:
    runtime = make_runtime(max_workers=1, max_stuck_threads=1)
    slow = blocking_log("are stuck")
    hang = threading.Event()
    retried = jumpqueue.task(hang.wait).options(timeout=0.05, retries=1, retry_backoff=0)
    handle = runtime.defer(retried, 10)
    assert slow.reached.wait(5)  # the timeout is decided, the retry not scheduled yet
    closing = threading.Thread(target=runtime.shutdown, args=(0,))
    closing.start()
    assert handle.wait(5)
    slow.unblock.set()
    closing.join(10)
    stats = runtime.stats()
    assert handle.status is Status.ABANDONED
    assert stats.submitted == stats.finished == 1
    assert stats.in_flight == 0
    hang.set()
