"""ASGI middleware: calls deferred during a request are held until its response is completely sent.

    from jumpqueue.asgi import JumpQueueMiddleware
    app = JumpQueueMiddleware(app)

The calls held for a request are handed to the runtime right after the server
accepted the final `http.response.body` (with `more_body` false, or the final
trailers), streaming responses included, and only if the status is below 400
and nothing raised (tasks with `always=True` are handed over whatever
happened). After a large body, the final `send` goes out in parts through the
server's flow control and returns once the client has acknowledged the body
(bounded: see `jumpqueue.integration.await_until_received`). A client that
went away is no failure: the work still runs. The middleware also answers the
lifespan protocol: the runtime is ready at startup and drained, within its
`shutdown_timeout`, at shutdown. Other scopes (websockets) pass through
untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._exceptions import JumpQueueError, OverloadedError, ResponseStartedError
from ._scope import RequestScope, around_calls
from ._web.finish import current_exchange, log_error_after_finish
from ._web.lifespan import drain_runtime, start_runtime
from ._web.responses import asgi_response
from ._web.sent import LARGE_BODY, await_until_received
from ._web.serving import (
    OVERLOADED_BODY,
    HttpCounters,
    carry_from_headers,
    log_overloaded,
    overloaded_headers,
)

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["HttpCounters", "JumpQueueMiddleware"]

logger = logging.getLogger("jumpqueue")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AroundCalls = tuple[Callable[[], contextlib.AbstractContextManager[Any]], ...]
#: Responses the server sends from a file, whose size the middleware does not see.
_FILE_SENDS = ("http.response.pathsend", "http.response.zerocopysend")


class JumpQueueMiddleware:
    """Holds the calls deferred during each request until its response has been sent.

    They are handed over only if the request succeeded (see the module's docstring).

    Args:
        app: the ASGI application.
        runtime: the runtime that lifespan startup makes ready and shutdown drains;
            by default the default runtime at that moment (so `configure()` applies).
        overload_response: answer `503 Service Unavailable` with a `Retry-After`
            header when an `OverloadedError` from `defer()` escapes the application
            before its response has started.
        around_calls: context-manager factories entered around every attempt of the
            calls deferred during a request.
        counters: where 503s and early finishes are counted; a new one by default.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime | None = None,
        overload_response: bool = True,
        around_calls: AroundCalls = (),
        counters: HttpCounters | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.overload_response = overload_response
        self.around_calls = tuple(around_calls)
        self.counters = counters if counters is not None else HttpCounters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection: HTTP in a request scope, lifespan with the runtime."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange(scope, receive, send, self.counters)
        scope_token = exchange.request_scope.activate()
        exchange_token = current_exchange.set(exchange)
        extra = self.around_calls
        around_token = around_calls.set(around_calls.get() + extra) if extra else None
        carried_tokens = carry_from_headers(scope.get("headers", ()))
        error: BaseException | None = None
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as raised:
            if exchange.finished:
                exchange.error_after_finish(raised)
                return
            error = raised
            if (
                isinstance(raised, OverloadedError)
                and self.overload_response
                and not exchange.started
            ):
                await exchange.overloaded(raised)
                return
            raise
        except BaseException as raised:
            error = raised
            raise
        finally:
            for variable, token in reversed(carried_tokens):
                variable.reset(token)
            if around_token is not None:
                around_calls.reset(around_token)
            current_exchange.reset(exchange_token)
            exchange.request_scope.deactivate(scope_token)
            await exchange.arelease(error)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = shutting_down = drained = False

        async def app_receive() -> Message:
            nonlocal received, shutting_down
            received = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _start(self.runtime)
            elif message["type"] == "lifespan.shutdown":
                shutting_down = True
            return message

        async def app_send(message: Message) -> None:
            nonlocal drained
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                drained = True
                await drain_runtime(self.runtime)
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if received:
                raise
            logger.debug("jumpqueue: the application does not speak lifespan; the middleware does")
        finally:
            if shutting_down and not drained:
                await drain_runtime(self.runtime)
        if not received:
            await self._serve_lifespan(receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _start(self.runtime)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await drain_runtime(self.runtime)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _start(runtime: Runtime | None) -> None:
    serving = start_runtime(runtime)
    if serving.config.journal is not None:
        # Take up what a crashed process left in the journal now, not at the first defer().
        await asyncio.to_thread(serving.open_journal)


class _Exchange:
    """One HTTP request between the server and the application: who sent what, and when."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, counters: HttpCounters) -> None:
        self.http_scope = scope
        self.request_scope = RequestScope()
        self.counters = counters
        self.loop = asyncio.get_running_loop()
        self._receive = receive
        self._send = send
        self.status: int | None = None
        self.started = False  # http.response.start went to the server
        self.complete = False  # the response's last message went to the server
        self.finished = False  # finish_request() sends or sent the response
        self.disconnected = False
        self._trailers = False
        self._body_bytes = 0

    # -- what the application sees -----------------------------------------------------------

    async def receive(self) -> Message:
        """The application's `receive`: notes a client that went away."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        """The application's `send`: dropped once finish_request() has answered."""
        if not self.finished:
            await self._pass(message)

    async def _pass(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            self._trailers = bool(message.get("trailers", False))
        completes = self._completes(message)
        if kind == "http.response.body":
            body = message.get("body", b"")
            self._body_bytes += len(body)
            if completes and len(body) > LARGE_BODY:
                message = await self._pace(message, body)
        if completes and self.request_scope.unsealed:
            # With a journal, the request's calls are on disk before its last byte leaves.
            await self.request_scope.aseal()
        try:  # inline, not through _send_to_server(): the path every response takes
            await self._send(message)
        except OSError:  # the spec's error for a client that went away
            self.disconnected = True
            raise
        if completes:
            self.complete = True
            if self._body_bytes < LARGE_BODY and kind == "http.response.body":
                self.release(None)
            else:
                await self._release_once_received(kind)

    async def _send_to_server(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:  # the spec's error for a client that went away
            self.disconnected = True
            raise

    async def _release_once_received(self, kind: str) -> None:
        """Release after a large body (or a file) once the client has it, bounded in time."""
        try:
            if len(self.request_scope):  # else nothing waits for the client
                size = None if kind in _FILE_SENDS else self._body_bytes
                await await_until_received(self.http_scope, body_size=size)
        finally:  # cancelled while waiting: the response was sent all the same
            self.release(None)

    async def _pace(self, message: Message, body: bytes) -> Message:
        """Send all but the last part of a large final body, a part at a time.

        Each `send` waits on the server's flow control, so the last part goes
        out only once the rest has been taken from the server's buffer.
        """
        last = len(body) - (len(body) - 1) % LARGE_BODY - 1
        for start in range(0, last, LARGE_BODY):
            part = body[start : start + LARGE_BODY]
            await self._send_to_server(
                {"type": "http.response.body", "body": part, "more_body": True}
            )
        return {**message, "body": body[last:]}

    def _completes(self, message: Message) -> bool:
        kind = message["type"]
        if kind in ("http.response.body", "http.response.zerocopysend"):
            return not self._trailers and not message.get("more_body", False)
        if kind == "http.response.pathsend":
            return not self._trailers
        if kind == "http.response.trailers":
            return not message.get("more_trailers", False)
        return False

    async def afinish(self, response: object) -> None:
        """Send `response` now, then release the held calls by its status."""
        if self.finished or self.started:
            raise ResponseStartedError(
                "finish_request() was called already"
                if self.finished
                else "the application has started its response; finish_request() comes first"
            )
        app = asgi_response(response, self.http_scope, self.receive)
        self.finished = True
        try:
            await app(self.http_scope, self.receive, self._pass)
        except OSError as error:
            logger.warning("jumpqueue: finish_request() could not send the response: %r", error)
        except BaseException as error:
            if self.status is None:  # nothing went out: as if finish_request() was never called
                self.finished = False
                raise
            self.counters.add("finished_early")
            self.release(error)
            raise
        self.counters.add("finished_early")
        self.release(None)

    def finish(self, response: object) -> None:
        """`afinish()` from a thread the request's event loop runs sync code in."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise JumpQueueError(
                "finish_request() cannot block the event loop serving this request; "
                "use 'await jumpqueue.afinish_request(response)' in async code"
            )
        asyncio.run_coroutine_threadsafe(self.afinish(response), self.loop).result()

    # -- what the middleware does ------------------------------------------------------------

    def release(self, error: BaseException | None) -> None:
        """Hand the held calls over by the request's outcome; only the first call acts."""
        self.request_scope.release(succeeded=self._succeeded(error))

    async def arelease(self, error: BaseException | None) -> None:
        """`release()`, with the journal's commit waited for off the event loop."""
        succeeded = self._succeeded(error)
        try:
            if self.request_scope.unsealed:
                await self.request_scope.aseal(always_only=not succeeded)
        finally:  # cancelled meanwhile: release() writes what is left, then it goes on
            self.request_scope.release(succeeded=succeeded)

    def _succeeded(self, error: BaseException | None) -> bool:
        if self.status is not None and self.status >= 400:  # noqa: PLR2004
            return False
        if error is None:
            return self.complete or self.disconnected
        # The client went away: the work is still the server's to do.
        return self.disconnected and isinstance(error, (OSError, asyncio.CancelledError))

    async def overloaded(self, error: OverloadedError) -> None:
        """Answer 503 for a call the backlog rejected; the request's calls are skipped."""
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in overloaded_headers(error)
        ]
        with contextlib.suppress(OSError):
            await self._pass({"type": "http.response.start", "status": 503, "headers": headers})
            await self._pass({"type": "http.response.body", "body": OVERLOADED_BODY})
        self.counters.add("overloaded")
        log_overloaded(error)

    def error_after_finish(self, error: BaseException) -> None:
        """Log and count an exception raised after finish_request(); the client has its answer."""
        self.counters.add("errors_after_finish")
        log_error_after_finish(error)
