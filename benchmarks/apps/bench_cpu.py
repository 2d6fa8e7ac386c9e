"""A Starlette app for `benchmarks/cpu_priority.py`: /ping, and /cpu deferring 50 ms of CPU.

`BENCH_EXECUTOR` names the executor the CPU task runs in ("process" or "thread");
`JUMPQUEUE_*` sets the rest (`JUMPQUEUE_PROCESS_PRIORITY` above all).
"""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware

#: CPU seconds one task uses, whatever it waits for a core meanwhile.
TASK_CPU = 0.05


def burn() -> None:
    """Spin until this thread has used TASK_CPU seconds of CPU."""
    end = time.thread_time() + TASK_CPU
    while time.thread_time() < end:
        pass


cpu_task = jumpqueue.task(executor=os.environ.get("BENCH_EXECUTOR", "process"))(burn)  # type: ignore[call-overload]


async def ping(_: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


async def cpu(_: Request) -> PlainTextResponse:
    jumpqueue.defer(cpu_task)
    return PlainTextResponse("ok")


async def stats(_: Request) -> JSONResponse:
    return JSONResponse(jumpqueue.stats().as_dict())


app = Starlette(
    routes=[Route("/ping", ping), Route("/cpu", cpu), Route("/stats", stats)],
    middleware=[Middleware(JumpQueueMiddleware)],
)
