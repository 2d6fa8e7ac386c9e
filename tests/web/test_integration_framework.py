"""A tiny ASGI framework integrated through `jumpqueue.integration` alone, served by uvicorn.

It is the glue a third party would write for another framework or server: no
jumpqueue middleware and no private module, only the public seam.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import jumpqueue
from jumpqueue import Deferred, OverloadedError, Runtime, Status
from jumpqueue.asgi import Receive, Scope, Send
from jumpqueue.context import request_id
from jumpqueue.integration import (
    OVERLOADED_BODY,
    HttpCounters,
    RequestScope,
    carry_from_headers,
    drain_runtime,
    log_overloaded,
    overloaded_headers,
    start_runtime,
    wrap_calls,
)

pytest.importorskip("uvicorn")

WAIT = 10.0

Handler = Callable[[], tuple[int, bytes]]

#: What the framework's own context manager around each call sets (Flask's app context, say).
framework_app: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "framework_app", default=None
)


class TinyFramework:
    """Routes by path to a sync handler returning `(status, body)`; integrated with jumpqueue."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.counters = HttpCounters()
        self.held_before_last_byte: list[int] = []
        self.started = threading.Event()
        self.drained = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        request_scope = RequestScope()
        scope_token = request_scope.activate()
        carried = carry_from_headers(scope["headers"])
        try:
            with wrap_calls(self._app_context):
                status, body = self.routes[scope["path"]]()
        except OverloadedError as error:
            request_scope.discard()
            self.counters.add("overloaded")
            log_overloaded(error)
            await self._respond(send, 503, OVERLOADED_BODY, overloaded_headers(error))
            return
        except Exception:  # noqa: BLE001 -- a framework answers 500 to what a handler raises
            request_scope.discard()
            await self._respond(send, 500, b"failed")
            return
        finally:
            for variable, token in reversed(carried):
                variable.reset(token)
            request_scope.deactivate(scope_token)
        await self._respond(send, status, body, scope=request_scope)
        request_scope.release(succeeded=status < 400)

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        *,
        scope: RequestScope | None = None,
    ) -> None:
        if headers is None:
            headers = [("Content-Length", str(len(body)))]
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        if scope is not None:
            await scope.aseal()  # with a journal: on disk before the last byte leaves
            self.held_before_last_byte.append(len(scope))
        await send({"type": "http.response.body", "body": body})

    @contextlib.contextmanager
    def _app_context(self) -> Iterator[None]:
        token = framework_app.set("tiny")
        try:
            yield
        finally:
            framework_app.reset(token)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                start_runtime(None)
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await drain_runtime(None)
                self.drained.set()
                await send({"type": "lifespan.shutdown.complete"})
                return


@contextlib.contextmanager
def served(app: TinyFramework) -> Iterator[httpx.Client]:
    """Serve the app with uvicorn on a loopback port, in a thread, lifespan included."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    # Listening already: requests wait in the backlog until uvicorn accepts them.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = "http://{}:{}".format(*sock.getsockname()[:2])
    try:
        assert app.started.wait(WAIT)
        with httpx.Client(base_url=base_url, timeout=WAIT) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


def app_of_the_call() -> tuple[str | None, str | None]:
    return framework_app.get(), request_id.get()


@jumpqueue.task(always=True)
def always() -> str:
    return "ran"


def test_integration_framework_releases_held_calls_after_the_last_byte() -> None:
    calls: list[Deferred[tuple[str | None, str | None]]] = []

    def index() -> tuple[int, bytes]:
        calls.append(jumpqueue.defer(app_of_the_call))
        return 200, b"ok"

    app = TinyFramework({"/": index})
    with served(app) as client:
        response = client.get("/", headers={"X-Request-ID": "r-1"})
        assert (response.status_code, response.content) == (200, b"ok")
        assert calls[0].result(timeout=WAIT) == ("tiny", "r-1")
    assert app.held_before_last_byte == [1]
    assert app.drained.is_set()
    assert jumpqueue.get_runtime().closed


def test_integration_framework_discards_the_calls_of_a_failed_request() -> None:
    calls: list[Deferred[Any]] = []

    def broken() -> tuple[int, bytes]:
        calls.append(jumpqueue.defer(app_of_the_call))
        calls.append(always.defer())
        raise RuntimeError("the handler failed")

    app = TinyFramework({"/broken": broken})
    with served(app) as client:
        assert client.get("/broken").status_code == 500
        assert calls[1].result(timeout=WAIT) == "ran"
    assert calls[0].status is Status.SKIPPED
    assert jumpqueue.stats().skipped == 1
    assert app.held_before_last_byte == []


def test_integration_framework_answers_overload_with_503_and_retry_after(
    use_runtime: Callable[..., Runtime],
) -> None:
    use_runtime(max_pending=1, on_overload="reject", overload_wait=1.5)
    gate = threading.Event()
    blocker = jumpqueue.defer(gate.wait, WAIT)

    def index() -> tuple[int, bytes]:
        jumpqueue.defer(app_of_the_call)
        return 200, b"ok"

    app = TinyFramework({"/": index})
    try:
        with served(app) as client:
            response = client.get("/")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.content == OVERLOADED_BODY
            gate.set()  # before the server drains the runtime at shutdown
    finally:
        gate.set()
    assert blocker.result(timeout=WAIT) is True
    assert app.counters.overloaded == 1
    assert jumpqueue.stats().shed == {"reject": 1}
