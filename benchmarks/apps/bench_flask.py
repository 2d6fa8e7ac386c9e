"""Flask apps for `benchmarks/http_latency.py`, served by gunicorn (configured by `JUMPQUEUE_*`)."""

from __future__ import annotations

import asyncio
import time

from flask import Flask, Response

import jumpqueue
from jumpqueue.contrib.flask import JumpQueue

TASK_SECONDS = 0.2


async def io_task() -> None:
    """200 ms of I/O-like waiting, on jumpqueue's background event loop."""
    await asyncio.sleep(TASK_SECONDS)


def blocking_task() -> None:
    """200 ms of blocking I/O-like waiting, in whichever thread calls it."""
    time.sleep(TASK_SECONDS)


def noop() -> None:
    """Nothing: only the cost of handing work over, running and settling it."""


#: No jumpqueue at all: the no-task baseline, and Werkzeug's `call_on_close`.
plain = Flask("plain")


@plain.get("/none")
def no_task() -> str:
    return "ok"


@plain.get("/call_on_close")
def call_on_close() -> Response:
    response = Response("ok")
    response.call_on_close(blocking_task)
    return response


@plain.get("/call_on_close-noop")
def call_on_close_noop() -> Response:
    response = Response("ok")
    response.call_on_close(noop)
    return response


#: The same app with jumpqueue's extension.
with_jumpqueue = Flask("with_jumpqueue")
JumpQueue(with_jumpqueue)


@with_jumpqueue.get("/none")
def extension_alone() -> str:
    return "ok"


@with_jumpqueue.get("/jumpqueue")
def deferred() -> str:
    jumpqueue.defer(io_task)
    return "ok"


@with_jumpqueue.get("/jumpqueue-noop")
def deferred_noop() -> str:
    jumpqueue.defer(noop)
    return "ok"
