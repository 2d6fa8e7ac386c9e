"""Dispatch and outcomes: calls go to their executors; attempts start, end, time out, retry."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _observe
from .._choices import EXECUTOR_NAMES
from .._deferred import Deferred, Status
from .._exceptions import ResultNotPortableError, TaskExitError, TaskTimeoutError
from .._reentry import take
from .._results import CallFailure, to_json, worker_id
from .._scheduler import Scheduler
from ..executors import EXECUTORS
from ..executors._base import Attempt, Executor
from .delays import Delays
from .slowcalls import log_slow

if TYPE_CHECKING:
    from .._choices import ExecutorName
    from .._config import Config
    from .._journal import Journal
    from .._scheduler import Timer
    from .ledger import Ledger

logger = logging.getLogger("jumpqueue")


#: When a retry is due: `retry_later(delay, again)` calls `again()` after `delay` seconds.
RetryLater = Callable[[float, Callable[[], None]], object]


class Dispatcher:
    """Runs admitted calls on the executors, and settles each attempt; the executors report here.

    `backend`, when the runtime hands its calls to a distributed engine, takes
    every call's first attempt; a call that falls back runs its retries here.
    A testing mode routes every call to an executor of its own (`route()`).
    """

    def __init__(self, config: Config, ledger: Ledger) -> None:
        self._config = config
        self._ledger = ledger
        self._lock = threading.Lock()
        self._scheduler = Scheduler()
        self._made: dict[ExecutorName, Executor] = {}
        self._handoff: Executor | None = None
        #: Where calls go, by executor name: the executors made so far, or a testing mode's.
        self.executors = self._made
        self.backend: Executor | None = None
        self.retry_later: RetryLater = self._scheduler.call_later
        self.journal: Journal | None = None
        self._slow_threshold = config.slow_call_threshold
        # No attempt needs a timer unless its task sets a timeout.
        self._untimed = config.task_timeout is None and config.slow_call_threshold is None
        # Who runs an attempt in this process (a forked child builds its runtime anew).
        self._worker_id = worker_id()
        #: The slow-call log's timer of each running attempt (when `slow_call_threshold` is set).
        self._slow_timers: dict[Attempt, Timer] = {}
        self._delays = Delays(ledger, self._scheduler, self.dispatch)
        #: Called when the first executor is made: the runtime begins to serve here.
        self.serving: Callable[[], None] | None = None

    @property
    def scheduler(self) -> Scheduler:
        """The runtime's timer thread (timeouts, retries, periodic work)."""
        return self._scheduler

    def open_backend(self, backend: Executor | None) -> None:
        """Hand every call's first attempt to this hand-off executor (None: keep them here)."""
        self._handoff = self.backend = backend

    def route(self, executor: Executor | None, retry_later: RetryLater | None = None) -> None:
        """Send every call to `executor`, retried when `retry_later` says; None: as configured."""
        if executor is None:
            self.executors, self.backend = self._made, self._handoff
            self.retry_later = self._scheduler.call_later
        else:
            self.executors, self.backend = dict.fromkeys(EXECUTOR_NAMES, executor), None
            self.retry_later = retry_later or self._scheduler.call_later

    @property
    def workers(self) -> int:
        """Threads and child processes serving now."""
        return sum(executor.workers for executor in list(self._made.values()))

    @property
    def stuck(self) -> int:
        """Threads still running calls that timed out."""
        return sum(executor.stuck for executor in list(self._made.values()))

    def executor(self, name: ExecutorName) -> Executor:
        """The executor calls of that name go to; a configured one is made on first use."""
        executor = self.executors.get(name)
        if executor is None:
            with self._lock:
                executor = self._made.get(name)
                if executor is None:
                    executor = EXECUTORS[name](self._config, self)
                    self._made[name] = executor
                    if self.serving is not None:
                        self.serving()
        return executor

    def executor_unless_reentered(self, name: ExecutorName) -> Executor | None:
        """`executor()`, or None where a signal handler must not wait for one being made."""
        executor = self.executors.get(name)
        if executor is not None:
            return executor
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            return None
        lock.release()
        return self.executor(name)

    def dispatch(self, deferred: Deferred[Any]) -> None:
        """Submit a pending call's next attempt (its first to the backend, if there is one)."""
        if self.backend is not None and deferred.attempts == 0:
            # A call that fell back and started here retries here.
            self.backend.submit(Attempt(deferred, 1))
            return
        name = deferred.executor
        executor = self.executors.get(name) or self.executor(name)
        executor.submit(Attempt(deferred, deferred.attempts + 1))

    def dispatch_when_due(self, deferred: Deferred[Any]) -> None:
        """`dispatch()` a pending call now, a scheduled one when its time has come."""
        if deferred._status is Status.SCHEDULED:
            self._delays.schedule(deferred)
        else:
            self.dispatch(deferred)

    def run_inline(self, deferred: Deferred[Any]) -> None:
        """Run an admitted call now, in the caller's thread (the "inline" overload policy).

        Nothing can stop the caller's own thread: the call's timeout is checked
        when it returns. It stays "running" until then, and one that returns
        past its timeout ends "timed_out" (retried as its task says), as a late
        return from a pool thread does.
        """
        if deferred.loop is not None or deferred._status is Status.SCHEDULED:
            # Not now: a call waits for its time; a coroutine cannot run to completion
            # inside its caller's running loop: it goes to that loop past the bound instead.
            self.dispatch_when_due(deferred)
            return
        attempt = Attempt(deferred, 1)
        if not self._begin(attempt):
            return
        timeout = self._timeout(deferred)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            result = attempt.call()
        except BaseException as error:
            self._inline_finished(attempt, None, error, deadline)
            if not isinstance(error, Exception):
                raise  # the caller's own KeyboardInterrupt or SystemExit
        else:
            self._inline_finished(attempt, result, None, deadline)

    def _inline_finished(
        self, attempt: Attempt, result: Any, error: BaseException | None, deadline: float | None
    ) -> None:
        if deadline is None or time.monotonic() <= deadline:
            self.attempt_finished(attempt, result, error)
            return
        timeout_error = self._timeout_error(attempt.deferred)
        if _observe.watched:
            _observe.unwatch(attempt, attempt.deferred._observed_call(), "timed_out", timeout_error)
        if self._ledger.claim(attempt):
            self._failed(attempt, timeout_error, Status.TIMED_OUT)

    def close(self) -> None:
        """Stop the timers, the backend and every executor (the ledger has settled every call)."""
        self._scheduler.stop()
        if self._handoff is not None:
            self._handoff.close()
        for executor in list(self._made.values()):
            executor.close()

    # -- what the executors report (`ExecutorHost`) --------------------------------------------

    def attempt_started(self, attempt: Attempt) -> bool:
        """An attempt begins; False means it was settled meanwhile: skip it."""
        if not self._begin(attempt):
            return False
        if attempt.deferred.options.timeout is None and self._untimed:
            return True  # the common case: no timer to set
        timeout = self._timeout(attempt.deferred)
        if timeout is not None:
            attempt.timer = self._scheduler.call_later(timeout, lambda: self._expire(attempt))
        if self._slow_threshold is not None:
            self._watch_slow(attempt, self._slow_threshold)
        return True

    def _watch_slow(self, attempt: Attempt, threshold: float) -> None:
        log = functools.partial(log_slow, attempt, time.monotonic(), threshold)
        self._slow_timers[attempt] = self._scheduler.call_later(threshold, log)

    def _begin(self, attempt: Attempt) -> bool:
        if not self._ledger.begin(attempt):
            return False
        deferred = attempt.deferred
        deferred.attempted_at = now = time.time()
        if not deferred.started_at:
            deferred.started_at = now
        # A child process's pid, else this process's.
        pid = getattr(attempt.worker, "pid", None)
        deferred.worker_ids += (self._worker_id if pid is None else worker_id(pid),)
        if deferred._record is not None and self.journal is not None:
            self.journal.started(deferred)
        if _observe.observers:
            _observe.watch(attempt, deferred._observed_call(), deferred.context)
        return True

    def _timeout(self, deferred: Deferred[Any]) -> float | None:
        # Seconds an attempt may run, or None for no limit.
        timeout = deferred.options.timeout or self._config.task_timeout
        return None if timeout is None or timeout == math.inf else timeout

    def attempt_finished(self, attempt: Attempt, result: Any, error: BaseException | None) -> None:
        """An attempt ended, however it ended; ignored if its outcome was decided already."""
        if attempt.timer is not None:
            attempt.timer.cancel()
        if self._slow_threshold is not None:
            slow = self._slow_timers.pop(attempt, None)
            if slow is not None:
                slow.cancel()
        if error is None and attempt.deferred.options.keep_result:
            try:
                to_json(result)
            except ResultNotPortableError as not_portable:
                self._not_portable(attempt, not_portable)
                return
        if _observe.watched:  # told before a waiter on the handle wakes
            _observe.unwatch(attempt, attempt.deferred._observed_call(), _outcome(error), error)
        if error is None:
            decided = self._ledger.succeed(attempt, result)
        else:
            decided = self._ledger.claim(attempt)
        if not decided:
            deferred = attempt.deferred
            logger.info(
                "jumpqueue: %s [%s] attempt %d returned after it was settled; outcome discarded",
                deferred.name,
                deferred.id,
                attempt.number,
            )
        elif isinstance(error, asyncio.CancelledError):
            # Cancelled by its event loop closing, not by us: it did not get to finish.
            self._ledger.settle(attempt.deferred, Status.ABANDONED, None, error)
        elif error is not None:
            self._failed(attempt, error, Status.FAILED)

    def _not_portable(self, attempt: Attempt, error: ResultNotPortableError) -> None:
        # A kept result JSON cannot hold: no retry can make the same call return
        # something else, so it fails now.
        if _observe.watched:
            _observe.unwatch(attempt, attempt.deferred._observed_call(), "failed", error)
        if self._ledger.claim(attempt):
            attempt.deferred._failures += (_failure(error),)
            self._settle_failed(attempt, error, Status.FAILED)

    def _expire(self, attempt: Attempt) -> None:
        if not self._ledger.claim(attempt):
            return
        deferred = attempt.deferred
        self.executor(deferred.executor).expire(attempt)
        error = self._timeout_error(deferred)
        if _observe.watched:
            _observe.unwatch(attempt, deferred._observed_call(), "timed_out", error)
        self._failed(attempt, error, Status.TIMED_OUT)

    def _timeout_error(self, deferred: Deferred[Any]) -> TaskTimeoutError:
        timeout = self._timeout(deferred)
        return TaskTimeoutError(f"{deferred.name} [{deferred.id}] ran past its {timeout} s timeout")

    def _failed(self, attempt: Attempt, error: BaseException, status: Status) -> None:
        deferred = attempt.deferred
        options = deferred.options
        deferred._failures += (_failure(error),)
        if attempt.number <= options.retries and isinstance(error, options.retry_on):
            delay = options.retry_delay(attempt.number - 1)
            if not self._ledger.retry(deferred):
                return  # settled meanwhile (abandoned by a shutdown)
            logger.warning(
                "jumpqueue: %s [%s] attempt %d of %d %s (%s: %s); retrying in %.2f s",
                deferred.name,
                deferred.id,
                attempt.number,
                options.retries + 1,
                "timed out" if status is Status.TIMED_OUT else "failed",
                type(error).__name__,
                error,
                delay,
            )
            self.retry_later(delay, lambda: self.dispatch(deferred))
            return
        self._settle_failed(attempt, error, status)

    def _settle_failed(self, attempt: Attempt, error: BaseException, status: Status) -> None:
        deferred = attempt.deferred
        outcome = "timed out" if status is Status.TIMED_OUT else "failed"
        logger.error(
            "jumpqueue: %s [%s] %s after %d attempt(s)",
            deferred.name,
            deferred.id,
            outcome,
            attempt.number,
            exc_info=error if status is Status.FAILED else None,
        )
        if not isinstance(error, Exception):
            # Whoever waits on the handle must not be ended by the call's own exit.
            error = _exit_error(deferred, error)
        self._ledger.settle(deferred, status, None, error)


def _failure(error: BaseException) -> tuple[str, str]:
    failure = CallFailure.of(error)
    return failure.exception_class_path, failure.traceback


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "succeeded"
    # Cancelled by its event loop closing, not by a timeout (which tells its own end).
    return "abandoned" if isinstance(error, asyncio.CancelledError) else "failed"


def _exit_error(deferred: Deferred[Any], error: BaseException) -> TaskExitError:
    what = (
        f"called sys.exit({error.code!r})"
        if isinstance(error, SystemExit)
        else f"raised {type(error).__name__}"
    )
    failure = TaskExitError(f"{deferred.name} [{deferred.id}] {what}: the call failed")
    failure.__cause__ = error
    return failure
