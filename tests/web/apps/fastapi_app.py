"""A FastAPI application with `jumpqueue.contrib.starlette.JumpQueueMiddleware`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse, Response

import jumpqueue
from jumpqueue.contrib.starlette import HttpCounters, JumpQueueMiddleware

from . import common

COUNTERS = HttpCounters()

app = FastAPI()
app.add_middleware(JumpQueueMiddleware, counters=COUNTERS)


def audited(tag: str) -> Iterator[str]:
    """A dependency that defers calls before and after the endpoint (in its teardown)."""
    jumpqueue.defer(common.report, f"{tag}-dependency")
    yield tag
    jumpqueue.defer(common.report, f"{tag}-teardown")


@app.get("/ordering")
async def ordering(tag: Annotated[str, Depends(audited)]) -> PlainTextResponse:
    """Defer a coroutine that blocks until the test has read the response."""
    jumpqueue.defer(common.ablock, tag)
    return PlainTextResponse("ok")


@app.get("/fail")
def fail(tag: str, how: str) -> Response:
    """A sync endpoint (run in the thread pool) whose request fails."""
    common.defer_failing(tag)
    if how == "raise":
        raise RuntimeError("the handler failed")
    return PlainTextResponse("failed", status_code=500)


@app.get("/finish")
async def finish(tag: str) -> PlainTextResponse:
    """Answer with finish_request, then go on working."""
    jumpqueue.defer(common.report, f"{tag}-before")
    await jumpqueue.afinish_request(PlainTextResponse("early"))
    await common.ablock(f"{tag}-handler")
    jumpqueue.defer(common.report, f"{tag}-after")
    return PlainTextResponse("late")


@app.get("/work")
async def work(ms: int) -> PlainTextResponse:
    """Defer a call that holds a worker for `ms` milliseconds."""
    jumpqueue.defer(common.pause, ms)
    return PlainTextResponse("ok")


@app.get("/large")
async def large(tag: str, size: int) -> Response:
    """A large body: its call starts once the client has the last byte."""
    jumpqueue.defer(common.report_start, tag)
    return Response(common.large_body(size), media_type="application/octet-stream")


@app.get("/stats")
async def stats() -> Response:
    """The runtime's stats and the middleware's counters."""
    return Response(common.stats_body(COUNTERS), media_type="application/json")
