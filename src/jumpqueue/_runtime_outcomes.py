"""Dispatching admitted calls and settling them: attempts start, end, time out, retry."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from typing import TYPE_CHECKING, Any

from ._deferred import Deferred, Status, is_live
from ._exceptions import TaskTimeoutError
from .executors import EXECUTORS
from .executors._base import Attempt, Executor

if TYPE_CHECKING:
    from ._config import Config
    from ._journal import Journal
    from ._scheduler import Scheduler

logger = logging.getLogger("jumpqueue")

#: Longest wait between two retries, whatever the backoff doubles to.
MAX_RETRY_DELAY = 300.0


class RuntimeOutcomes:
    """The part of `Runtime` that runs admitted calls and settles them; the executors report here.

    The attributes below are the runtime's shared state, which `Runtime._reset()`
    sets up; they are declared here, in the base of the runtime's parts, so that
    each part is type-checked against them.
    """

    config: Config
    _lock: threading.Lock
    _room: threading.Condition
    _drained: threading.Condition
    _in_flight: set[Deferred[Any]]
    _held: int
    _pending: int
    _running: int
    _waiting_for_room: int
    _counts: dict[str, int]
    _executors: dict[str, Executor]
    _scheduler: Scheduler
    _closing: bool
    _stopped: threading.Event
    _backend: Executor | None
    _journal: Journal | None

    def release_held(self, deferred: Deferred[Any], *, run: bool) -> None:
        """Hand over (or skip) a call its request scope held; never blocks."""
        if deferred._status is Status.JOURNALED:  # spilled during the request
            if self._journal is not None and deferred._record is not None:
                self._journal.release_spilled(deferred._record, run=run)
            return
        with self._lock:
            if deferred.status is not Status.HELD:
                return  # abandoned by shutdown meanwhile
            dispatch = run and not self._stopped.is_set()
            if dispatch:
                self._move(deferred, Status.PENDING)
            else:
                final = Status.SKIPPED if not run else Status.ABANDONED
                self._settle_locked(deferred, final, None, None)
        if dispatch:
            self._dispatch(deferred)
        else:
            deferred._notify()
            logger.info("jumpqueue: %s [%s] %s", deferred.name, deferred.id, deferred.status)

    def _dispatch(self, deferred: Deferred[Any]) -> None:
        if self._backend is not None and deferred.attempts == 0:
            # A call that fell back and started here retries here.
            self._backend.submit(Attempt(deferred, 1))
            return
        self._executor(deferred.executor).submit(Attempt(deferred, deferred.attempts + 1))

    def attempt_started(self, attempt: Attempt) -> bool:
        """Executors call this when an attempt begins; False means skip it."""
        deferred = attempt.deferred
        with self._lock:
            if attempt.settled or deferred._status is not Status.PENDING:
                return False
            deferred.attempts += 1
            self._counts["started"] += 1
            self._pending -= 1
            self._running += 1
            deferred._status = Status.RUNNING
        if deferred._record is not None and self._journal is not None:
            self._journal.started(deferred._record)
        timeout = deferred.options.timeout or self.config.task_timeout
        if timeout is not None and timeout != math.inf:
            attempt.timer = self._scheduler.call_later(timeout, lambda: self._expire(attempt))
        return True

    def attempt_finished(self, attempt: Attempt, result: Any, error: BaseException | None) -> None:
        """Executors call this when an attempt ends, however it ended."""
        deferred = attempt.deferred
        if attempt.timer is not None:
            attempt.timer.cancel()
        with self._lock:
            late = attempt.settled or deferred._status is not Status.RUNNING
            attempt.settled = True
            if not late and error is None:
                self._settle_locked(deferred, Status.SUCCEEDED, result, None)
        if late:
            logger.info(
                "jumpqueue: %s [%s] attempt %d returned after it was settled; outcome discarded",
                deferred.name,
                deferred.id,
                attempt.number,
            )
        elif error is None:
            deferred._notify()
        elif isinstance(error, asyncio.CancelledError):
            # Cancelled by its event loop closing, not by us: it did not get to finish.
            self._settle(deferred, Status.ABANDONED, None, error)
        else:
            self._failed(attempt, error, Status.FAILED)

    def _expire(self, attempt: Attempt) -> None:
        deferred = attempt.deferred
        with self._lock:
            if attempt.settled or deferred._status is not Status.RUNNING:
                return
            attempt.settled = True
        self._executor(deferred.executor).expire(attempt)
        timeout = deferred.options.timeout or self.config.task_timeout
        error = TaskTimeoutError(
            f"{deferred.name} [{deferred.id}] ran past its {timeout} s timeout"
        )
        self._failed(attempt, error, Status.TIMED_OUT)

    def _failed(self, attempt: Attempt, error: BaseException, status: Status) -> None:
        deferred = attempt.deferred
        options = deferred.options
        if attempt.number <= options.retries and isinstance(error, options.retry_on):
            delay = min(options.retry_backoff * 2 ** (attempt.number - 1), MAX_RETRY_DELAY)
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not cryptography
            with self._lock:
                if deferred._status is not Status.RUNNING:
                    return  # settled meanwhile (abandoned by a shutdown)
                self._counts["retried"] += 1
                self._move(deferred, Status.PENDING)
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
            self._scheduler.call_later(delay, lambda: self._dispatch(deferred))
            return
        logger.error(
            "jumpqueue: %s [%s] %s after %d attempt(s)",
            deferred.name,
            deferred.id,
            "timed out" if status is Status.TIMED_OUT else "failed",
            attempt.number,
            exc_info=error if status is Status.FAILED else None,
        )
        self._settle(deferred, status, None, error)

    def _settle(
        self, deferred: Deferred[Any], status: Status, result: Any, error: BaseException | None
    ) -> None:
        with self._lock:
            settled = self._settle_locked(deferred, status, result, error)
        if settled:
            deferred._notify()

    def _settle_locked(
        self, deferred: Deferred[Any], status: Status, result: Any, error: BaseException | None
    ) -> bool:
        # Called with the lock held; the caller notifies the handle's waiters after.
        # False if the call was final already: whoever settled it first decided.
        if not is_live(deferred._status):
            return False
        self._move(deferred, status)
        deferred._resolve(status, result, error)
        if deferred._record is not None and self._journal is not None:
            self._journal.settled(deferred._record, status, error)
        return True

    def _move(self, deferred: Deferred[Any], status: Status) -> None:
        # Called with the lock held: the one place gauges and final counters change.
        previous = deferred._status
        if previous is Status.PENDING:
            self._pending -= 1
        elif previous is Status.RUNNING:
            self._running -= 1
        elif previous is Status.HELD:
            self._held -= 1
        if status is Status.PENDING:
            self._pending += 1
        elif is_live(status):  # pragma: no cover -- only PENDING is ever re-entered
            raise AssertionError(status)
        else:
            self._counts[status.value] += 1
            self._in_flight.discard(deferred)
            # Notifying a Condition costs even without waiters: only wake real ones.
            if self._waiting_for_room:
                self._room.notify()
            if self._closing and not self._in_flight:
                self._drained.notify_all()
        deferred._status = status

    def _executor(self, name: str) -> Executor:
        executor = self._executors.get(name)
        if executor is None:
            with self._lock:
                executor = self._executors.get(name)
                if executor is None:
                    executor = EXECUTORS[name](self.config, self)
                    self._executors[name] = executor
        return executor
