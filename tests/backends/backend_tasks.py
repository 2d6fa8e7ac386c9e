"""Tasks the backend tests hand off: importable by RQ and Celery workers, reporting to the test.

Each task sends one JSON line to the test's `Reporter` (address in
`JQ_TEST_REPORT`) and reads back how many reports with that tag the
test has had, this one included; `flaky` and `killed_once` use that count to
behave differently on their first runs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

import jumpqueue
from jumpqueue.context import request_id, traceparent

REPORT_ENV = "JQ_TEST_REPORT"
#: How long `killed_once` waits, on its first run, for the test to kill its worker.
KILL_WAIT = 60.0


def report(tag: str, **fields: Any) -> int:
    """Send a report to the test; the number of reports with this tag so far."""
    host, port = os.environ[REPORT_ENV].rsplit(":", 1)
    event = {
        "tag": tag,
        "pid": os.getpid(),
        "request_id": request_id.get(),
        "traceparent": traceparent.get(),
        **fields,
    }
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(json.dumps(event).encode() + b"\n")
        with sock.makefile("rb") as reply:
            return int(reply.readline())


@jumpqueue.task(name="tests.backends.record")
def record(tag: str, payload: dict[str, Any], *, note: str = "") -> None:
    """Report the arguments it was called with."""
    report(tag, payload=payload, note=note)


def plain_record(tag: str, payload: list[Any]) -> None:
    """The same, as a plain function (not a task)."""
    report(tag, payload=payload)


async def async_record(tag: str) -> None:
    """The same, as a coroutine function."""
    report(tag)


def current_span() -> list[int]:
    """The trace and span ids of the span current while it runs (OpenTelemetry)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return [context.trace_id, context.span_id]


@jumpqueue.task(retries=2, retry_backoff=0.0, retry_on=(ValueError,))
def flaky(tag: str, failures: int) -> None:
    """Fail with ValueError on the first `failures` runs, then succeed."""
    if report(tag) <= failures:
        raise ValueError(f"{tag}: planned failure")


@jumpqueue.task(retries=3, retry_backoff=0.0, retry_on=(ValueError,))
def wrong_kind(tag: str) -> None:
    """Fail with an error its task does not retry on."""
    report(tag)
    raise KeyError(tag)


@jumpqueue.task(timeout=7, retries=2, retry_backoff=1.5)
def with_options(tag: str) -> None:
    """A task whose options the tests look for in the engine's job."""
    report(tag)


@jumpqueue.task
def killed_once(tag: str) -> None:
    """On its first run, wait to be killed with its worker; on the next, report done."""
    if report(tag) == 1:
        threading.Event().wait(KILL_WAIT)
