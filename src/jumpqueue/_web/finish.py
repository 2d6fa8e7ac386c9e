"""`finish_request()`: send the response now, through the exchange a middleware put in context.

The ASGI and WSGI middleware each bind an exchange (their view of the request
being served) to the request's context; `finish_request()` finds it there and
asks it to send the response, as PHP-FPM's `fastcgi_finish_request()` does.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Protocol

from .._exceptions import MiddlewareMissingError
from .._scope import request_variables

logger = logging.getLogger("jumpqueue")


class Exchange(Protocol):
    """One request as a server integration serves it: what `finish_request()` talks to."""

    def finish(self, response: object) -> None:
        """Send `response` as the complete response now, from synchronous code."""

    async def afinish(self, response: object) -> None:
        """Send `response` as the complete response now, from a coroutine."""


current_exchange: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "jumpqueue_exchange", default=None
)
# A call deferred in a request must not keep the request's server objects alive.
request_variables.append(current_exchange)


@contextlib.contextmanager
def bind_exchange(exchange: Exchange) -> Iterator[Exchange]:
    """Make `finish_request()` in the block (and in contexts copied from it) talk to `exchange`."""
    token = current_exchange.set(exchange)
    try:
        yield exchange
    finally:
        current_exchange.reset(token)


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


def log_error_after_finish(error: BaseException) -> None:
    """The line logged when a handler raises after `finish_request()` sent its response."""
    logger.error(
        "jumpqueue: the handler raised after finish_request() sent its response; "
        "the client already has that response",
        exc_info=error,
    )
