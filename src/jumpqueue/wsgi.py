"""WSGI middleware: calls deferred during a request are held until the server closes its response.

    from jumpqueue.wsgi import JumpQueueMiddleware
    application = JumpQueueMiddleware(application)

The server calls `close()` on the response iterable once it has sent the last
byte (PEP 3333); that is when the calls held for the request are handed to the
runtime, and only if the status is below 400 and nothing raised (tasks with
`always=True` are handed over whatever happened). After a large body, `close()`
first waits, bounded, until the client has acknowledged it, where the server
passes its socket (see `jumpqueue.integration.wait_until_received`).
`finish_request()` sends its response through the server's `write()` callable,
with a Content-Length, so the client has all of it while the handler goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._exceptions import OverloadedError, ResponseStartedError
from ._scope import RequestScope, around_calls
from ._web.finish import current_exchange, log_error_after_finish
from ._web.responses import with_content_length, wsgi_response
from ._web.sent import LARGE_BODY, wait_until_received
from ._web.serving import (
    OVERLOADED_BODY,
    HttpCounters,
    carry_from_headers,
    log_overloaded,
    overloaded_headers,
)

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HttpCounters", "JumpQueueMiddleware"]

logger = logging.getLogger("jumpqueue")

AroundCalls = tuple[Callable[[], contextlib.AbstractContextManager[Any]], ...]
Write = Callable[[bytes], object]


class JumpQueueMiddleware:
    """Holds the calls deferred during each request until the server has sent the response.

    They are handed over only if the request succeeded (see the module's docstring).

    Args:
        app: the WSGI application.
        overload_response: answer `503 Service Unavailable` with a `Retry-After`
            header when an `OverloadedError` from `defer()` escapes the application
            before its response has started.
        around_calls: context-manager factories entered around every attempt of the
            calls deferred during a request (Flask's application context, say).
        counters: where 503s and early finishes are counted; a new one by default.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        overload_response: bool = True,
        around_calls: AroundCalls = (),
        counters: HttpCounters | None = None,
    ) -> None:
        self.app = app
        self.overload_response = overload_response
        self.around_calls = tuple(around_calls)
        self.counters = counters if counters is not None else HttpCounters()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request in its own request scope."""
        exchange = _Exchange(environ, start_response, self.counters)
        # One context for the call and the iteration of the body: WSGI bodies are
        # often generators, which run only when the server iterates them.
        context = contextvars.copy_context()
        context.run(self._enter, exchange)
        try:
            body = context.run(self.app, environ, exchange.start_response)
        except Exception as error:
            if exchange.finished:
                exchange.error_after_finish(error)
                return []
            if isinstance(error, OverloadedError) and self.overload_response and not exchange.wrote:
                return exchange.overloaded(error, sys.exc_info())
            exchange.release(failed=True)
            raise
        except BaseException:
            exchange.release(failed=True)
            raise
        if exchange.finished:
            exchange.discard(body, context)
            return []
        exchange.scope.seal()  # with a journal: on disk before the server sends the body
        return exchange.body(body, context)

    def _enter(self, exchange: _Exchange) -> None:
        # Runs inside the request's own context, which is dropped afterwards.
        exchange.scope.activate()
        current_exchange.set(exchange)
        environ = exchange.environ
        carry_from_headers(
            (name, environ[key])
            for name, key in (
                (b"x-request-id", "HTTP_X_REQUEST_ID"),
                (b"traceparent", "HTTP_TRACEPARENT"),
            )
            if key in environ
        )
        if self.around_calls:
            around_calls.set(around_calls.get() + self.around_calls)


class _Exchange:
    """One request between the server and the application: its status, and who sent what."""

    def __init__(
        self, environ: WSGIEnvironment, start_response: StartResponse, counters: HttpCounters
    ) -> None:
        self.environ = environ
        self.scope = RequestScope()
        self.counters = counters
        self._server_start_response = start_response
        self._server_write: Write | None = None
        self.status: int | None = None
        self.started = False  # the application called start_response
        self.wrote = False  # bytes went to the server through write()
        self.finished = False  # finish_request() sent the response
        self.failed = False
        self.body_bytes = 0  # of the body, given to the server
        self.body_from_file = False  # the server sends the body from a file, unseen here

    # -- what the application sees -----------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
    ) -> Write:
        """Pass the application's `start_response` on, unless finish_request() came first."""
        if self.finished:
            return _discard_write
        self.started = True
        self.status = _status_code(status)
        self._server_write = self._server_start_response(status, headers, exc_info)
        return self._write

    def _write(self, data: bytes) -> None:
        self.wrote = True
        self.body_bytes += len(data)
        if self._server_write is not None:
            self._server_write(data)

    def finish(self, response: object) -> None:
        """Send `response` now through the server's `write()`, then release held calls."""
        if self.finished or self.started:
            raise ResponseStartedError(
                "finish_request() was called already"
                if self.finished
                else "the application has started its response; finish_request() comes first"
            )
        status, headers, body = wsgi_response(response, self.environ)
        self.finished = True
        self.status = _status_code(status)
        self.scope.seal()
        try:
            write = self._server_start_response(status, with_content_length(headers, len(body)))
            write(body)
        except Exception as error:  # noqa: BLE001 -- each server has its own disconnect error
            logger.warning("jumpqueue: finish_request() could not send the response: %r", error)
        else:
            self.body_bytes = len(body)
        self.counters.add("finished_early")
        self.release_once_received()

    async def afinish(self, response: object) -> None:
        """`finish()` from a coroutine (an async view served over WSGI): the write is short."""
        self.finish(response)

    # -- what the middleware does ------------------------------------------------------------

    def release_once_received(self) -> None:
        """`release()` once the client has a large body (bounded in time).

        The server has written the last byte into the socket; the kernel may
        still hold megabytes of it for a slow client.
        """
        try:
            if len(self.scope) and not self.failed:  # else nothing waits for the client
                size = None if self.body_from_file else self.body_bytes
                wait_until_received(self.environ, body_size=size)
        finally:
            self.release()

    def release(self, *, failed: bool = False) -> None:
        """Hand the held calls over, by the request's outcome; only the first call acts."""
        self.failed = self.failed or failed
        status = self.status
        self.scope.release(succeeded=not self.failed and status is not None and status < 400)  # noqa: PLR2004

    def overloaded(self, error: OverloadedError, exc_info: OptExcInfo) -> list[bytes]:
        """Answer 503 for a call the backlog rejected; the request's calls are skipped."""
        self.status = 503
        self._server_start_response("503 Service Unavailable", overloaded_headers(error), exc_info)
        self.release(failed=True)
        self.counters.add("overloaded")
        log_overloaded(error)
        return [OVERLOADED_BODY]

    def error_after_finish(self, error: BaseException) -> None:
        """Log and count an exception raised after finish_request(); the client has its answer."""
        self.counters.add("errors_after_finish")
        log_error_after_finish(error)

    def discard(self, body: Iterable[bytes], context: contextvars.Context) -> None:
        """Close what the handler returned after finish_request(): it is not sent."""
        close = getattr(body, "close", None)
        if callable(close):
            try:
                context.run(close)
            except Exception as error:  # noqa: BLE001 -- logged and counted, like the handler's
                self.error_after_finish(error)

    def body(self, body: Iterable[bytes], context: contextvars.Context) -> Iterable[bytes]:
        """Return the response body for the server, whose `close()` releases the held calls."""
        file_wrapper = self.environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # The server recognises its own file wrapper (to use sendfile): keep the
            # object and hook its close() instead of wrapping it.
            close = getattr(body, "close", None)
            try:
                body.close = lambda: self.close_body(close, context)  # type: ignore[attr-defined]
            except AttributeError:  # a wrapper with __slots__: wrap it like any body
                pass
            else:
                self.body_from_file = True
                return body
        return _Body(body, self, context)

    def close_body(self, close: Callable[[], object] | None, context: contextvars.Context) -> None:
        """Close the application's body in the request's context, then release."""
        try:
            if callable(close):
                context.run(close)
        except BaseException:
            self.failed = True
            raise
        finally:
            if self.body_bytes < LARGE_BODY and not self.body_from_file:
                self.release()
            else:
                self.release_once_received()


class _Body:
    """The application's response body, iterated in the request's context; `close()` releases."""

    def __init__(
        self, body: Iterable[bytes], exchange: _Exchange, context: contextvars.Context
    ) -> None:
        self._body = body
        self._exchange = exchange
        self._context = context
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        try:
            if self._iterator is None:
                self._iterator = self._context.run(iter, self._body)
            while True:
                chunk = self._context.run(next, self._iterator)
                if not exchange.finished:
                    exchange.body_bytes += len(chunk)
                    return chunk
                # finish_request() was called from inside the body: the rest is discarded.
        except StopIteration:
            exchange.scope.seal()  # calls deferred while the body was produced
            raise
        except Exception as error:
            if not exchange.finished:
                exchange.failed = True
                raise
            exchange.error_after_finish(error)
            raise StopIteration from None
        except BaseException:
            exchange.failed = True
            raise

    def close(self) -> None:
        """Close the application's body, then hand the held calls over."""
        self._exchange.close_body(getattr(self._body, "close", None), self._context)


def _discard_write(data: bytes) -> None:
    """Drop the bytes a handler writes after finish_request()."""


def _status_code(status: str) -> int:
    try:
        return int(status.split(None, 1)[0])
    except (ValueError, IndexError):
        return 500
