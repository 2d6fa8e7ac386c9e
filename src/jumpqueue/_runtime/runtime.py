"""The runtime: a thin facade that wires its parts together and offers the public API.

Its parts, one job each: the `Ledger` (the backlog and every change of a call's
state), `Admission` (the bound and the overload policies), the `Dispatcher`
(executors, attempts, timeouts, retries), `HandOffOutcomes` (what the backend
reports), the `JournalLink` (the runtime's side of the journal) and `HeldCalls`
(what request scopes hand back). Executors, backends, the journal and request
scopes talk to those parts, never to the `Runtime`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from .. import _observe
from .._codec import check_portable
from .._config import Config, check_seconds, shown
from .._deferred import Deferred, Status
from .._exceptions import OverloadedError, RuntimeClosedError
from .._reentry import hand_over, reentered
from .._results import CallResult, from_memory
from .._scope import RequestScope, current_scope, forget_request
from .._stats import Stats
from .._tasks import (
    DEFAULT_OPTIONS,
    Task,
    callable_info,
    check_arguments,
    executor_for,
)
from ..backends import open_backend
from ..executors._base import Attempt, Executor, ExecutorHost, running_loop
from .admission import Admission, Verdict
from .dispatch import Dispatcher
from .handoff import HandOffOutcomes
from .journaling import JournalLink
from .ledger import HandOffCounts, Ledger, Leftovers
from .reporting import StatusReporter
from .requests import HeldCalls

if TYPE_CHECKING:
    from .._journal import Journal

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("jumpqueue")

#: Abandoned calls named one by one in the shutdown warning; the rest are counted.
_NAMED_IN_LOG = 20
#: Longest shutdown waits for the journal to write its last marks.
_JOURNAL_CLOSE_WAIT = 5.0


class TestingMode(Protocol):
    """How `jumpqueue.testing` runs (or records) a runtime's calls instead of its executors."""

    def accepted(self, deferred: Deferred[Any], *, held: bool) -> None:
        """A call was deferred (`held` for its request's response); admission comes next."""

    def executor(self, host: ExecutorHost) -> Executor:
        """The executor every admitted call goes to while the mode is on."""

    def retry_later(self, delay: float, again: Callable[[], None]) -> None:
        """Run a retry, due in `delay` seconds."""

    def leftovers(self) -> list[Deferred[Any]]:
        """Calls given to its executor that it never ran: abandoned when the mode ends."""


