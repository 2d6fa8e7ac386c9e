"""Litestar glue: a plugin that installs the middleware, the 503 handler and the lifespan steps.

    app = Litestar(route_handlers=[...], plugins=[JumpQueuePlugin()])

Litestar turns a handler's exception into a response inside the route, before
any middleware sees it, so the plugin registers an exception handler that
answers an `OverloadedError` from `defer()` with `503 Service Unavailable` and
`Retry-After`. Route middleware never see the lifespan protocol: the plugin
makes the runtime ready at startup and drains it at shutdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from litestar import Request, Response
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin

from jumpqueue import OverloadedError
from jumpqueue.asgi import JumpQueueMiddleware
from jumpqueue.integration import (
    OVERLOADED_BODY,
    HttpCounters,
    drain_runtime,
    log_overloaded,
    overloaded_headers,
    start_runtime,
)

if TYPE_CHECKING:
    from litestar.config.app import AppConfig

    from jumpqueue import Runtime

__all__ = ["JumpQueueMiddleware", "JumpQueuePlugin"]


class JumpQueuePlugin(InitPlugin):
    """Installs jumpqueue in a Litestar application.

    Args:
        runtime: the runtime that startup makes ready and shutdown drains; by
            default the default runtime at that moment.
        overload_response: answer 503 with Retry-After to an `OverloadedError`.

    Attributes:
        counters: 503s and early finishes of the application.
    """

    __slots__ = ("counters", "overload_response", "runtime")

    def __init__(self, *, runtime: Runtime | None = None, overload_response: bool = True) -> None:
        self.runtime = runtime
        self.overload_response = overload_response
        self.counters = HttpCounters()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the middleware (outermost), the exception handler and the lifespan hooks."""
        app_config.middleware.insert(
            0,
            DefineMiddleware(
                # Litestar types scopes as TypedDicts; the middleware takes any mapping.
                cast("Any", JumpQueueMiddleware),
                runtime=self.runtime,
                overload_response=self.overload_response,
                counters=self.counters,
            ),
        )
        if self.overload_response:
            app_config.exception_handlers.setdefault(OverloadedError, self._overloaded)
        app_config.on_startup.append(self._startup)
        app_config.on_shutdown.append(self._shutdown)
        return app_config

    def _startup(self) -> None:
        start_runtime(self.runtime)

    async def _shutdown(self) -> None:
        await drain_runtime(self.runtime)

    def _overloaded(
        self,
        request: Request[Any, Any, Any],  # noqa: ARG002 -- Litestar's signature
        error: Exception,
    ) -> Response[bytes]:
        if not isinstance(error, OverloadedError):  # registered for that type alone
            raise error
        self.counters.add("overloaded")
        log_overloaded(error)
        headers = {
            name: value for name, value in overloaded_headers(error) if name != "Content-Length"
        }
        return Response(OVERLOADED_BODY, status_code=503, headers=headers, media_type="text/plain")
