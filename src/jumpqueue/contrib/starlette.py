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
"""

from __future__ import annotations

from jumpqueue.asgi import HttpCounters, JumpQueueMiddleware

__all__ = ["HttpCounters", "JumpQueueMiddleware"]
