"""A Flask application with `jumpqueue.contrib.flask.JumpQueue`."""

from __future__ import annotations

from flask import Flask, Response, current_app, has_request_context, request

import jumpqueue
from jumpqueue.contrib.flask import JumpQueue

from . import common

app = Flask(__name__)
app.config["JUMPQUEUE_OVERLOAD_RESPONSE"] = True
EXTENSION = JumpQueue(app)


def report_app_name(tag: str) -> None:
    """A task that needs the application context, and has no request context."""
    request_context = "request-context" if has_request_context() else "no-request-context"
    common.report(f"{tag}-{current_app.name}-{request_context}")


@app.get("/ordering")
def ordering() -> Response:
    """Defer a call that blocks until the test has read the response."""
    tag = request.args["tag"]
    jumpqueue.defer(common.block, tag)
    jumpqueue.defer(report_app_name, tag)
    return Response("ok", mimetype="text/plain")


@app.get("/fail")
def fail() -> Response:
    """A request that fails."""
    common.defer_failing(request.args["tag"])
    if request.args["how"] == "raise":
        raise RuntimeError("the handler failed")
    return Response("failed", status=500)


@app.get("/finish")
def finish() -> Response:
    """Answer with finish_request, then go on working."""
    tag = request.args["tag"]
    jumpqueue.defer(common.report, f"{tag}-before")
    jumpqueue.finish_request(Response("early", mimetype="text/plain"))
    common.block(f"{tag}-handler")
    jumpqueue.defer(common.report, f"{tag}-after")
    return Response("late")


@app.get("/work")
def work() -> Response:
    """Defer a call that holds a worker for `ms` milliseconds."""
    jumpqueue.defer(common.pause, int(request.args["ms"]))
    return Response("ok")


@app.get("/large")
def large() -> Response:
    """A large body: its call starts once the client has the last byte."""
    jumpqueue.defer(common.report_start, request.args["tag"])
    return Response(
        common.large_body(int(request.args["size"])), mimetype="application/octet-stream"
    )


@app.get("/stats")
def stats() -> Response:
    """The runtime's stats and the extension's counters."""
    return Response(common.stats_body(EXTENSION.counters), mimetype="application/json")
