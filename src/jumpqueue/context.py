"""The request context that travels with a call handed to another machine: a request id, a trace.

Calls run in this process (thread, async, process executors) see every
`contextvars` value of the request that deferred them. A call handed off to a
backend (RQ, Celery) runs on another machine, where the request's context
variables do not exist: only these two are carried in the message, and set
again on the worker before the function runs.

    from jumpqueue.context import request_id
    request_id.set(request.headers.get("x-request-id"))
    jumpqueue.defer(send_receipt, order_id)   # the worker sees request_id too

Set them from the request (or let the middleware do it); carry anything else
your task needs as an argument.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping

__all__ = ["carried", "request_id", "restored", "traceparent"]

#: The id of the request that deferred the call (an `X-Request-ID`, or your own).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jumpqueue_request_id", default=None
)
#: The W3C trace context (`traceparent` header) of that request, when present.
traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jumpqueue_traceparent", default=None
)

_CARRIED = {"request_id": request_id, "traceparent": traceparent}
# version-trace_id-parent_id-flags, lower-case hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
#: Longer request ids are not carried: a message carries a small, bounded context.
MAX_REQUEST_ID = 200


def carried(context: contextvars.Context | None = None) -> dict[str, str]:
    """The values to carry from `context` (by default the current one), invalid ones left out."""
    if context is None:
        context = contextvars.copy_context()
    values: dict[str, str] = {}
    value = context.get(request_id)
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID:
        values["request_id"] = value
    value = context.get(traceparent)
    if isinstance(value, str) and _TRACEPARENT.fullmatch(value):
        values["traceparent"] = value
    return values


@contextlib.contextmanager
def restored(values: Mapping[str, object]) -> Iterator[None]:
    """Set the carried values for the block's duration (on the worker); unknown keys are ignored."""
    tokens = [
        (var, var.set(value))
        for key, var in _CARRIED.items()
        if isinstance(value := values.get(key), str)
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
