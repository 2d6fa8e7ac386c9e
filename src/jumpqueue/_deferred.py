"""The handle `defer()` returns: identity, status, and a way to wait for the outcome."""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import _observe
from ._exceptions import TaskNotRunError, TaskTimeoutError, WaitDeadlockError

if TYPE_CHECKING:
    import contextvars

    from ._choices import ExecutorName
    from ._journal import Record
    from ._tasks import TaskOptions

R = TypeVar("R")


class Status(str, enum.Enum):
    """Where a deferred call is in its life; every status after RUNNING is final.

    SCHEDULED: admitted, waiting for its time (`delay`, `run_after`); it
    becomes PENDING when due.

    HANDED_OFF is final for this process: the call went to a distributed engine
    (`backend=`), which now owns its outcome.
    """

    HELD = "held"
    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SHED = "shed"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"
    JOURNALED = "journaled"
    HANDED_OFF = "handed_off"

    # Hashed as its value, in C: Enum's own __hash__ is Python code, and the ledger counts
    # every call that ends in a dict keyed by status.
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """True for a status a call never leaves."""
        return not is_live(self)


#: The statuses of a call that is not final yet (a set lookup, in C: statuses hash as str).
LIVE = frozenset((Status.HELD, Status.SCHEDULED, Status.PENDING, Status.RUNNING))


def is_live(status: Status) -> bool:
    """True while a call is held, scheduled, pending or running."""
    return status in LIVE


_NOT_RUN = (Status.SHED, Status.SKIPPED, Status.ABANDONED, Status.JOURNALED)
# Waiting is rare next to deferring, so a handle creates its Event only when waited on.
_events_lock = threading.Lock()
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter  # noqa: PLW0603 -- ids must differ between forked processes
    _id_prefix = os.urandom(8).hex()
    _id_counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_prefix)


class Holder(Protocol):
    """What holds a call until its request's response has been sent (a request scope)."""

    def is_current(self) -> bool:
        """True while the code asking runs inside that request, before its release."""


