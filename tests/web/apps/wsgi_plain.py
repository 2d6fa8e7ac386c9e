"""A hand-written WSGI application behind `jumpqueue.wsgi.JumpQueueMiddleware`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.wsgi import HttpCounters, JumpQueueMiddleware

from . import common

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

COUNTERS = HttpCounters()


def routes(  # noqa: PLR0911 -- one return per route reads best
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    """The test routes: /ordering, /fail, /finish, /work, /large, /stats."""
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/ordering":
        jumpqueue.defer(common.block, query["tag"])
        return _streamed(start_response)
    if path == "/fail":
        common.defer_failing(query["tag"])
        if query["how"] == "raise":
            raise RuntimeError("the handler failed")
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"failed"]
    if path == "/finish":
        tag = query["tag"]
        jumpqueue.defer(common.report, f"{tag}-before")
        jumpqueue.finish_request((200, [("Content-Type", "text/plain")], b"early"))
        common.block(f"{tag}-handler")
        jumpqueue.defer(common.report, f"{tag}-after")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]
    if path == "/work":
        jumpqueue.defer(common.pause, int(query["ms"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/large":
        jumpqueue.defer(common.report_start, query["tag"])
        body = common.large_body(int(query["size"]))
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [common.stats_body(COUNTERS)]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def _streamed(start_response: StartResponse) -> Iterator[bytes]:
    # A generator body: the calls wait until the server has iterated and closed it.
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"o"
    yield b"k"


app = JumpQueueMiddleware(routes, counters=COUNTERS)
