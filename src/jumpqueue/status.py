"""The status page: what the server's workers are doing, as text, JSON, OpenMetrics or live HTML.

Mount it in any ASGI or WSGI application (off unless mounted):

    from jumpqueue.status import StatusPage

    page = StatusPage()                   # loopback clients only
    page = StatusPage(token="s3cret")     # or: anyone with the token

    app = Starlette(routes=[Mount("/jumpqueue/status", app=page.asgi)])  # ASGI
    application = DispatcherMiddleware(app, {"/jumpqueue/status": page.wsgi})  # WSGI

Like PHP-FPM's `pm.status_path`, the query picks the format: none for text,
`?json`, `?openmetrics`, `?html` (charts that update live), and `?full` adds
a row per server worker process. With `status_dir` set (see `Config`), the
page of any worker shows the sum over all of them. It never shows a call's
arguments. The framework helpers are in `jumpqueue.contrib` (Django, Flask,
Starlette/FastAPI).
"""

from __future__ import annotations

import hmac
import importlib.resources
import ipaddress
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from . import _status
from ._default import get_runtime
from ._runtime import Runtime
from ._runtime.reporting import want_status
from ._web.responses import Message, Receive, Send

__all__ = ["StatusPage"]

_TYPES = {
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
    "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
_HEADERS = [("cache-control", "no-store"), ("x-content-type-options", "nosniff")]
Response = tuple[int, list[tuple[str, str]], bytes]


class StatusPage:
    """The status page as an ASGI app (`.asgi`) and a WSGI app (`.wsgi`).

    Args:
        token: if set, a request must carry it (`Authorization: Bearer <token>`,
            or `?token=<token>` for a browser), from any address; if None, only
            clients on the loopback interface are served. Behind a reverse
            proxy on the same host every client looks local: set a token.
        runtime: the runtime to report on; None for the default one.

    Raises:
        ValueError: token is an empty string.
    """

    def __init__(self, *, token: str | None = None, runtime: Runtime | None = None) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty str or None")
        self._token = token
        self._runtime = runtime
        self._html: bytes | None = None
        want_status()

    def allowed(self, client: str | None, authorization: str | None, query: str) -> bool:
        """True if a request from that client address, with those credentials, may see the page."""
        if self._token is None:
            try:
                return client is not None and ipaddress.ip_address(client.split("%")[0]).is_loopback
            except ValueError:  # a Unix socket's peer, or no address: not known to be local
                return False
        given = urllib.parse.parse_qs(query).get("token", [""])[0]
        if authorization is not None and authorization.lower().startswith("bearer "):
            given = authorization[len("bearer ") :].strip()
        return hmac.compare_digest(given.encode(), self._token.encode())

    def respond(self, client: str | None, authorization: str | None, query: str) -> Response:
        """The status, headers and body for a request with that address, credentials and query."""
        if not self.allowed(client, authorization, query):
            return 403, [("content-type", _TYPES["text"]), *_HEADERS], b"forbidden\n"
        keys = {key for key, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
        kind = next((k for k in ("json", "openmetrics", "html") if k in keys), "text")
        if kind == "html":
            body = self._page()
        else:
            report = _status.collect(self._runtime or get_runtime())
            full = "full" in keys
            if kind == "json":
                body = _status.as_json(report, full=full).encode()
            elif kind == "openmetrics":
                body = _status.openmetrics(_status.families(report)).encode()
            else:
                body = _status.as_text(report, full=full).encode()
        return 200, [("content-type", _TYPES[kind]), *_HEADERS], body

    def _page(self) -> bytes:
        if self._html is None:
            self._html = importlib.resources.files(_status).joinpath("page.html").read_bytes()
        return self._html

    async def asgi(self, scope: Message, receive: Receive, send: Send) -> None:
        """The page as an ASGI application (HTTP only; other scopes are ignored)."""
        del receive  # the request's body, if any, means nothing here
        if scope["type"] != "http":
            return
        client = scope.get("client")
        headers = {name.lower(): value for name, value in scope.get("headers", ())}
        authorization = headers.get(b"authorization")
        status, response_headers, body = self.respond(
            client[0] if client else None,
            authorization.decode("latin-1") if authorization is not None else None,
            scope.get("query_string", b"").decode("latin-1"),
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in response_headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The page as a WSGI application."""
        status, headers, body = self.respond(
            environ.get("REMOTE_ADDR"),
            environ.get("HTTP_AUTHORIZATION"),
            environ.get("QUERY_STRING", ""),
        )
        start_response(f"{status} {'OK' if status == 200 else 'Forbidden'}", headers)  # noqa: PLR2004
        return [body]
