"""The request scope: where calls deferred during a request wait for its response to be sent.

The web layer opens a scope per request and releases it when the last byte has
been handed to the server; the core only knows that calls are held until then.
`jumpqueue.integration` is the public face of this module, for framework glue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._reentry import hand_over, take

if TYPE_CHECKING:
    from ._deferred import Deferred


class ScopeHost(Protocol):
    """The part of a runtime that a request scope hands its held calls back to."""

    @property
    def journaled(self) -> bool:
        """True if the runtime writes its calls to a journal (sealing then has work to do)."""

    def seal_held(self, deferreds: list[Deferred[Any]]) -> None:
        """Write held calls to the journal in one transaction; never runs them."""

    def release_held(self, deferred: Deferred[Any], *, run: bool) -> None:
        """Hand a held call over to run, or skip it; never blocks."""


current_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "jumpqueue_request_scope", default=None
)

#: Context variables of the request being served that a call must not carry: the context
#: it copies at `defer()` has them cleared, so that calls it defers in turn are not held,
#: and a pending call does not keep the request's server state alive. The web layer
#: adds its own (the exchange `finish_request()` talks to).
request_variables: list[contextvars.ContextVar[Any]] = [current_scope]


def forget_request() -> None:
    """Clear `request_variables` in the current context (run in a call's copied context)."""
    for variable in request_variables:
        variable.set(None)


#: Context managers entered around every attempt of calls deferred in this context.
#: Framework glue sets it per request (Flask's application context, Django's
#: connection hygiene); it travels with the context copied at `defer()` time.
around_calls: contextvars.ContextVar[
    tuple[Callable[[], contextlib.AbstractContextManager[Any]], ...]
] = contextvars.ContextVar("jumpqueue_around_calls", default=())


class RequestScope:
    """Holds the calls deferred during one request until `release()` or `discard()`.

    Made current with `activate()`, it holds every call `defer()` makes in that
    context (and in contexts copied from it) instead of running it. With a
    journal, `seal()` writes them to it first, in one transaction per runtime:
    the web layer seals right before the response's last byte goes to the
    server, so that an acknowledged request's work is on disk. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[ScopeHost, Deferred[Any]]] = []
        self._sealed = 0  # how many of _held were sealed
        self._unsealed = False  # calls held since then go to a journal
        self._released = False

    @property
    def released(self) -> bool:
        """True once `release()` was called; later calls are not held."""
        return self._released

    def __len__(self) -> int:
        return len(self._held)

    @property
    def unsealed(self) -> bool:
        """True while calls held since the last seal wait to be written to a journal."""
        return self._unsealed

    def activate(self) -> contextvars.Token[RequestScope | None]:
        """Make this the scope of the current context; `deactivate(token)` undoes it."""
        return current_scope.set(self)

    def deactivate(self, token: contextvars.Token[RequestScope | None]) -> None:
        """Undo `activate()`."""
        current_scope.reset(token)

    def is_current(self) -> bool:
        """True in the request's own context (its handler), until `release()`."""
        return not self._released and current_scope.get() is self

    def hold(self, host: ScopeHost, deferred: Deferred[Any]) -> bool:
        """Keep a call until release; False if the scope was released already."""
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            # A signal handler's call, on top of this scope's own code: held from another
            # thread once the handler has returned (or handed over, if released by then).
            hand_over(self._hold_later, host, deferred)
            return True
        try:
            if self._released:
                return False
            self._held.append((host, deferred))
            if host.journaled:
                self._unsealed = True
            return True
        finally:
            lock.release()

    def _hold_later(self, host: ScopeHost, deferred: Deferred[Any]) -> None:
        if not self.hold(host, deferred):  # released meanwhile: as if released before
            host.release_held(deferred, run=True)

    def seal(self) -> None:
        """Write the held calls not yet written to their journals; never runs them.

        One transaction per runtime (the group commit of a response); it may be
        called again for calls deferred since (a streamed body). Without a
        journal it does nothing. A journal that cannot be written makes the
        calls fall back (see `Config.on_journal_error`); it never raises.
        """
        if self._unsealed:  # without a journal, there is nothing to write
            self._seal(always_only=False)

    async def aseal(self, *, always_only: bool = False) -> None:
        """`seal()` for coroutines: the commit is waited for in a thread, not on the loop.

        Concurrent requests of one event loop then share their commits. With
        `always_only`, only the calls that run whatever happened are written
        (a failed request's).
        """
        if self.unsealed:
            await asyncio.to_thread(self._seal, always_only=always_only)

    def _seal(self, *, always_only: bool) -> None:
        with self._lock:
            if self._released:
                return
            fresh, self._sealed = self._held[self._sealed :], len(self._held)
            self._unsealed = False
        by_host: dict[ScopeHost, list[Deferred[Any]]] = {}
        for host, deferred in fresh:
            if deferred.options.always or not always_only:
                by_host.setdefault(host, []).append(deferred)
        for host, deferreds in by_host.items():
            host.seal_held(deferreds)

    def release(self, *, succeeded: bool) -> None:
        """Hand the held calls over to their runtimes; idempotent.

        All of them run if the request succeeded; otherwise only those of tasks
        with `always=True`, and the rest are skipped (counted and logged). Calls
        not sealed yet are sealed first (those that will run).
        """
        if self.unsealed:  # without a journal, there is nothing to write
            self._seal(always_only=not succeeded)
        with self._lock:
            if self._released:
                return
            self._released = True
            held, self._held = self._held, []
        for host, deferred in held:
            host.release_held(deferred, run=succeeded or deferred.options.always)

    def discard(self) -> None:
        """Release as a failed request: skip the held calls, except those of `always=True` tasks.

        The same as `release(succeeded=False)`: for a request that failed (it
        raised, or its status is 400 or more).
        """
        self.release(succeeded=False)
