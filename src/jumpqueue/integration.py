"""The seam for integrating another framework or server: request scopes, 503s, lifespan steps.

jumpqueue's own glue (`jumpqueue.contrib.*`) is built on these names and the
middleware alone. Per request, an integration:

1. opens a `RequestScope` and makes it current (`activate()`), so that every
   `defer()` in the request's context is held instead of run;
2. seals it (`seal()`, or `await aseal()` on an event loop) right before the
   response's last byte is handed to the server: with a journal, the held
   calls are then on disk before the client has its answer;
3. releases it once the last byte was handed over, by the request's outcome
   (`release(succeeded=...)`), or discards it for a request that failed
   (`discard()`: only the calls of `always=True` tasks run). After a large
   body, it first waits for the client to have it: `wait_until_received()`
   (WSGI) or `await await_until_received()` (ASGI), bounded in time.

    from jumpqueue.integration import RequestScope, wait_until_received

    def handle(request):  # your server's or framework's request hook
        scope = RequestScope()
        token = scope.activate()
        try:
            response = dispatch(request)
        except BaseException:
            scope.discard()
            raise
        finally:
            scope.deactivate(token)
        send_head(response)
        scope.seal()
        send_body(response)  # hands the last byte to the server
        wait_until_received(request.environ, body_size=len(response.body))
        scope.release(succeeded=response.status < 400)

The other names:

- `current_scope()`: the scope open in this context, for glue that runs inside
  another integration (Django's middleware inside jumpqueue's WSGI one).
- `wrap_calls()`: context managers entered around every attempt of the calls
  deferred in a block (an application context, database connection hygiene).
- `HttpCounters`, `OVERLOADED_BODY`, `overloaded_headers()`, `log_overloaded()`:
  the `503 Service Unavailable` answer to an `OverloadedError` from `defer()`,
  as the middleware gives it.
- `start_runtime()`, `drain_runtime()`: the runtime at server startup and shutdown
  (the default runtime, drained, is renewed by the next call deferred).
- `carry_from_headers()`: the request id and trace that travel with calls
  handed to another machine, taken from the request's headers.
- `wait_until_received()`, `await_until_received()`, `LARGE_BODY`: wait, at
  most 5 s, until the client's kernel acknowledged every byte sent on the
  request's connection (Linux; the socket from a WSGI environ, the connection
  from an ASGI scope's addresses). The kernel holds megabytes for a slow client
  after the server wrote its last byte; bodies under `LARGE_BODY` (64 KiB) are
  not waited for.
- `Exchange`, `bind_exchange()`: what `jumpqueue.finish_request()` talks to, for
  a server integration that sends a response before its handler returns.
- `add_observer()`, `remove_observer()`, `CallObserver`, `ObservedCall`: hooks
  at every call's defer, attempts, settlement and shedding, for tracing and
  metrics (`jumpqueue.contrib.opentelemetry` is one; docs/observability.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ._observe import CallObserver, ObservedCall, add_observer, remove_observer
from ._scope import RequestScope, around_calls
from ._scope import current_scope as _current_scope
from ._web.finish import Exchange, bind_exchange
from ._web.lifespan import drain_runtime, start_runtime
from ._web.sent import LARGE_BODY, await_until_received, wait_until_received
from ._web.serving import (
    OVERLOADED_BODY,
    HttpCounters,
    carry_from_headers,
    log_overloaded,
    overloaded_headers,
)

__all__ = [
    "LARGE_BODY",
    "OVERLOADED_BODY",
    "CallObserver",
    "Exchange",
    "HttpCounters",
    "ObservedCall",
    "RequestScope",
    "add_observer",
    "await_until_received",
    "bind_exchange",
    "carry_from_headers",
    "current_scope",
    "drain_runtime",
    "log_overloaded",
    "overloaded_headers",
    "remove_observer",
    "start_runtime",
    "wait_until_received",
    "wrap_calls",
]


def current_scope() -> RequestScope | None:
    """The request scope current in this context, or None outside a request."""
    return _current_scope.get()


@contextlib.contextmanager
def wrap_calls(*factories: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
    """Enter a context manager from each factory around every attempt of calls deferred here.

    It applies to the calls deferred in the block, or in contexts copied from it
    (a request's handler, its thread pool). Each attempt enters fresh ones, the
    first factory outermost, in the thread or on the event loop the attempt runs
    on; they add to those of an enclosing block, as the middleware's
    `around_calls=` does. Flask's `app.app_context` is one such factory.
    """
    token = around_calls.set((*around_calls.get(), *factories))
    try:
        yield
    finally:
        around_calls.reset(token)
