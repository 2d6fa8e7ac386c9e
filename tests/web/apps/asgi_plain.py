"""A hand-written ASGI application behind `jumpqueue.asgi.JumpQueueMiddleware`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.asgi import HttpCounters, JumpQueueMiddleware, Receive, Scope, Send

from . import common

COUNTERS = HttpCounters()


async def respond(send: Send, status: int, body: bytes, content_type: str = "text/plain") -> None:
    """Send a whole response in one body message."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def routes(scope: Scope, receive: Receive, send: Send) -> None:
    """The test routes: /ordering, /fail, /finish, /work, /large, /stats."""
    query: dict[str, Any] = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/ordering":
        jumpqueue.defer(common.ablock, query["tag"])
        # A streamed answer: the calls wait for its last part.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"o", "more_body": True})
        await send({"type": "http.response.body", "body": b"k"})
    elif path == "/fail":
        common.defer_failing(query["tag"])
        if query["how"] == "raise":
            raise RuntimeError("the handler failed")
        await respond(send, 500, b"failed")
    elif path == "/finish":
        tag = query["tag"]
        jumpqueue.defer(common.report, f"{tag}-before")
        await jumpqueue.afinish_request((200, [("Content-Type", "text/plain")], b"early"))
        await common.ablock(f"{tag}-handler")
        jumpqueue.defer(common.report, f"{tag}-after")
        await respond(send, 200, b"late")
    elif path == "/work":
        jumpqueue.defer(common.pause, int(query["ms"]))
        await respond(send, 200, b"ok")
    elif path == "/large":
        jumpqueue.defer(common.report_start, query["tag"])
        await respond(send, 200, common.large_body(int(query["size"])), "application/octet-stream")
    elif path == "/stats":
        await respond(send, 200, common.stats_body(COUNTERS), "application/json")
    else:
        await respond(send, 404, b"not found")


app = JumpQueueMiddleware(routes, counters=COUNTERS)
