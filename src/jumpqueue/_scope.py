"""The request scope: where calls deferred during a request wait for its response to be sent.

The web layer opens a scope per request and releases it when the last byte has
been handed to the server; the core only knows that calls are held until then.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._deferred import Deferred
    from ._runtime import Runtime

current_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "jumpqueue_request_scope", default=None
)

#: Context managers entered around every attempt of calls deferred in this context.
#: Framework glue sets it per request (Flask's application context, Django's
#: connection hygiene); it travels with the context copied at `defer()` time.
around_calls: contextvars.ContextVar[
    tuple[Callable[[], contextlib.AbstractContextManager[Any]], ...]
] = contextvars.ContextVar("jumpqueue_around_calls", default=())


class RequestScope:
    """Holds the calls deferred during one request until `release()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[Runtime, Deferred[Any]]] = []
        self._released = False

    @property
    def released(self) -> bool:
        """True once `release()` was called; later calls are not held."""
        return self._released

    def __len__(self) -> int:
        return len(self._held)

    def activate(self) -> contextvars.Token[RequestScope | None]:
        """Make this the scope of the current context; `deactivate(token)` undoes it."""
        return current_scope.set(self)

    def deactivate(self, token: contextvars.Token[RequestScope | None]) -> None:
        """Undo `activate()`."""
        current_scope.reset(token)

    def hold(self, runtime: Runtime, deferred: Deferred[Any]) -> bool:
        """Keep a call until release; False if the scope was released already."""
        with self._lock:
            if self._released:
                return False
            self._held.append((runtime, deferred))
            return True

    def release(self, *, succeeded: bool) -> None:
        """Hand the held calls over to their runtimes; idempotent.

        All of them run if the request succeeded; otherwise only those of tasks
        with `always=True`, and the rest are skipped (counted and logged).
        """
        with self._lock:
            if self._released:
                return
            self._released = True
            held, self._held = self._held, []
        for runtime, deferred in held:
            runtime.release_held(deferred, run=succeeded or deferred.options.always)