class Runtime:
    """Admits deferred calls into a bounded backlog and runs them on bounded executors.

    `jumpqueue.defer()` and friends use one default runtime; create a `Runtime`
    yourself to keep one apart (it is also a context manager that shuts down).
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else Config.from_env()
        self._build()
        atexit.register(self._shutdown_at_exit)
        _live_runtimes.add(self)

    def _build(self) -> None:
        # Everything a forked child must not share with its parent.
        config = self.config
        self._stopped = threading.Event()
        # Under a testing mode the backend is set aside: its checks still apply.
        self._check_handoff = config.check_handoff or config.backend is not None
        self._modes: list[TestingMode | None] = []
        self._mode: TestingMode | None = None
        self._ledger = ledger = Ledger(config.max_pending, config.max_queue_wait)
        self._admission = Admission(config, ledger)
        self._dispatcher = dispatcher = Dispatcher(config, ledger)
        # The journal opens its file on first use, in the process that uses it.
        self._journaling = journaling = JournalLink(config, ledger, dispatcher)
        ledger.journal = dispatcher.journal = journaling.journal
        self._held_calls = HeldCalls(ledger, dispatcher, journaling, self._stopped)
        # Backend hand-off (None: every call stays in the local pools).
        outcomes = HandOffOutcomes(config, ledger, dispatcher, journaling.journal)
        backend = open_backend(config, outcomes)
        dispatcher.open_backend(backend)
        if backend is not None:
            ledger.counters.backends[backend.name] = HandOffCounts()
        self._reporter = StatusReporter(
            config.status_dir,
            self.stats,
            dispatcher.scheduler,
            config.slow_call_threshold,
            lambda: len(ledger.in_flight),  # a read of a set's size needs no lock
        )
        if config.status_dir is not None:
            dispatcher.serving = self._reporter.start

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "closing" if self.closed else "open"
        return f"<Runtime {state} in_flight={len(self._ledger.in_flight)}>"

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def closed(self) -> bool:
        """True once shutdown has begun: `defer()` raises `RuntimeClosedError`."""
        return self._ledger.closing

    @property
    def journaled(self) -> bool:
        """True if this runtime writes the calls it accepts to a journal."""
        return self._journaling.journal is not None

    def open_journal(self, timeout: float = 10.0) -> bool:
        """Open the journal now, and take up what it holds for this process to run.

        The journal otherwise opens at the first `defer()`; a server calls this
        once a worker process has started, so that the calls a crashed process
        left behind run without waiting for new ones. True if it takes writes;
        False with no journal configured, or while it cannot be written.
        """
        journal = self._journaling.journal
        return journal is not None and journal.open(timeout)

    # -- admission -------------------------------------------------------------------------

    @overload
    def defer(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[R]: ...

    @overload
    def defer(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...

    def defer(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run `fn(*args, **kwargs)` later; see `jumpqueue.defer`."""
        if self._ledger.closing:  # before any executor is made for a call refused anyway
            raise RuntimeClosedError(f"the runtime is shut down; {shown(fn)} not accepted")
        scope = current_scope.get()
        deferred = self._handle(fn, args, kwargs, scope)
        holder = scope if scope is not None and not scope.released else None
        executor = self._executor_for(deferred)
        if executor is None:  # a signal handler's call, on top of the runtime making one
            hand_over(self._take_over, deferred, holder, None, None)
            return deferred
        journal = self._journaling.prepare(deferred)
        if self._mode is not None:
            deferred.start_at = None  # a testing mode runs (or records) delayed calls at once
            self._mode.accepted(deferred, held=holder is not None)
        if journal is not None and holder is None and reentered():
            # A signal handler's call to commit now: the journal's locks may be the
            # interrupted code's.
            hand_over(self._take_over, deferred, holder, executor, journal)
            return deferred
        refused = journal is not None and journal.refusing
        verdict = self._admission.admit(deferred, holder, refused=refused)
        if verdict is Verdict.ADMITTED and journal is None and deferred.start_at is None:
            # The common case, inline.
            if holder is None:
                executor.submit(Attempt(deferred, 1))
            elif not holder.hold(self._held_calls, deferred):  # released since we looked
                self._held_calls.release_held(deferred, run=True)
        elif verdict is Verdict.HAND_OVER:
            hand_over(self._take_over, deferred, holder, executor, journal)
        else:
            self._place(verdict, deferred, holder, executor, journal)
        return deferred

    def _handle(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scope: RequestScope | None,
    ) -> Deferred[Any]:
        # The checked call's handle, in a copy of the caller's context (minus its request's).
        if isinstance(fn, Task):
            function, options, name = fn.fn, fn.task_options, fn.name
        else:
            function, options, name = fn, DEFAULT_OPTIONS, None
        info = callable_info(function)  # checks a callable it has not seen
        check_arguments(info, args, kwargs)
        executor_name = info.executor if options.executor is None else executor_for(options, info)
        loop = running_loop() if executor_name == "async" else None
        context = contextvars.copy_context()
        if scope is not None:
            # The call runs after its request: none of the request's state goes with it.
            context.run(forget_request)
        deferred: Deferred[Any] = Deferred(
            name or info.name, function, args, kwargs, options, executor_name, context, loop
        )
        if _observe.observers:  # in the caller's context: a producer span is its child
            self._observe_deferred(deferred)
        return deferred

    def _observe_deferred(self, deferred: Deferred[Any]) -> None:
        backend = self._dispatcher.backend
        destination = (
            deferred.executor if backend is None else getattr(backend, "destination", backend.name)
        )
        deferred._observed = _observe.deferred(deferred.id, deferred.name, destination)

    def _place(
        self,
        verdict: Verdict,
        deferred: Deferred[Any],
        holder: RequestScope | None,
        executor: Executor,
        journal: Journal | None,
    ) -> None:
        # Where an admitted call goes, by the verdict of admission.
        if verdict is Verdict.ADMITTED:
            if holder is None:
                if journal is None:
                    self._dispatcher.dispatch_when_due(deferred)
                else:  # written first; on an event loop, by the journal's thread
                    self._journaling.commit_then_submit(deferred, executor)
            elif not holder.hold(self._held_calls, deferred):  # released since we looked
                self._held_calls.release_held(deferred, run=True)
        elif verdict is Verdict.INLINE:
            self._dispatcher.run_inline(deferred)
        elif verdict is Verdict.SPILL:
            if reentered():  # a signal handler's: the journal's locks may be the interrupted code's
                hand_over(self._take_over, deferred, holder, executor, journal)
            else:
                self._journaling.spill(deferred, holder, self._held_calls)

    def _take_over(
        self,
        deferred: Deferred[Any],
        holder: RequestScope | None,
        executor: Executor | None,
        journal: Journal | None,
    ) -> None:
        # On the hand-over thread: the rest of a `defer()` that a signal handler made on
        # top of the runtime's own code (see `jumpqueue._reentry`), where waiting for the
        # runtime's locks is safe. The call was accepted: whatever happens, it is counted
        # and its handle ends.
        try:
            if executor is None:
                # Not the main thread: it waits for an executor being made.
                executor = cast("Executor", self._executor_for(deferred))
                journal = self._journaling.prepare(deferred)
                if self._mode is not None:
                    self._mode.accepted(deferred, held=holder is not None)
            refused = journal is not None and journal.refusing
            verdict = self._admission.admit(deferred, holder, refused=refused)
            self._place(verdict, deferred, holder, executor, journal)
        except OverloadedError:
            pass  # shed, or not spilled: counted, and its handle says so
        except Exception as error:  # noqa: BLE001 -- the call ends, counted, with the reason
            status = Status.ABANDONED if isinstance(error, RuntimeClosedError) else Status.FAILED
            logger.warning(
                "jumpqueue: %s [%s], deferred in a signal handler, was not admitted: %s: %s",
                deferred.name,
                deferred.id,
                type(error).__name__,
                error,
            )
            self._ledger.refused(deferred, status, error)

    def _executor_for(self, deferred: Deferred[Any]) -> Executor | None:
        # Where the call's first attempt goes, once it has checked the call; None when a
        # signal handler's call must not wait for the executor being made under it.
        dispatcher = self._dispatcher
        name = deferred.executor
        executor = dispatcher.executors.get(name) or dispatcher.executor_unless_reentered(name)
        if executor is None:
            return None
        executor.validate(deferred)
        backend = dispatcher.backend
        if backend is not None:
            # Checked for both: a call the backend cannot take may fall back to the local pool.
            backend.validate(deferred)
            return backend
        if self._check_handoff:
            serializer = deferred.options.serializer or self.config.serializer
            check_portable(deferred, serializer, where="a worker of a backend")
        return executor

    @overload
    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[R]: ...

    @overload
    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run `fn(*args, **kwargs)` now, even inside a request; see `jumpqueue.submit`."""
        token = current_scope.set(None)
        try:
            return self.defer(fn, *args, **kwargs)
        finally:
            current_scope.reset(token)

    # -- observation and shutdown ------------------------------------------------------------

    def result(self, call_id: str) -> CallResult | None:
        """The outcome of the call of that id so far, or None if it is not known here.

        With a journal, any call the journal holds (written by any process that
        uses the same file), its outcome kept for `journal_retention` if its
        task says `keep_result=True`; without one, the calls of this runtime
        in flight, and the last 1000 finished ones that keep their result.
        """
        deferred = self._ledger.known(call_id)
        journal = self._journaling.journal
        # A call this runtime left to the journal may have run since, anywhere: the journal knows.
        if deferred is not None and (journal is None or deferred.status is not Status.JOURNALED):
            return from_memory(deferred)
        return None if journal is None else journal.result(call_id)

    def stats(self) -> Stats:
        """A consistent snapshot of counters and gauges."""
        ledger = self._ledger
        journal = self._journaling.journal
        with ledger.lock:
            counters = ledger.counters
            finished = counters.finished
            return Stats(
                submitted=counters.submitted,
                started=counters.started,
                succeeded=finished[Status.SUCCEEDED],
                failed=finished[Status.FAILED],
                retried=counters.retried,
                timed_out=finished[Status.TIMED_OUT],
                skipped=finished[Status.SKIPPED],
                abandoned=finished[Status.ABANDONED],
                shed={policy: count for policy, count in counters.shed.items() if count},
                inlined=counters.inlined,
                waited=counters.waited,
                held=ledger.held,
                scheduled=ledger.scheduled,
                pending=ledger.pending,
                running=ledger.running,
                workers=self._dispatcher.workers,
                stuck_threads=self._dispatcher.stuck,
                handed_off=finished[Status.HANDED_OFF],
                journaled=finished[Status.JOURNALED],
                spilled=counters.spilled,
                recovered=counters.recovered,
                journal_fallbacks=counters.journal_fallbacks,
                journal_degraded=journal is not None and journal.degraded,
                backends={
                    name: dataclasses.asdict(counts) for name, counts in counters.backends.items()
                },
            )

    def status_snapshot(self) -> dict[str, Any]:
        """This runtime in this process as plain data, for the status page and the collector.

        Reporting begins with the first call: per-task counters and histograms
        count from then on, and with `status_dir` set, the snapshot is written
        there once a second.
        """
        self._reporter.start()
        return self._reporter.snapshot()

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
        if running_loop() is not None and not self.closed:
            logger.warning(
                "jumpqueue: shutdown() blocks this event loop, so coroutines deferred on it "
                "cannot finish; use 'await runtime.ashutdown()' in async code"
            )
        leftovers = self._ledger.close(timeout, self._journaling.left_over)
        if leftovers is None:  # another caller shuts down: wait for it
            self._stopped.wait(timeout)
            return
        _log_leftovers(leftovers)
        # The timer thread stops first: no snapshot is written after the last one is folded.
        self._dispatcher.close()
        self._reporter.close()
        journal = self._journaling.journal
        if journal is not None:
            journal.close(_JOURNAL_CLOSE_WAIT)
        self._stopped.set()
        atexit.unregister(self._shutdown_at_exit)

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown()` for coroutines: waits without blocking the event loop.

        Calls running on that loop can then finish within the deadline.
        """
        await asyncio.to_thread(self.shutdown, timeout)

    # -- testing modes (see `jumpqueue.testing`) -----------------------------------------------

    @contextlib.contextmanager
    def _testing_mode(self, mode: TestingMode | None) -> Iterator[None]:
        # Calls admitted meanwhile go to the mode's executor (None: to the configured
        # ones, which suspends an outer mode); the previous mode comes back after.
        self._modes.append(self._mode)
        self._apply(mode)
        try:
            yield
        finally:
            self._apply(self._modes.pop())
            for deferred in mode.leftovers() if mode is not None else ():
                self._ledger.settle(deferred, Status.ABANDONED)

    def _apply(self, mode: TestingMode | None) -> None:
        self._mode = mode
        if mode is None:
            self._dispatcher.route(None)
        else:
            self._dispatcher.route(mode.executor(self._dispatcher), mode.retry_later)

    def _shutdown_at_exit(self) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork: the child starts over with the same configuration.
        self._reporter.detach()
        if not self.closed:
            self._build()


