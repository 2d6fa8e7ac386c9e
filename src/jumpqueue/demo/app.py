"""The demo's web application: a Starlette endpoint that answers at once, then works 100 ms."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware, status_route

#: Small on purpose, so that a spike of a few hundred requests a second overflows it.
CONFIG = jumpqueue.Config(max_workers=4, max_pending=40, overload_wait=0.25)
TASK_SECONDS = 0.1


@jumpqueue.task(timeout=5)
def send_welcome_email(address: str) -> None:
    """Stands for slow I/O done after the response: an SMTP call, a webhook."""
    del address  # a real task would write to it
    time.sleep(TASK_SECONDS)


def signup(request: Request) -> JSONResponse:
    """Answer now; the e-mail goes out after the response has been sent."""
    jumpqueue.defer(send_welcome_email, request.query_params.get("email", "a@example.com"))
    return JSONResponse({"status": "welcome!"})


def stats(_: Request) -> JSONResponse:
    """The runtime's counters and gauges, for the demo's live view."""
    return JSONResponse(jumpqueue.stats().as_dict())


jumpqueue.configure(CONFIG)
app = Starlette(
    routes=[Route("/signup", signup, methods=["POST"]), Route("/stats", stats), status_route()],
    middleware=[Middleware(JumpQueueMiddleware)],
)
