"""Starlette and FastAPI glue: jumpqueue's pure ASGI middleware, added the Starlette way.

    app = FastAPI()  # or Starlette()
    app.add_middleware(JumpQueueMiddleware)

Starlette passes every scope, lifespan included, through the middleware stack,
and keeps its own `ServerErrorMiddleware` outermost; the exceptions a route
does not handle reach jumpqueue's middleware first, so an `OverloadedError`
from `defer()` becomes `503 Service Unavailable` with `Retry-After` there.
`defer()` works anywhere in the request: endpoints, sync endpoints run in the
thread pool, and dependencies (with `yield` too), since they all run in a copy
of the request's context.

The status page (see `jumpqueue.status`) is one route:

    app = Starlette(routes=[..., status_route()])  # FastAPI: app.routes.append(status_route())
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jumpqueue.asgi import HttpCounters, JumpQueueMiddleware
from jumpqueue.status import StatusPage

__all__ = ["HttpCounters", "JumpQueueMiddleware", "status_route"]


def status_route(path: str = "/jumpqueue/status", *, token: str | None = None) -> Route:
    """The status page as a route at `path` (loopback clients only, unless a `token` is given)."""
    page = StatusPage(token=token)

    def jumpqueue_status(request: Request) -> Response:
        status, headers, body = page.respond(
            request.client.host if request.client is not None else None,
            request.headers.get("authorization"),
            request.url.query,
        )
        return Response(body, status, headers=dict(headers))

    return Route(path, jumpqueue_status)
