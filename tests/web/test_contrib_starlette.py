"""The Starlette/FastAPI glue in process, driven by the fake ASGI server.

(Starlette's own test client warns about its httpx dependency in recent releases.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

import jumpqueue
from jumpqueue import Deferred, Runtime, Status

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI

from jumpqueue.contrib.starlette import HttpCounters, JumpQueueMiddleware

from .fakes import http_scope, serve_asgi
from .test_asgi_middleware import run_lifespan

WAIT = 5.0


def make_app(counters: HttpCounters | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JumpQueueMiddleware, counters=counters or HttpCounters())
    return app


def test_contrib_starlette_holds_calls_deferred_in_a_dependency() -> None:
    app = make_app()
    calls: list[Deferred[None]] = []
    statuses: list[Status] = []

    def session() -> Iterator[str]:
        calls.append(jumpqueue.defer(lambda: None))
        yield "session"
        calls.append(jumpqueue.defer(lambda: None))

    @app.get("/")
    def index(name: str = Depends(session)) -> str:
        # (Annotated[str, Depends(session)] cannot name a local function under
        # `from __future__ import annotations`.)
        statuses.append(calls[0].status)
        return name

    exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    assert exchange.body == b'"session"'
    assert all(call.wait(WAIT) for call in calls)
    assert statuses == [Status.HELD]
    assert [call.status for call in calls] == [Status.SUCCEEDED] * 2


def test_contrib_starlette_skips_calls_of_a_failed_request() -> None:
    app = make_app()
    calls: list[Deferred[None]] = []

    @app.get("/")
    async def index() -> str:
        calls.append(jumpqueue.defer(lambda: None))
        raise RuntimeError("boom")

    exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    assert isinstance(exchange.error, RuntimeError)
    assert exchange.status == 500
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_contrib_starlette_answers_overload_with_503(use_runtime: Callable[..., Runtime]) -> None:
    counters = HttpCounters()
    app = make_app(counters)

    @app.get("/")
    async def index() -> str:
        jumpqueue.defer(lambda: None)
        return "unreachable"

    use_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    jumpqueue.defer(gate.wait, WAIT)
    try:
        exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    finally:
        gate.set()
    assert exchange.status == 503
    assert exchange.headers["retry-after"] == "1"
    assert counters.overloaded == 1


def test_contrib_starlette_lifespan_drains_the_default_runtime(
    use_runtime: Callable[..., Runtime],
) -> None:
    runtime = jumpqueue.get_runtime()
    gate = threading.Event()
    call = jumpqueue.defer(gate.wait, WAIT)
    asyncio.run(run_lifespan(make_app(), on_shutdown=gate.set))
    assert runtime.closed
    assert call.status is Status.SUCCEEDED
