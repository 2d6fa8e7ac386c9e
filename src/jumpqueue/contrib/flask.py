"""Flask glue: an extension that holds deferred calls until the response is sent.

    app = Flask(__name__)
    app.config["JUMPQUEUE_MAX_WORKERS"] = 4  # optional, like the environment variables
    JumpQueue(app)

`JumpQueue` wraps `app.wsgi_app` in jumpqueue's WSGI middleware, so calls are
handed over when the server closes the response (after its last byte), and
`finish_request()` works. Every call runs inside an application context of the
app (Flask's own `call_on_close` gives none) and no request context: the
request is over, so a call takes what it needs from it as arguments. An
`OverloadedError` from `defer()` becomes `503 Service Unavailable` with
`Retry-After`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import flask.globals
from flask import Flask, Response

from jumpqueue import OverloadedError
from jumpqueue.integration import OVERLOADED_BODY, HttpCounters, log_overloaded, overloaded_headers
from jumpqueue.status import StatusPage
from jumpqueue.wsgi import JumpQueueMiddleware

from ._settings import apply_settings

__all__ = ["JumpQueue", "add_status_page"]

_PREFIX = "JUMPQUEUE_"

# Flask 3.0 and 3.1 keep the request context in a context variable of its own,
# which a call's context, copied at defer(), still holds once the request is
# over. Flask itself reads None there as "no request context".
_REQUEST_CONTEXT: ContextVar[Any] | None = getattr(flask.globals, "_cv_request", None)


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
            around_calls=(functools.partial(_app_context_only, app),),
            counters=self.counters,
        )
        if overload_response:
            app.register_error_handler(OverloadedError, self._overloaded)
        app.extensions["jumpqueue"] = self

    def _overloaded(self, error: OverloadedError) -> Response:
        self.counters.add("overloaded")
        log_overloaded(error)
        return Response(OVERLOADED_BODY, status=503, headers=overloaded_headers(error))


@contextlib.contextmanager
def _app_context_only(app: Flask) -> Iterator[None]:
    # Around every call: an application context of its own, and no request context.
    token = _REQUEST_CONTEXT.set(None) if _REQUEST_CONTEXT is not None else None
    try:
        with app.app_context():
            yield
    finally:
        if token is not None and _REQUEST_CONTEXT is not None:
            _REQUEST_CONTEXT.reset(token)


def add_status_page(
    app: Flask, path: str = "/jumpqueue/status", *, token: str | None = None
) -> None:
    """Serve the status page (see `jumpqueue.status`) at `path` of the app.

    Loopback clients only, unless a `token` is given.
    """
    page = StatusPage(token=token)

    def jumpqueue_status() -> Response:
        request = flask.request
        status, headers, body = page.respond(
            request.remote_addr,
            request.headers.get("Authorization"),
            request.query_string.decode("latin-1"),
        )
        return Response(body, status=status, headers=headers)

    app.add_url_rule(path, "jumpqueue_status", jumpqueue_status)
