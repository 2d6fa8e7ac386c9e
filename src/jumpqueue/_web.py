"""What the web layer shares: `finish_request()`, counters, the 503 answer, lifespan steps.

The ASGI and WSGI middleware each put an exchange (their view of the request
being served) in a context variable; `finish_request()` finds it there and asks
it to send the response, as PHP-FPM's `fastcgi_finish_request()` does.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ._default import configure, get_runtime
from ._exceptions import MiddlewareMissingError
from .context import request_id, traceparent

if TYPE_CHECKING:
    from ._exceptions import OverloadedError
    from ._runtime import Runtime

logger = logging.getLogger("jumpqueue")

#: Request headers whose values travel with calls handed to another machine.
_CARRIED_HEADERS = {b"x-request-id": request_id, b"traceparent": traceparent}

#: The body of the 503 answer to a call rejected by a full backlog.
OVERLOADED_BODY = b"Service Unavailable: the server is busy, please retry later.\n"


class Exchange(Protocol):
    """One request as a middleware serves it: what `finish_request()` talks to."""

    def finish(self, response: object) -> None:
        """Send `response` as the complete response now, from synchronous code."""

    async def afinish(self, response: object) -> None:
        """Send `response` as the complete response now, from a coroutine."""


current_exchange: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "jumpqueue_exchange", default=None
)


def finish_request(response: object) -> None:
    """Send `response` to the client now; the rest of the handler keeps running.

    Calls deferred before are released once the response is sent (unless its
    status is 400 or more); calls deferred after are submitted at once.
    Whatever the handler returns afterwards is discarded, and an exception it
    raises is logged and counted. `response` is the framework's own response
    object or a tuple `(status, [(name, value), ...], body)`.

    Raises:
        MiddlewareMissingError: the request is not served through jumpqueue's middleware.
        ResponseStartedError: called twice, or after the application began its response.
        InvalidResponseError: `response` is not something that can be sent.
    """
    _current().finish(response)


async def afinish_request(response: object) -> None:
    """`finish_request()` for coroutines: the response is sent without blocking the loop.

    Raises:
        MiddlewareMissingError: the request is not served through jumpqueue's middleware.
        ResponseStartedError: called twice, or after the application began its response.
        InvalidResponseError: `response` is not something that can be sent.
    """
    await _current().afinish(response)


def _current() -> Exchange:
    exchange = current_exchange.get()
    if exchange is None:
        raise MiddlewareMissingError(
            "finish_request() needs jumpqueue's middleware around the application: "
            "jumpqueue.asgi.JumpQueueMiddleware or jumpqueue.wsgi.JumpQueueMiddleware "
            "(or the glue in jumpqueue.contrib)"
        )
    return exchange


class HttpCounters:
    """What the web layer did that the runtime's `stats()` do not show.

    Each 503 answered here is also one `shed["reject"]` in the runtime's stats.

    Attributes:
        overloaded: 503 answers to a call rejected by a full backlog.
        finished_early: responses sent by `finish_request()`.
        errors_after_finish: exceptions the handler raised after `finish_request()`.
    """

    NAMES = ("overloaded", "finished_early", "errors_after_finish")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"<HttpCounters {counts}>"

    @property
    def overloaded(self) -> int:
        """503 answers to a call rejected by a full backlog."""
        return self._counts["overloaded"]

    @property
    def finished_early(self) -> int:
        """Responses sent by `finish_request()`."""
        return self._counts["finished_early"]

    @property
    def errors_after_finish(self) -> int:
        """Exceptions the handler raised after `finish_request()` sent its response."""
        return self._counts["errors_after_finish"]

    def add(self, name: str) -> None:
        """Count one event of that name (one of `NAMES`)."""
        if name not in self.NAMES:
            raise ValueError(f"unknown counter {name!r}")
        with self._lock:
            self._counts[name] += 1

    def as_dict(self) -> dict[str, int]:
        """The counters as plain data."""
        with self._lock:
            return {name: self._counts[name] for name in self.NAMES}


def overloaded_headers(error: OverloadedError) -> list[tuple[str, str]]:
    """Headers of the 503 answer to `error`: Retry-After in whole seconds."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(OVERLOADED_BODY))),
        ("Retry-After", str(max(1, math.ceil(error.retry_after)))),
    ]


def log_overloaded(error: OverloadedError) -> None:
    """The line logged when a rejected call becomes a 503 (the runtime logged the shed)."""
    logger.info("jumpqueue: answered 503 Service Unavailable: %s", error)


def log_error_after_finish(error: BaseException) -> None:
    """The line logged when a handler raises after `finish_request()` sent its response."""
    logger.error(
        "jumpqueue: the handler raised after finish_request() sent its response; "
        "the client already has that response",
        exc_info=error,
    )


def start_runtime(runtime: Runtime | None) -> Runtime:
    """At server startup: make sure the runtime (by default, the default one) admits calls.

    A default runtime shut down by an earlier shutdown in this process (a test
    client, a server started again) is replaced by one with the same configuration.
    Returns the runtime that serves.
    """
    if runtime is not None:
        if runtime.closed:
            logger.warning("jumpqueue: the middleware's runtime is shut down; defer() will fail")
        return runtime
    default = get_runtime()
    if default.closed:
        return configure(default.config)
    return default


async def drain_runtime(runtime: Runtime | None) -> None:
    """At server shutdown: stop admitting and drain, within the runtime's `shutdown_timeout`."""
    await (runtime if runtime is not None else get_runtime()).ashutdown()


def carry_from_headers(
    headers: Iterable[tuple[bytes, bytes | str]],
) -> list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]]:
    """Set `jumpqueue.context`'s request id and traceparent from the request's headers.

    Values the application set already are kept. Returns the tokens to reset them.
    """
    tokens = []
    for name, value in headers:
        variable = _CARRIED_HEADERS.get(name.lower())
        if variable is not None and variable.get() is None:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            tokens.append((variable, variable.set(text)))
    return tokens
