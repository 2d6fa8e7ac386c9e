"""Handlers that wait on calls they deferred or submitted: a Starlette app and a WSGI app.

Each route answers with what the wait gave: the result, or the name of the
exception it raised. A wait that hung would time the test's client out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware as StarletteMiddleware
from jumpqueue.wsgi import JumpQueueMiddleware as WSGIMiddleware

from . import common

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: Longer than the client's timeout: a wait that hangs fails the test, never passes it.
WAIT = 30.0
_failed_once: set[str] = set()
_lock = threading.Lock()


@jumpqueue.task(retries=1, retry_backoff=0)
def send(tag: str) -> str:
    """Fail the first attempt for each tag, then succeed: the task's retries apply."""
    with _lock:
        first = tag not in _failed_once
        _failed_once.add(tag)
    if first:
        raise ConnectionError(f"{tag}: the first try fails")
    return f"sent {tag}"


@jumpqueue.task(retries=1, retry_backoff=0)
async def asend(tag: str) -> str:
    """`send` as a coroutine."""
    await asyncio.sleep(0)
    return send.fn(tag)


def wait_on_deferred(tag: str) -> str:
    """Defer a call in the request and wait on it: never runs before the response."""
    handle = jumpqueue.defer(common.report, tag)
    try:
        handle.result(timeout=WAIT)
    except jumpqueue.WaitDeadlockError as error:
        return f"WaitDeadlockError: {error}"
    return "waited"  # pragma: no cover -- would mean the call ran before the response


# -- ASGI ----------------------------------------------------------------------------------


async def deferred_async(request: Request) -> PlainTextResponse:
    """An async handler waits on its own held call."""
    return PlainTextResponse(wait_on_deferred(request.query_params["tag"]))


def deferred_sync(request: Request) -> PlainTextResponse:
    """A sync handler (Starlette's thread pool) waits on its own held call."""
    return PlainTextResponse(wait_on_deferred(request.query_params["tag"]))


async def coroutine_on_loop(request: Request) -> PlainTextResponse:
    """An async handler blocks on a coroutine that runs on its own event loop."""
    handle = jumpqueue.submit(asend, request.query_params["tag"])
    try:
        handle.result(timeout=WAIT)
    except jumpqueue.WaitDeadlockError:
        return PlainTextResponse(f"WaitDeadlockError, then {await handle.aresult(WAIT)}")
    return PlainTextResponse("waited")  # pragma: no cover


async def submitted_async(request: Request) -> PlainTextResponse:
    """An async handler runs a coroutine now, with its retries, and awaits it."""
    return PlainTextResponse(await asend.submit(request.query_params["tag"]).aresult(WAIT))


def submitted_sync(request: Request) -> PlainTextResponse:
    """A sync handler runs a call now, with its retries, and waits for it."""
    return PlainTextResponse(jumpqueue.submit(send, request.query_params["tag"]).result(WAIT))


async def stats(request: Request) -> JSONResponse:
    """What the harness polls until the server serves."""
    return JSONResponse(jumpqueue.stats().as_dict())


asgi_app = Starlette(
    routes=[
        Route("/deferred-async", deferred_async),
        Route("/deferred-sync", deferred_sync),
        Route("/coroutine-on-loop", coroutine_on_loop),
        Route("/submitted-async", submitted_async),
        Route("/submitted-sync", submitted_sync),
        Route("/stats", stats),
    ]
)
asgi_app.add_middleware(StarletteMiddleware)


# -- WSGI ----------------------------------------------------------------------------------


def _routes(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/deferred-sync":
        body = wait_on_deferred(query["tag"])
    elif path == "/submitted-sync":
        body = jumpqueue.submit(send, query["tag"]).result(WAIT)
    elif path == "/stats":
        body = "{}"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


wsgi_app = WSGIMiddleware(_routes)