class Deferred(Generic[R]):
    """One deferred call: its id, its status, and its outcome once it has one.

    Attributes:
        id: a unique id (a random per-process prefix and a counter), stable across retries.
        name: the task's name (by default the function's import path).
        options: the task options in force for this call.
        attempts: how many times the call has started.
        enqueued_at, started_at, attempted_at, finished_at: `time.time()` when
            the call was deferred, when its first and its last attempt started,
            when it became final (0.0: not yet).
        start_at: `time.time()` before which it may not start (`delay`,
            `run_after`), or None.
    """

    __slots__ = (
        "_done",
        "_exception",
        "_failures",
        "_holder",
        "_observed",
        "_record",
        "_result",
        "_status",
        "args",
        "attempted_at",
        "attempts",
        "context",
        "enqueued_at",
        "executor",
        "finished_at",
        "fn",
        "id",
        "kwargs",
        "loop",
        "name",
        "options",
        "start_at",
        "started_at",
        "worker_ids",
    )

    def __init__(  # noqa: PLR0917 -- on the defer() hot path, positional is cheaper
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        executor: ExecutorName,
        context: contextvars.Context | None,
        loop: asyncio.AbstractEventLoop | None = None,
        call_id: str | None = None,
    ) -> None:
        self.id = f"{_id_prefix}{next(_id_counter):08x}" if call_id is None else call_id
        self.name = name
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.executor = executor
        self.context = context
        self.loop = loop
        self.attempts = 0
        self.enqueued_at = time.time()
        self.started_at = self.attempted_at = self.finished_at = 0.0
        self.start_at: float | None = (
            None if options.delay is None and options.run_after is None else options.start_at()
        )
        #: Who ran each attempt ("host:pid"), and how each failed attempt failed.
        self.worker_ids: tuple[str, ...] = ()
        self._failures: tuple[tuple[str, str], ...] = ()
        self._status = Status.PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done: threading.Event | None = None
        #: The call as the journal stores it, when the runtime has a journal.
        self._record: Record | None = None
        #: The request scope that holds the call until its response is sent, if any.
        self._holder: Holder | None = None
        #: The call as observers see it, once one has (see `jumpqueue.integration.add_observer`).
        self._observed: _observe.ObservedCall | None = None

    def __repr__(self) -> str:
        return f"<Deferred {self.id} {self.name} {self._status.value}>"

    @property
    def status(self) -> Status:
        """The current status."""
        return self._status

    def done(self) -> bool:
        """True once the call has reached a final status."""
        return self._status not in LIVE

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the call is final or `timeout` seconds pass; True if final.

        Raises:
            WaitDeadlockError: the wait could never end: the call is held for
                the response of the request that waits, or runs on the event
                loop the wait would block.
        """
        if self._status not in LIVE:
            return True
        self._refuse_held_wait()
        loop = self.loop
        if loop is not None and _running_loop() is loop:
            raise WaitDeadlockError(
                f"{self.name} [{self.id}] runs on this event loop, which waiting for it "
                "here would block; use 'await handle.aresult()' in a coroutine"
            )
        return self._wait(timeout)

    async def aresult(self, timeout: float | None = None) -> R:
        """`result()` for coroutines: waits without blocking the event loop.

        Raises:
            WaitDeadlockError: the call is held for the response of the request that waits.
            TimeoutError: the call was not final within `timeout`.
            Exception: as `result()`.
        """
        if self._status in LIVE:
            self._refuse_held_wait()
            if not await asyncio.to_thread(self._wait, timeout):
                raise TimeoutError(f"{self!r} is not finished after {timeout} s")
        return self.result(0)

    def _refuse_held_wait(self) -> None:
        holder = self._holder
        if self._status is Status.HELD and holder is not None and holder.is_current():
            raise WaitDeadlockError(
                f"{self.name} [{self.id}] is held until the response of the request that "
                "deferred it has been sent, which cannot happen while this request waits "
                "for it; use jumpqueue.submit() to run a call now and wait for it"
            )

    def _wait(self, timeout: float | None) -> bool:
        with _events_lock:
            if self._done is None:
                self._done = threading.Event()
            done = self._done
        # _notify reads _done without the lock, after the final status is set:
        # checking the status again after publishing the event closes the gap.
        if self._status not in LIVE:
            return True
        return done.wait(timeout)

    def result(self, timeout: float | None = None) -> R:
        """The call's return value, waiting up to `timeout` seconds for it.

        Raises:
            TimeoutError: the call was not final within `timeout`.
            WaitDeadlockError: the wait could never end (see `wait()`).
            TaskTimeoutError: the call ran past its own timeout.
            TaskNotRunError: the call was shed, skipped or abandoned; or it was
                journaled (status "journaled": it runs from the journal, which
                records its outcome); or it was handed off to a backend (status
                "handed_off"), whose engine holds its outcome, under the same id.
            TaskExitError: the call raised `SystemExit` (its `__cause__`).
            Exception: whatever the call itself raised.
        """
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._result  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception that ended the call, or None if it succeeded.

        Raises:
            TimeoutError: the call was not final within `timeout`.
            WaitDeadlockError: the wait could never end (see `wait()`).
        """
        if not self.wait(timeout):
            raise TimeoutError(f"{self!r} is not finished after {timeout} s")
        return self._exception

    def _observed_call(self) -> _observe.ObservedCall:
        """The call as observers see it (made now if no observer saw it deferred)."""
        observed = self._observed
        if observed is None:
            observed = _observe.ObservedCall(self.id, self.name, self.executor, {})
            self._observed = observed
        return observed

    # The runtime's ledger drives the handle through these; they are not public API.

    def _resolve(self, status: Status, result: Any, error: BaseException | None) -> None:
        # The outcome is written before the final status that publishes it.
        if error is None and status is not Status.SUCCEEDED:
            error = self._why_not(status)
        self._result = result
        self._exception = error
        self.finished_at = time.time()
        # Free what the call held: a finished handle may be kept long after (unless
        # its outcome is kept, with what it was called with).
        if not self.options.keep_result:
            self.args = ()
            self.kwargs = {}
        self.context = None
        self.loop = None
        self._holder = None
        self._status = status
        if _observe.observers:
            _observe.settled(self._observed_call(), status._value_, error)

    def _why_not(self, status: Status) -> BaseException | None:
        # What a call that ended without an exception of its own but did not succeed raises.
        if status is Status.TIMED_OUT:
            return TaskTimeoutError(f"{self.name} [{self.id}] ran past its timeout")
        if status is Status.JOURNALED:
            return TaskNotRunError(
                f"{self.name} [{self.id}] was journaled: it runs from the journal, "
                "which records its outcome",
                status=status,
            )
        if status in _NOT_RUN:
            return TaskNotRunError(f"{self.name} [{self.id}] was {status.value}", status=status)
        return None

    def _notify(self) -> None:
        done = self._done
        if done is not None:
            done.set()
