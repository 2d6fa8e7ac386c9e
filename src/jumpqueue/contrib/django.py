"""Django glue: a `MIDDLEWARE` entry that holds deferred calls until the response is sent.

    MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware", ...]  # first
    JUMPQUEUE = {"MAX_WORKERS": 4, "ON_OVERLOAD": "reject"}  # optional

It works under WSGI and ASGI. Calls deferred during a request are handed to the
runtime when Django's handler closes the response, which it does after the last
byte was sent (after a large body, once the client has it: see
`jumpqueue.integration.wait_until_received`); only if the status is below 400
(Django turns exceptions into 500 responses), unless the task says
`always=True`. An `OverloadedError` from `defer()` becomes `503 Service
Unavailable` with `Retry-After`. Every thread task closes stale database
connections before and after it runs, as Django's request cycle does.
`finish_request()` needs jumpqueue's WSGI or ASGI middleware around the whole
application as well (see docs/tutorial/django.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from jumpqueue import ConfigurationError, OverloadedError
from jumpqueue.integration import (
    LARGE_BODY,
    OVERLOADED_BODY,
    HttpCounters,
    RequestScope,
    await_until_received,
    current_scope,
    log_overloaded,
    overloaded_headers,
    wait_until_received,
    wrap_calls,
)
from jumpqueue.status import StatusPage

from ._settings import apply_settings

__all__ = ["JumpQueueMiddleware", "status_view"]

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class JumpQueueMiddleware:
    """Holds the calls deferred during a request until Django has sent the response.

    Settings come from `settings.JUMPQUEUE`, a dict of the `JUMPQUEUE_*` names
    without the prefix (`MAX_WORKERS`, `ON_OVERLOAD`, ...) plus `OVERLOAD_RESPONSE`
    (answer 503 to an `OverloadedError`; true by default).

    Attributes:
        counters: 503s answered by this glue in this process (shared by every instance,
            since Django builds its middleware chain once per handler).
    """

    sync_capable = True
    async_capable = True
    counters = HttpCounters()

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        raw = getattr(settings, "JUMPQUEUE", None) or {}
        if not isinstance(raw, dict):
            raise ConfigurationError(f"settings.JUMPQUEUE must be a dict, not {raw!r}")
        web = apply_settings(raw, source="settings.JUMPQUEUE")
        self.overload_response = bool(web.get("overload_response", True))
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        """Serve one request in a request scope (a coroutine when the chain is async)."""
        if self.is_async:
            return self.__acall__(request)
        get_response: GetResponse = self.get_response  # type: ignore[assignment]
        outer = current_scope()
        scope = outer if outer is not None else RequestScope()
        scope_token = scope.activate()
        try:
            with wrap_calls(_fresh_connections_factory()):
                response = get_response(request)
        except BaseException:
            scope.discard()
            raise
        finally:
            scope.deactivate(scope_token)
        if outer is None:  # else jumpqueue's WSGI/ASGI middleware releases the scope
            _release_on_close(response, scope, request.META)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Serve one request under ASGI; a view cancelled by a disconnect counts as failed."""
        get_response: AsyncGetResponse = self.get_response  # type: ignore[assignment]
        outer = current_scope()
        scope = outer if outer is not None else RequestScope()
        scope_token = scope.activate()
        try:
            with wrap_calls(_fresh_connections_factory()):
                response = await get_response(request)
        except BaseException:
            scope.discard()
            raise
        finally:
            scope.deactivate(scope_token)
        if outer is None:
            _release_on_close_async(response, scope, getattr(request, "scope", {}))
        return response

    def process_exception(
        self,
        request: HttpRequest,  # noqa: ARG002 -- Django's signature
        exception: Exception,
    ) -> HttpResponse | None:
        """Answer 503 with Retry-After to a call the full backlog rejected."""
        if not isinstance(exception, OverloadedError) or not self.overload_response:
            return None
        response = HttpResponse(OVERLOADED_BODY, status=503)
        for name, value in overloaded_headers(exception):
            response[name] = value
        self.counters.add("overloaded")
        log_overloaded(exception)
        return response


def _release_on_close(
    response: HttpResponseBase, scope: RequestScope, environ: dict[str, Any]
) -> None:
    # The WSGI server closes the iterable (the response) once its last byte is sent.
    close = response.close

    def close_then_release() -> None:
        try:
            close()
        finally:
            try:
                if len(scope):  # held calls wait until the client has a large body
                    wait_until_received(environ, body_size=_body_size(response))
            finally:
                scope.release(succeeded=response.status_code < 400)  # noqa: PLR2004

    response.close = close_then_release  # type: ignore[method-assign]


def _release_on_close_async(
    response: HttpResponseBase, scope: RequestScope, asgi_scope: dict[str, Any]
) -> None:
    # Django's ASGI handler closes the response, in a thread, after the final body
    # message; a thread all sync code shares, so the wait for a large body's
    # client goes to the event loop.
    loop = asyncio.get_running_loop()
    close = response.close

    def close_then_release() -> None:
        succeeded = response.status_code < 400  # noqa: PLR2004
        size = _body_size(response)
        try:
            close()
        finally:
            if not len(scope) or (size is not None and size < LARGE_BODY):
                scope.release(succeeded=succeeded)
            else:
                scope.seal()  # the journal's commit stays off the event loop
                try:
                    loop.call_soon_threadsafe(
                        functools.partial(
                            _release_when_received, scope, asgi_scope, succeeded=succeeded
                        )
                    )
                except RuntimeError:  # the loop is closed: nothing can wait any more
                    scope.release(succeeded=succeeded)

    response.close = close_then_release  # type: ignore[method-assign]


_releasing: set[asyncio.Task[None]] = set()


def _release_when_received(
    scope: RequestScope, asgi_scope: dict[str, Any], *, succeeded: bool
) -> None:
    task = asyncio.create_task(_arelease_when_received(scope, asgi_scope, succeeded=succeeded))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


async def _arelease_when_received(
    scope: RequestScope, asgi_scope: dict[str, Any], *, succeeded: bool
) -> None:
    try:
        await await_until_received(asgi_scope)
    finally:
        scope.release(succeeded=succeeded)


def _body_size(response: HttpResponseBase) -> int | None:
    """The body's length, or None for a streamed one whose length is not declared."""
    if isinstance(response, HttpResponse):
        return len(response.content)
    length = response.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _fresh_connections_factory() -> Callable[[], contextlib.AbstractContextManager[None]]:
    return functools.partial(_fresh_connections, threading.get_ident())


@contextlib.contextmanager
def _fresh_connections(request_thread: int) -> Iterator[None]:
    """Close stale database connections before and after a call, as a request does.

    Not for calls run inline in the request's own thread (they share its connection
    and transaction), nor for coroutines (Django's connections are synchronous).
    """
    if threading.get_ident() == request_thread or _on_event_loop():
        yield
        return
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def status_view(*, token: str | None = None) -> Callable[[HttpRequest], HttpResponse]:
    """The status page (see `jumpqueue.status`) as a Django view, for `urls.py`.

        urlpatterns = [path("jumpqueue/status", status_view()), ...]

    Loopback clients only, unless a `token` is given.
    """
    page = StatusPage(token=token)

    def view(request: HttpRequest) -> HttpResponse:
        status, headers, body = page.respond(
            request.META.get("REMOTE_ADDR"),
            request.headers.get("Authorization"),
            request.META.get("QUERY_STRING", ""),
        )
        response = HttpResponse(body, status=status)
        for name, value in headers:
            response[name] = value
        return response

    return view
