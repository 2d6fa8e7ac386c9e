"""A plain WSGI shop whose fulfilment runs after the response: here, or on RQ workers.

With no configuration the calls run in this process's pools. Set
`JUMPQUEUE_BACKEND=rq+redis://HOST:6379/0` and they are handed to RQ instead,
for `rq worker` processes on other machines to run: the code stays the same.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

import jumpqueue
import redis
from jumpqueue.wsgi import JumpQueueMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

REDIS_URL = os.environ.get("ORDERS_REDIS", "redis://127.0.0.1:6379/0")
FULFILLED = os.environ.get("ORDERS_FULFILLED", "orders:fulfilled")


@jumpqueue.task(retries=3, timeout=60)
def fulfil(order_id: int) -> None:
    """Fulfil an order (here: note which process on which machine did it)."""
    done = {"order": order_id, "host": socket.gethostname(), "pid": os.getpid()}
    redis.Redis.from_url(REDIS_URL).rpush(FULFILLED, json.dumps(done))


def orders(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """POST /orders/<id>: 202 now, the fulfilment after the response."""
    order = environ["PATH_INFO"].removeprefix("/orders/")
    if environ["REQUEST_METHOD"] != "POST" or not order.isdigit():
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    jumpqueue.defer(fulfil, int(order))
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [b"accepted"]


application = JumpQueueMiddleware(orders)
