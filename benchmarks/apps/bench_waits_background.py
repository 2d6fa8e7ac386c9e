"""Starlette's `BackgroundTasks`, no jumpqueue imported; each task times its wait to start."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio.to_thread
from _waits import WAITS, blocking_task, io_task
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

#: Threads running the blocking task: jumpqueue's default pool size, so both absorb 40 calls/s.
THREADS = 8


async def io(_: Request) -> PlainTextResponse:
    tasks = BackgroundTasks()
    number, at = WAITS.deferring()
    tasks.add_task(io_task, number, at)
    return PlainTextResponse(str(number), background=tasks)


async def blocking(_: Request) -> PlainTextResponse:
    tasks = BackgroundTasks()
    number, at = WAITS.deferring()
    tasks.add_task(blocking_task, number, at)  # a plain function: Starlette's thread pool
    return PlainTextResponse(str(number), background=tasks)


async def stats(request: Request) -> JSONResponse:
    call = request.query_params.get("call")
    return JSONResponse(WAITS.snapshot(int(call) if call else None))


@contextlib.asynccontextmanager
async def threads_of_the_pool(_: Starlette) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    yield


#: Starlette as it comes.
defaults = Starlette(routes=[Route("/io", io), Route("/stats", stats)])

#: Blocking tasks on as many threads as jumpqueue's default pool.
pool_of_8 = Starlette(
    routes=[Route("/blocking", blocking), Route("/stats", stats)], lifespan=threads_of_the_pool
)
