"""Call observers: the hooks tracing and metrics hang on (deferred, each attempt, settled, shed).

With no observer registered each hook point costs one truthiness check of
`observers`. Registered ones are called in order; an observer that raises is
logged (rate-limited) and ignored: observing never breaks a call.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import Protocol

from ._ratelimit import RateLimitedLog

__all__ = [
    "OUTCOMES",
    "CallObserver",
    "ObservedCall",
    "add_observer",
    "remove_observer",
]

logger = logging.getLogger("jumpqueue")

#: How an attempt can end, as `CallObserver.attempt_finished` is told.
OUTCOMES = ("succeeded", "failed", "timed_out", "abandoned")

#: The registered observers; replaced whole (never mutated), so hooks iterate without a lock.
observers: tuple[CallObserver, ...] = ()
_lock = threading.Lock()
_failures = RateLimitedLog(logger, interval=60.0)


@dataclasses.dataclass(eq=False, slots=True)
class ObservedCall:
    """A call as observers see it, in the process that deferred it or on a backend's worker.

    Attributes:
        id: the call's id (the handle's `id`; the job or task id on a backend).
        name: the task's name.
        destination: where it runs: an executor ("thread", "async", "process")
            or a backend's queue ("rq:default", "celery:celery").
        carrier: what `CallObserver.deferred` returned, merged: string pairs
            that travel with the call, to a backend's worker too (trace context).
    """

    id: str
    name: str
    destination: str
    carrier: dict[str, str] = dataclasses.field(default_factory=dict)


class CallObserver:
    """Base of call observers: override the hooks you need (each does nothing here).

    Hooks run in jumpqueue's own threads, on its hot paths: keep them quick.
    An exception from a hook is logged and ignored.
    """

    def deferred(self, call: ObservedCall) -> Mapping[str, str] | None:  # noqa: ARG002 -- a hook
        """A call was deferred (in the caller, in its context); pairs returned join its carrier."""
        return None

    def attempt_started(self, call: ObservedCall, attempt: int) -> object:  # noqa: ARG002 -- a hook
        """Attempt number `attempt` (from 1) starts; the return value comes back as `token`.

        Called inside the context the attempt runs in: a context variable set
        here (the current span) is what the call's code sees.
        """
        return None

    def attempt_finished(
        self,
        call: ObservedCall,
        attempt: int,
        outcome: str,
        error: BaseException | None,
        token: object,
    ) -> None:
        """The attempt ended: `outcome` is one of `OUTCOMES`; called once per started attempt.

        A thread call past its timeout ends "timed_out" at the timeout, while
        its thread may still run.
        """

    def settled(self, call: ObservedCall, status: str, error: BaseException | None) -> None:
        """The call is final here: `status` is a final `jumpqueue.Status` value.

        Runs while the runtime holds its ledger's lock: do not call into
        jumpqueue (`defer()`, `stats()`) from it.
        """

    def shed(self, call: ObservedCall, policy: str) -> None:
        """A full backlog shed the call by `policy` ("reject" or "drop"); `settled` follows."""


def add_observer(observer: CallObserver) -> None:
    """Register an observer of every call of every runtime in this process.

    Raises:
        TypeError: `observer` is not a `CallObserver`.
    """
    global observers  # noqa: PLW0603 -- one process-wide tuple, swapped whole
    if not isinstance(observer, CallObserver):
        raise TypeError(f"observer must be a jumpqueue CallObserver, not {type(observer).__name__}")
    with _lock:
        if observer not in observers:
            observers = (*observers, observer)


def remove_observer(observer: CallObserver) -> None:
    """Unregister an observer; attempts it saw start still report their end to it.

    Raises:
        ValueError: `observer` is not registered.
    """
    global observers  # noqa: PLW0603 -- one process-wide tuple, swapped whole
    with _lock:
        if observer not in observers:
            raise ValueError(f"{observer!r} is not a registered jumpqueue observer")
        observers = tuple(known for known in observers if known is not observer)


def _failed(observer: CallObserver, hook: str, error: Exception) -> None:
    _failures.warning(
        "jumpqueue: observer %r failed in %s (%s: %s); ignored",
        observer,
        hook,
        type(error).__name__,
        error,
    )


# -- what the core calls, each only after checking `observers` ------------------------------
# Each loop calls the hook itself, in a `try` (free unless it raises): these run per call.


def deferred(call_id: str, name: str, destination: str) -> ObservedCall:
    """Tell every observer of a new call; its carrier holds what they returned."""
    call = ObservedCall(call_id, name, destination, {})
    for observer in observers:
        try:
            pairs = observer.deferred(call)
            if pairs:
                call.carrier.update(pairs)
        except Exception as error:  # noqa: BLE001, PERF203 -- an observer never breaks a call
            _failed(observer, "deferred", error)
    return call


#: Per attempt: each observer that saw it start, with its token.
Started = tuple[tuple[CallObserver, object], ...]


def attempt_started(
    call: ObservedCall, attempt: int, context: contextvars.Context | None = None
) -> Started:
    """Tell every observer an attempt starts, inside `context` (None: the current one)."""
    if context is not None:
        return context.run(_started, call, attempt)
    return _started(call, attempt)


def _started(call: ObservedCall, attempt: int) -> Started:
    started = []
    for observer in observers:
        try:
            started.append((observer, observer.attempt_started(call, attempt)))
        except Exception as error:  # noqa: BLE001, PERF203 -- an observer never breaks a call
            _failed(observer, "attempt_started", error)
    return tuple(started)


def attempt_finished(
    started: Started, call: ObservedCall, attempt: int, outcome: str, error: BaseException | None
) -> None:
    """Tell the observers that saw the attempt start how it ended."""
    for observer, token in started:
        try:
            observer.attempt_finished(call, attempt, outcome, error, token)
        except Exception as failure:  # noqa: BLE001, PERF203 -- an observer never breaks a call
            _failed(observer, "attempt_finished", failure)


def settled(call: ObservedCall, status: str, error: BaseException | None) -> None:
    """Tell every observer a call is final here."""
    for observer in observers:
        try:
            observer.settled(call, status, error)
        except Exception as failure:  # noqa: BLE001, PERF203 -- an observer never breaks a call
            _failed(observer, "settled", failure)


def shed(call: ObservedCall, policy: str) -> None:
    """Tell every observer a full backlog shed a call."""
    for observer in observers:
        try:
            observer.shed(call, policy)
        except Exception as failure:  # noqa: BLE001, PERF203 -- an observer never breaks a call
            _failed(observer, "shed", failure)


class Attempted(Protocol):
    """One attempt of a call, as `watch` and `unwatch` see it (hashed by identity)."""

    @property
    def number(self) -> int:
        """Its number, from 1."""


#: The attempts observers saw start and not yet end, with those observers: empty (and so
#: one truthiness check at an attempt's end) while nothing is observed.
watched: dict[Attempted, Started] = {}


def watch(attempt: Attempted, call: ObservedCall, context: contextvars.Context | None) -> None:
    """Tell every observer `attempt` starts, and remember who saw it for its end."""
    started = attempt_started(call, attempt.number, context)
    if started:
        watched[attempt] = started


def unwatch(
    attempt: Attempted, call: ObservedCall, outcome: str, error: BaseException | None
) -> None:
    """Tell the observers that saw `attempt` start how it ended; only the first caller does."""
    started = watched.pop(attempt, None)  # atomic: an end and a timeout may race
    if started:
        attempt_finished(started, call, attempt.number, outcome, error)
