"""Flask glue: an extension that holds deferred calls until the response is sent.

    app = Flask(__name__)
    app.config["JUMPQUEUE_MAX_WORKERS"] = 4  # optional, like the environment variables
    JumpQueue(app)

`JumpQueue` wraps `app.wsgi_app` in jumpqueue's WSGI middleware, so calls are
handed over when the server closes the response (after its last byte), and
`finish_request()` works. Every call runs inside an application context of the
app (Flask's own `call_on_close` gives none), and an `OverloadedError` from
`defer()` becomes `503 Service Unavailable` with `Retry-After`.
"""

from __future__ import annotations

from flask import Flask, Response

from jumpqueue import OverloadedError
from jumpqueue.integration import OVERLOADED_BODY, HttpCounters, log_overloaded, overloaded_headers
from jumpqueue.wsgi import JumpQueueMiddleware

from ._settings import apply_settings

__all__ = ["JumpQueue"]

_PREFIX = "JUMPQUEUE_"


class JumpQueue:
    """The Flask extension: `JumpQueue(app)`, or `JumpQueue()` then `init_app(app)`.

    Settings are read from `app.config`, spelt as the environment variables
    (`JUMPQUEUE_MAX_WORKERS`, `JUMPQUEUE_ON_OVERLOAD`, ...), plus
    `JUMPQUEUE_OVERLOAD_RESPONSE` (answer 503 to an `OverloadedError`; true by default).

    Attributes:
        counters: 503s and early finishes of the apps this extension serves.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.counters = HttpCounters()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Wrap the app's WSGI callable and register the 503 error handler.

        Raises:
            ConfigurationError: a `JUMPQUEUE_*` setting is unknown or out of range.
        """
        settings = {
            name[len(_PREFIX) :]: value
            for name, value in app.config.items()
            if name.startswith(_PREFIX)
        }
        web = apply_settings(settings, source="app.config")
        overload_response = bool(web.get("overload_response", True))
        app.wsgi_app = JumpQueueMiddleware(  # type: ignore[method-assign]
            app.wsgi_app,
            overload_response=overload_response,
            around_calls=(app.app_context,),
            counters=self.counters,
        )
        if overload_response:
            app.register_error_handler(OverloadedError, self._overloaded)
        app.extensions["jumpqueue"] = self

    def _overloaded(self, error: OverloadedError) -> Response:
        self.counters.add("overloaded")
        log_overloaded(error)
        return Response(OVERLOADED_BODY, status=503, headers=overloaded_headers(error))
