"""The runtime: admission against a bounded backlog, dispatch to executors, outcomes, shutdown."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import math
import os
import random
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _intercept
from ._config import Config, check_seconds
from ._deferred import Deferred, Status, is_live
from ._exceptions import (
    ConfigurationError,
    HandOffError,
    InvalidCallError,
    OverloadedError,
    RuntimeClosedError,
    TaskNotRunError,
    TaskTimeoutError,
)
from ._ratelimit import RateLimitedLog
from ._scheduler import Scheduler
from ._scope import current_scope
from ._stats import Stats
from ._tasks import DEFAULT_OPTIONS, Task, callable_info, check_arguments, check_callable
from .backends import open_backend
from .executors import EXECUTORS
from .executors._base import Attempt, Executor, running_loop

if TYPE_CHECKING:
    from ._journal import Journal
    from ._scope import RequestScope

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("jumpqueue")

_COUNTERS = (
    "submitted",
    "started",
    "retried",
    "waited",
    "inlined",
    "shed_drop",
    "shed_reject",
    "spilled",
    "recovered",
    "journal_fallbacks",
    *(status.value for status in Status if status.final),
)
# What _admit decided.
_ADMITTED, _INLINE, _SHED, _SPILL = "admitted", "inline", "shed", "spill"
#: Longest wait between two retries, whatever the backoff doubles to.
MAX_RETRY_DELAY = 300.0
#: Abandoned calls named one by one in the shutdown warning; the rest are counted.
_NAMED_IN_LOG = 20
#: Longest shutdown waits for the journal to write its last marks.
_JOURNAL_CLOSE_WAIT = 5.0
#: Per-backend counters in `stats().backends`.
_HANDOFF_COUNTERS = ("handed_off", "handoff_failures", "handoff_fallbacks")
#: What a failed hand-off's log line says happens to the call, by fallback.
_FALLBACK_TEXT = {"local": "running it locally", "raise": "failing it (on_handoff_error='raise')"}


class Runtime:
    """Admits deferred calls into a bounded backlog and runs them on bounded executors.

    `jumpqueue.defer()` and friends use one default runtime; create a `Runtime`
    yourself to keep one apart (it is also a context manager that shuts down).
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else Config.from_env()
        self._reset()
        atexit.register(self._shutdown_at_exit)
        _live_runtimes.add(self)

    def _reset(self) -> None:
        # Everything a forked child must not share with its parent.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a slot in the backlog freed up
        self._drained = threading.Condition(self._lock)  # nothing is in flight any more
        self._in_flight: set[Deferred[Any]] = set()
        self._held = self._pending = self._running = 0
        self._waiting_for_room = 0
        self._counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._executors: dict[str, Executor] = {}
        self._scheduler = Scheduler()
        self._closing = False
        self._stopped = threading.Event()
        self._shed_log = RateLimitedLog(logger, interval=10.0)
        self._loop_wait_log = RateLimitedLog(logger, interval=60.0)
        # Backend hand-off (None: every call stays in the local pools).
        self._backend = open_backend(self.config, self)
        self._handoff_counts: dict[str, dict[str, int]] = {}
        if self._backend is not None:
            self._handoff_counts[self._backend.name] = dict.fromkeys(_HANDOFF_COUNTERS, 0)
        self._fallback_log = RateLimitedLog(logger, interval=10.0)
        # The journal opens its file on first use, in the process that uses it.
        self._journal: Journal | None = None
        if self.config.journal is not None:
            from ._journal import Journal  # noqa: PLC0415 -- sqlite3 only for those who journal

            self._journal = Journal(self.config, self)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "closing" if self._closing else "open"
        return f"<Runtime {state} in_flight={len(self._in_flight)}>"

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def closed(self) -> bool:
        """True once shutdown has begun: `defer()` raises `RuntimeClosedError`."""
        return self._closing

    # -- admission -------------------------------------------------------------------------

    @overload
    def defer(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[R]: ...

    @overload
    def defer(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...

    def defer(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run `fn(*args, **kwargs)` later; see `jumpqueue.defer`."""
        if self._closing:  # before any executor is made for a call that is refused anyway
            raise RuntimeClosedError(f"the runtime is shut down; {fn!r} not accepted")
        if isinstance(fn, Task):
            function, options, name = fn.fn, fn.task_options, fn.name
        else:
            check_callable(fn)
            function, options, name = fn, DEFAULT_OPTIONS, None
        info = callable_info(function)
        check_arguments(info, args, kwargs)
        executor_name = options.executor or ("async" if info.is_coroutine else "thread")
        loop = None
        if executor_name == "async":
            if not info.is_coroutine:
                raise InvalidCallError(
                    f"executor='async' needs a coroutine function; {info.name} is not one"
                )
            loop = running_loop()
        scope = current_scope.get()
        context = contextvars.copy_context()
        if scope is not None:
            # The call runs after its request: calls it defers in turn are not held.
            context.run(current_scope.set, None)
        deferred: Deferred[Any] = Deferred(
            name or info.name, function, args, kwargs, options, executor_name, context, loop
        )
        executor = self._executors.get(executor_name) or self._executor(executor_name)
        executor.validate(deferred)
        if self._backend is not None:
            # Checked for both: a call the backend cannot take may fall back to the local pool.
            self._backend.validate(deferred)
            executor = self._backend
        journal = self._prepare_journal(deferred)
        interceptor = _intercept.active
        if interceptor is not None:
            return interceptor(deferred)
        holder = scope if scope is not None and not scope.released else None
        refused = journal is not None and journal.refusing
        outcome = self._admit(deferred, hold=holder is not None, refused=refused)
        if outcome is _ADMITTED:
            if holder is None:
                self._journal_commit([deferred])
                executor.submit(Attempt(deferred, 1))
            elif not holder.hold(self, deferred):  # released since we looked
                self.release_held(deferred, run=True)
        elif outcome is _INLINE:
            self._run_inline(deferred)
        elif outcome is _SPILL:
            self._spill(deferred, holder)
        return deferred

    def _admit(self, deferred: Deferred[Any], *, hold: bool, refused: bool = False) -> str:
        config = self.config
        counts = self._counts
        with self._lock:
            if self._closing:
                raise RuntimeClosedError(f"the runtime is shut down; {deferred.name} not accepted")
            if len(self._in_flight) < config.max_pending and not refused:
                self._enter(deferred, hold=hold)
                return _ADMITTED
            policy = self._overloaded(deferred, refused=refused)
            if policy == "spill":
                return _SPILL  # counted with its outcome, once written
            if policy == "wait":  # and room was found
                counts["waited"] += 1
                self._enter(deferred, hold=hold)
                return _ADMITTED
            if policy == "inline":
                counts["inlined"] += 1
                self._enter(deferred, hold=False)
                return _INLINE
            counts["submitted"] += 1
            counts[f"shed_{policy}"] += 1
            deferred._resolve(Status.SHED, None, None)
        self._shed_log.warning(
            "jumpqueue: backlog full (max_pending=%d): %s call %s [%s]",
            config.max_pending,
            "rejected" if policy == "reject" else "dropped",
            deferred.name,
            deferred.id,
        )
        if policy == "reject":
            raise OverloadedError(
                f"backlog full (max_pending={config.max_pending}); "
                f"{deferred.name} [{deferred.id}] rejected",
                retry_after=max(1.0, config.overload_wait),
            )
        return _SHED

    def _enter(self, deferred: Deferred[Any], *, hold: bool) -> None:
        # Called with the lock held: the call is accepted, held for its request or pending.
        self._counts["submitted"] += 1
        self._in_flight.add(deferred)
        if hold:
            self._held += 1
            deferred._status = Status.HELD
        else:
            self._pending += 1

    def _overloaded(self, deferred: Deferred[Any], *, refused: bool = False) -> str:
        # Called with the lock held and the backlog full (or the journal refusing, which
        # neither waiting for room nor spilling can help): the policy that applies now.
        policy = deferred.options.on_overload or self.config.on_overload
        if refused and policy in ("wait", "spill"):
            return "reject"
        if policy != "wait":
            return policy
        if running_loop() is not None:
            # Blocking an event loop would freeze the whole application.
            self._loop_wait_log.warning(
                "jumpqueue: the 'wait' overload policy cannot block an event loop; "
                "rejecting instead"
            )
            return "reject"
        self._waiting_for_room += 1
        try:
            room = self._room.wait_for(
                lambda: self._closing or len(self._in_flight) < self.config.max_pending,
                timeout=self.config.overload_wait,
            )
        finally:
            self._waiting_for_room -= 1
        if self._closing:
            raise RuntimeClosedError(f"the runtime shut down while {deferred.name} waited")
        return "wait" if room else "reject"

    def _prepare_journal(self, deferred: Deferred[Any]) -> Journal | None:
        # Encode the call for the journal now, so that bad input fails in the caller.
        journal = self._journal
        if journal is not None:
            journal.prepare(deferred)
        elif deferred.options.on_overload == "spill":
            raise ConfigurationError(
                f"{deferred.name}: on_overload='spill' writes calls to the journal, and "
                "none is configured (journal='path/to/file.db')"
            )
        return journal

    def _spill(self, deferred: Deferred[Any], holder: RequestScope | None) -> None:
        # The backlog is full and the policy spills: the call goes to the journal, to run
        # when there is room (in a request: once the request has succeeded).
        journal, record = self._journal, deferred._record
        written = (
            journal is not None
            and record is not None
            and journal.spill(record, held=holder is not None)
        )
        with self._lock:
            self._counts["submitted"] += 1
            if written:
                self._counts["spilled"] += 1
                self._counts["journaled"] += 1
                deferred._resolve(Status.JOURNALED, None, None)
            else:
                self._counts["journal_fallbacks"] += 1
                self._counts["shed_reject"] += 1
                deferred._resolve(Status.SHED, None, None)
        if not written:
            raise OverloadedError(
                f"backlog full (max_pending={self.config.max_pending}) and the journal "
                f"cannot be written; {deferred.name} [{deferred.id}] rejected",
                retry_after=max(1.0, self.config.overload_wait),
            )
        if holder is not None and not holder.hold(self, deferred):
            self.release_held(deferred, run=True)

    def seal_held(self, deferreds: list[Deferred[Any]]) -> None:
        """Write held calls to the journal in one transaction (a request's group commit).

        `RequestScope.seal()` calls it just before the response's last byte is
        handed to the server; without a journal it does nothing.
        """
        if self._journal is not None:
            self._journal_commit([d for d in deferreds if d._status is Status.HELD])

    def _journal_commit(self, deferreds: list[Deferred[Any]]) -> None:
        journal = self._journal
        records = [
            record
            for record in (deferred._record for deferred in deferreds)
            if record is not None and not record.written
        ]
        if journal is not None and records:
            unwritten = journal.commit(records)
            if unwritten:  # they run without it (on_journal_error="memory", or too late)
                with self._lock:
                    self._counts["journal_fallbacks"] += unwritten

    def _run_inline(self, deferred: Deferred[Any]) -> None:
        if deferred.loop is not None:
            # A coroutine cannot run to completion inside its caller's running loop:
            # it goes to that loop past the backlog bound instead.
            self._dispatch(deferred)
            return
        attempt = Attempt(deferred, 1)
        if self.attempt_started(attempt):
            try:
                result = attempt.call()
            except BaseException as error:
                self.attempt_finished(attempt, None, error)
                if not isinstance(error, Exception):
                    raise  # the caller's own KeyboardInterrupt or SystemExit
            else:
                self.attempt_finished(attempt, result, None)

    # -- dispatch and outcomes ---------------------------------------------------------------

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

    # -- backend hand-off (the backend's sender thread calls these) ---------------------------

    def handed_off(self, attempt: Attempt, backend: str) -> None:
        """The backend's engine has the call: it is final here, as "handed_off"."""
        deferred = attempt.deferred
        with self._lock:
            self._handoff_counts[backend]["handed_off"] += 1
            late = deferred._status is not Status.PENDING
            if not late:
                error = TaskNotRunError(
                    f"{deferred.name} [{deferred.id}] was handed off to {backend}; its outcome "
                    f"is {backend}'s, under the same id",
                    status=Status.HANDED_OFF.value,
                )
                self._settle_locked(deferred, Status.HANDED_OFF, None, error)
        if late:
            logger.warning(
                "jumpqueue: %s [%s] reached %s after it was %s here",
                deferred.name,
                deferred.id,
                backend,
                deferred.status,
            )
        else:
            deferred._notify()

    def handoff_failed(
        self, attempt: Attempt, backend: str, error: BaseException, *, sent: bool
    ) -> None:
        """The backend could not take the call: apply its fallback ("local", "journal", "raise")."""
        deferred = attempt.deferred
        policy = deferred.options.on_handoff_error or self.config.on_handoff_error
        with self._lock:
            counts = self._handoff_counts[backend]
            counts["handoff_failures"] += sent
            if deferred._status is not Status.PENDING:
                return  # settled meanwhile (abandoned by a shutdown)
            counts["handoff_fallbacks"] += 1
        then = _FALLBACK_TEXT.get(policy, "")
        if policy == "journal":
            delay = self._spill_handoff(deferred)
            if delay is not None:
                then = f"journaled it, to try again in {delay:.1f} s"
            else:
                policy = "local"
                then = "running it locally: on_handoff_error='journal' but " + (
                    "no journal is configured"
                    if self._journal is None
                    else "the journal cannot be written"
                )
        self._fallback_log.warning(
            "jumpqueue: %s [%s] not handed off to %s (%s: %s); %s",
            deferred.name,
            deferred.id,
            backend,
            type(error).__name__,
            error,
            then,
        )
        if policy == "journal":
            with self._lock:
                if is_live(deferred._status):  # else a shutdown left it in the journal meanwhile
                    self._settle_locked(deferred, Status.JOURNALED, None, None)
            deferred._notify()
            return
        if policy == "local":
            self._executor(deferred.executor).submit(Attempt(deferred, 1))
            return
        failure = HandOffError(
            f"{deferred.name} [{deferred.id}] could not be handed off to {backend}: "
            f"{type(error).__name__}: {error}",
            backend=backend,
        )
        failure.__cause__ = error
        self._settle(deferred, Status.FAILED, None, failure)

    def _spill_handoff(self, deferred: Deferred[Any]) -> float | None:
        """Give a call its backend could not take back to the journal, to forward it later.

        The journal keeps it pending for a back-off that grows with each failed
        hand-off of the call; the runtime that then takes it up dispatches it
        again, and `_dispatch()` forwards a never-started call to the backend.
        Returns the back-off in seconds, or None when there is no journal, or it
        cannot take the call now (the caller runs it locally).
        """
        journal, record = self._journal, deferred._record
        if journal is None or record is None:
            return None
        return journal.hand_back(record)

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

    # -- the journal -------------------------------------------------------------------------

    @property
    def journaled(self) -> bool:
        """True if this runtime writes the calls it accepts to a journal."""
        return self._journal is not None

    def open_journal(self, timeout: float = 10.0) -> bool:
        """Open the journal now, and take up what it holds for this process to run.

        The journal otherwise opens at the first `defer()`; a server calls this
        once a worker process has started, so that the calls a crashed process
        left behind run without waiting for new ones. True if it takes writes;
        False with no journal configured, or while it cannot be written.
        """
        return self._journal is not None and self._journal.open(timeout)

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal here; False if the runtime is shutting down.

        Raises:
            InvalidCallError: its executor cannot run it.
        """
        self._executor(deferred.executor).validate(deferred)
        with self._lock:
            if self._closing:
                return False
            self._counts["submitted"] += 1
            self._counts["recovered"] += 1
            self._in_flight.add(deferred)
            self._pending += 1
        self._dispatch(deferred)
        return True

    def journal_room(self) -> int:
        """Calls the backlog can take now (the journal takes up no more than that)."""
        with self._lock:
            return 0 if self._closing else self.config.max_pending - len(self._in_flight)

    # -- observation and shutdown ------------------------------------------------------------

    def stats(self) -> Stats:
        """A consistent snapshot of counters and gauges."""
        with self._lock:
            counts = self._counts
            return Stats(
                submitted=counts["submitted"],
                started=counts["started"],
                succeeded=counts["succeeded"],
                failed=counts["failed"],
                retried=counts["retried"],
                timed_out=counts["timed_out"],
                skipped=counts["skipped"],
                abandoned=counts["abandoned"],
                shed={
                    policy: counts[f"shed_{policy}"]
                    for policy in ("drop", "reject")
                    if counts[f"shed_{policy}"]
                },
                inlined=counts["inlined"],
                waited=counts["waited"],
                held=self._held,
                pending=self._pending,
                running=self._running,
                workers=sum(executor.workers for executor in self._executors.values()),
                stuck_threads=sum(executor.stuck for executor in self._executors.values()),
                handed_off=counts["handed_off"],
                journaled=counts["journaled"],
                spilled=counts["spilled"],
                recovered=counts["recovered"],
                journal_fallbacks=counts["journal_fallbacks"],
                journal_degraded=self._journal is not None and self._journal.degraded,
                backends={name: dict(values) for name, values in self._handoff_counts.items()},
            )

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop admitting, drain for up to `timeout` seconds, then abandon the rest.

        `timeout` defaults to `shutdown_timeout`. What is abandoned is counted
        and logged. Idempotent and safe from any thread; a second caller waits
        for the first.

        Raises:
            ConfigurationError: timeout is negative.
        """
        if timeout is None:
            timeout = self.config.shutdown_timeout
        check_seconds("timeout", timeout, allow_zero=True)
        if running_loop() is not None and not self._closing:
            logger.warning(
                "jumpqueue: shutdown() blocks this event loop, so coroutines deferred on it "
                "cannot finish; use 'await runtime.ashutdown()' in async code"
            )
        with self._lock:
            first = not self._closing
            self._closing = True
            self._room.notify_all()
            if first:
                self._drained.wait_for(lambda: not self._in_flight, timeout)
                leftovers = list(self._in_flight)
                for deferred in leftovers:
                    self._settle_locked(deferred, self._left_over(deferred), None, None)
        if not first:
            self._stopped.wait(timeout)
            return
        for deferred in leftovers:
            deferred._notify()
        abandoned = [d for d in leftovers if d._status is Status.ABANDONED]
        if len(abandoned) < len(leftovers):
            logger.warning(
                "jumpqueue: shutdown after %.1f s left %d journaled call(s) in the journal "
                "for the next start",
                timeout,
                len(leftovers) - len(abandoned),
            )
        if abandoned:
            logger.warning(
                "jumpqueue: shutdown after %.1f s abandoned %d call(s): %s",
                timeout,
                len(abandoned),
                ", ".join(f"{d.name} [{d.id}]" for d in abandoned[:_NAMED_IN_LOG])
                + (
                    f" and {len(abandoned) - _NAMED_IN_LOG} more"
                    if len(abandoned) > _NAMED_IN_LOG
                    else ""
                ),
            )
        self._scheduler.stop()
        if self._backend is not None:
            self._backend.close()
        for executor in list(self._executors.values()):
            executor.close()
        if self._journal is not None:
            self._journal.close(_JOURNAL_CLOSE_WAIT)
        self._stopped.set()
        atexit.unregister(self._shutdown_at_exit)

    def _left_over(self, deferred: Deferred[Any]) -> Status:
        # Called with the lock held at shutdown: a journaled call stays for the next start.
        record = deferred._record
        if record is None or not record.written or self._journal is None:
            return Status.ABANDONED
        self._journal.left_over(record, running=deferred._status is Status.RUNNING)
        return Status.JOURNALED

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown()` for coroutines: waits without blocking the event loop.

        Calls running on that loop can then finish within the deadline.
        """
        await asyncio.to_thread(self.shutdown, timeout)

    def _shutdown_at_exit(self) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork: the child starts over with the same configuration.
        if not self._closing:
            self._reset()


_live_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _reset_runtimes_after_fork() -> None:
    for runtime in list(_live_runtimes):
        runtime._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_runtimes_after_fork)
