"""Starlette apps for `benchmarks/http_latency.py`, served by uvicorn (set by `JUMPQUEUE_*`)."""

from __future__ import annotations

import asyncio
import time

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware

TASK_SECONDS = 0.2


async def io_task() -> None:
    """200 ms of I/O-like waiting, on the event loop."""
    await asyncio.sleep(TASK_SECONDS)


def blocking_task() -> None:
    """200 ms of blocking I/O-like waiting, on a thread."""
    time.sleep(TASK_SECONDS)


async def noop() -> None:
    """Nothing: only the cost of handing work over, running and settling it."""


async def no_task(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def background_noop(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", background=BackgroundTask(noop))


async def deferred_noop(_: Request) -> PlainTextResponse:
    jumpqueue.defer(noop)
    return PlainTextResponse("ok")


async def background(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", background=BackgroundTask(io_task))


async def deferred(_: Request) -> PlainTextResponse:
    jumpqueue.defer(io_task)
    return PlainTextResponse("ok")


async def deferred_thread(_: Request) -> PlainTextResponse:
    jumpqueue.defer(blocking_task)
    return PlainTextResponse("ok")


async def stats(_: Request) -> JSONResponse:
    """The runtime's counters, and when they were read (the client's clock lags under load)."""
    return JSONResponse({**jumpqueue.stats().as_dict(), "time": time.monotonic()})


#: No jumpqueue at all: the no-task baseline, and Starlette's own BackgroundTasks (each app
#: routes its no-op endpoint second, so that routing costs them the same).
plain = Starlette(
    routes=[
        Route("/none", no_task),
        Route("/background-noop", background_noop),
        Route("/background", background),
    ]
)

#: The same server with jumpqueue's middleware.
with_jumpqueue = Starlette(
    routes=[
        Route("/none", no_task),
        Route("/jumpqueue-noop", deferred_noop),
        Route("/jumpqueue", deferred),
        Route("/jumpqueue-thread", deferred_thread),
        Route("/stats", stats),
    ],
    middleware=[Middleware(JumpQueueMiddleware)],
)
