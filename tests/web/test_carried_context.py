"""The request id and trace context of a request travel with the calls it defers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

import jumpqueue
from jumpqueue.asgi import JumpQueueMiddleware as AsgiMiddleware
from jumpqueue.asgi import Receive, Scope, Send
from jumpqueue.context import request_id, traceparent
from jumpqueue.wsgi import JumpQueueMiddleware as WsgiMiddleware

from .fakes import http_scope, serve_asgi, serve_wsgi, wsgi_environ

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def read_context() -> tuple[str | None, str | None]:
    return request_id.get(), traceparent.get()


def test_carried_context_asgi_headers_reach_the_deferred_call() -> None:
    handles: list[jumpqueue.Deferred[tuple[str | None, str | None]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        handles.append(jumpqueue.defer(read_context))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = http_scope(
        headers=[(b"host", b"x"), (b"x-request-id", b"req-7"), (b"traceparent", TRACE.encode())]
    )
    asyncio.run(serve_asgi(AsgiMiddleware(app), scope))
    assert handles[0].result(timeout=5) == ("req-7", TRACE)
    assert read_context() == (None, None)


def test_carried_context_wsgi_headers_reach_the_deferred_call() -> None:
    handles: list[jumpqueue.Deferred[tuple[str | None, str | None]]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        handles.append(jumpqueue.defer(read_context))
        start_response("200 OK", [])
        return [b"ok"]

    environ = wsgi_environ(HTTP_X_REQUEST_ID="req-8", HTTP_TRACEPARENT=TRACE)
    serve_wsgi(WsgiMiddleware(app), environ)
    assert handles[0].result(timeout=5) == ("req-8", TRACE)


def test_carried_context_keeps_a_value_the_application_set() -> None:
    handles: list[jumpqueue.Deferred[tuple[str | None, str | None]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        handles.append(jumpqueue.defer(read_context))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> None:
        request_id.set("set-by-app")
        await serve_asgi(AsgiMiddleware(app), http_scope(headers=[(b"x-request-id", b"hdr")]))

    asyncio.run(main())
    assert handles[0].result(timeout=5) == ("set-by-app", None)
