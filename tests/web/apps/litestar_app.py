"""A Litestar application with `jumpqueue.contrib.litestar.JumpQueuePlugin`."""

from __future__ import annotations

from litestar import Litestar, Response, get

import jumpqueue
from jumpqueue.contrib.litestar import JumpQueuePlugin

from . import common

PLUGIN = JumpQueuePlugin()


@get("/ordering")
async def ordering(tag: str) -> str:
    """Defer a coroutine that blocks until the test has read the response."""
    jumpqueue.defer(common.ablock, tag)
    return "ok"


@get("/fail", sync_to_thread=True)
def fail(tag: str, how: str) -> Response[str]:
    """A sync handler (run in a thread) whose request fails."""
    common.defer_failing(tag)
    if how == "raise":
        raise RuntimeError("the handler failed")
    return Response("failed", status_code=500)


@get("/finish")
async def finish(tag: str) -> str:
    """Answer with finish_request, then go on working."""
    jumpqueue.defer(common.report, f"{tag}-before")
    await jumpqueue.afinish_request(Response("early", media_type="text/plain"))
    await common.ablock(f"{tag}-handler")
    jumpqueue.defer(common.report, f"{tag}-after")
    return "late"


@get("/work")
async def work(ms: int) -> str:
    """Defer a call that holds a worker for `ms` milliseconds."""
    jumpqueue.defer(common.pause, ms)
    return "ok"


@get("/large")
async def large(tag: str, size: int) -> Response[bytes]:
    """A large body: its call starts once the client has the last byte."""
    jumpqueue.defer(common.report_start, tag)
    return Response(common.large_body(size), media_type="application/octet-stream")


@get("/stats")
async def stats() -> Response[bytes]:
    """The runtime's stats and the plugin's counters."""
    return Response(common.stats_body(PLUGIN.counters), media_type="application/json")


app = Litestar(route_handlers=[ordering, fail, finish, work, large, stats], plugins=[PLUGIN])
