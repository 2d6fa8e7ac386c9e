"""The runtime: admission against a bounded backlog, statistics, shutdown; the rest in its parts."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _intercept
from ._config import Config, check_seconds
from ._deferred import Deferred, Status
from ._exceptions import InvalidCallError, OverloadedError, RuntimeClosedError
from ._ratelimit import RateLimitedLog
from ._runtime_handoff import RuntimeHandOff
from ._runtime_journal import RuntimeJournaling
from ._scheduler import Scheduler
from ._scope import current_scope
from ._stats import Stats
from ._tasks import DEFAULT_OPTIONS, Task, callable_info, check_arguments, check_callable
from .backends import open_backend
from .executors._base import Attempt, running_loop

if TYPE_CHECKING:
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
#: Abandoned calls named one by one in the shutdown warning; the rest are counted.
_NAMED_IN_LOG = 20
#: Longest shutdown waits for the journal to write its last marks.
_JOURNAL_CLOSE_WAIT = 5.0
#: Per-backend counters in `stats().backends`.
_HANDOFF_COUNTERS = ("handed_off", "handoff_failures", "handoff_fallbacks")


class Runtime(RuntimeHandOff, RuntimeJournaling):
    """Admits deferred calls into a bounded backlog and runs them on bounded executors.

    `jumpqueue.defer()` and friends use one default runtime; create a `Runtime`
    yourself to keep one apart (it is also a context manager that shuts down).
    """

    # Its parts are base classes, not objects it owns, so that each call on the hot
    # path (defer, attempt_started, attempt_finished) stays one call, not a delegation:
    # `RuntimeOutcomes` (dispatch, outcomes, retries) under `RuntimeJournaling` and
    # `RuntimeHandOff`. All share the state `_reset()` sets up.

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
        self._in_flight = set()
        self._held = self._pending = self._running = 0
        self._waiting_for_room = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._executors = {}
        self._scheduler = Scheduler()
        self._closing = False
        self._stopped = threading.Event()
        self._shed_log = RateLimitedLog(logger, interval=10.0)
        self._loop_wait_log = RateLimitedLog(logger, interval=60.0)
        # Backend hand-off (None: every call stays in the local pools).
        self._backend = open_backend(self.config, self)
        self._handoff_counts = {}
        if self._backend is not None:
            self._handoff_counts[self._backend.name] = dict.fromkeys(_HANDOFF_COUNTERS, 0)
        self._fallback_log = RateLimitedLog(logger, interval=10.0)
        # The journal opens its file on first use, in the process that uses it.
        self._journal = None
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
        if executor_name == "async" and not info.is_coroutine:
            raise InvalidCallError(
                f"executor='async' needs a coroutine function; {info.name} is not one"
            )
        loop = running_loop() if executor_name == "async" else None
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

    # -- what the "spill" and "inline" overload policies do with a call -------------------

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
