"""jumpqueue as `JUMPQUEUE_*` sets it (none: its defaults); each call times its wait to start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _waits import WAITS, blocking_task, io_task
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware


def defer(task: Callable[[int, float], Any]) -> PlainTextResponse:
    number, at = WAITS.deferring()
    try:
        jumpqueue.defer(task, number, at)
    except jumpqueue.OverloadedError:
        WAITS.refused(number)
        raise  # the middleware answers 503 with Retry-After
    return PlainTextResponse(str(number))


async def io(_: Request) -> PlainTextResponse:
    return defer(io_task)  # a coroutine function: the async executor, on this loop


async def blocking(_: Request) -> PlainTextResponse:
    return defer(blocking_task)  # a plain function: the thread pool


async def stats(request: Request) -> JSONResponse:
    call = request.query_params.get("call")
    figures = WAITS.snapshot(int(call) if call else None)
    return JSONResponse({**figures, "jumpqueue": jumpqueue.stats().as_dict()})


app = Starlette(
    routes=[Route("/io", io), Route("/blocking", blocking), Route("/stats", stats)],
    middleware=[Middleware(JumpQueueMiddleware)],
)
