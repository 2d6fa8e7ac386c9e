"""A Flask application with the status page and a Prometheus endpoint, for several workers."""

from __future__ import annotations

import os
import time

from flask import Flask, Response
from prometheus_client import CollectorRegistry, generate_latest

import jumpqueue
from jumpqueue.contrib.flask import JumpQueue, add_status_page
from jumpqueue.prometheus import JumpQueueCollector

app = Flask(__name__)
JumpQueue(app)
add_status_page(app)
REGISTRY = CollectorRegistry()
REGISTRY.register(JumpQueueCollector())


@jumpqueue.task
def work(seconds: float) -> None:
    """A short call after the response."""
    time.sleep(seconds)


@app.get("/work")
def defer_work() -> Response:
    """Defer one call; say which worker process took the request."""
    jumpqueue.defer(work, 0.02)
    return Response(str(os.getpid()), mimetype="text/plain")


@app.get("/stats")
def stats() -> Response:
    """This worker's runtime (the harness waits for it to answer)."""
    return Response(str(jumpqueue.stats().submitted), mimetype="text/plain")


@app.get("/metrics")
def metrics() -> Response:
    """The collector's scrape."""
    return Response(generate_latest(REGISTRY), mimetype="text/plain")