def _log_leftovers(leftovers: Leftovers) -> None:
    # Scheduled calls are settled without being waited for: they are named apart, so
    # that the drain's seconds are not read as the time they had.
    journaled = [d for d in leftovers.calls if d.status is not Status.ABANDONED]
    if journaled:
        logger.warning(
            "jumpqueue: shutdown after %.1f s left %d journaled call(s) in the journal "
            "for the next start",
            leftovers.waited,
            len(journaled),
        )
    abandoned = [d for d in leftovers.calls if d.status is Status.ABANDONED]
    late = [d for d in abandoned if d not in leftovers.not_due]
    early = [d for d in abandoned if d in leftovers.not_due]
    if late:
        logger.warning(
            "jumpqueue: shutdown after %.1f s abandoned %d call(s): %s",
            leftovers.waited,
            len(late),
            _named(late),
        )
    if early:
        logger.warning(
            "jumpqueue: shutdown abandoned %d scheduled call(s) not yet due: %s",
            len(early),
            _named(early),
        )


def _named(calls: list[Deferred[Any]]) -> str:
    more = len(calls) - _NAMED_IN_LOG
    named = ", ".join(f"{d.name} [{d.id}]" for d in calls[:_NAMED_IN_LOG])
    return named + (f" and {more} more" if more > 0 else "")


_live_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _reset_runtimes_after_fork() -> None:
    for runtime in list(_live_runtimes):
        runtime._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_runtimes_after_fork)
