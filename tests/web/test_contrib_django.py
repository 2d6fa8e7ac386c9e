"""The Django glue in process: settings, the release on close, 503s, database hygiene.

Real servers run the whole Django project in test_real_servers.py; here the
middleware wraps small `get_response` functions, under WSGI (sync) and ASGI (async).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import jumpqueue
from jumpqueue import ConfigurationError, Deferred, Runtime, Status
from jumpqueue.integration import RequestScope

from ..conftest import django_test_project
from .fakes import http_scope, loopback_connection, serve_asgi

pytest.importorskip("django")

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

WAIT = 5.0


@pytest.fixture(scope="module", autouse=True)
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Set up the test project once, with an SQLite file as its database."""
    with django_test_project(tmp_path_factory):
        yield


def request() -> HttpRequest:
    from django.test import RequestFactory

    return RequestFactory().get("/")


def glue(get_response: Callable[[HttpRequest], Any]) -> Any:
    from jumpqueue.contrib.django import JumpQueueMiddleware

    return JumpQueueMiddleware(get_response)


def noop() -> None:
    pass


@jumpqueue.task(always=True)
def noop_always() -> None:
    pass


def test_contrib_django_holds_calls_until_django_closes_the_response() -> None:
    from django.http import HttpResponse

    calls: list[Deferred[None]] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        calls.append(jumpqueue.defer(noop))
        return HttpResponse("ok")

    response = glue(view)(request())
    held = calls[0].status
    response.close()  # what Django's handlers do once the last byte is sent
    assert held is Status.HELD
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_contrib_django_skips_calls_of_an_error_response() -> None:
    from django.http import HttpResponseServerError

    calls: list[Deferred[None]] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        return HttpResponseServerError("failed")

    glue(view)(request()).close()
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SKIPPED, Status.SUCCEEDED]


def test_contrib_django_skips_calls_when_get_response_raises() -> None:
    calls: list[Deferred[None]] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        calls.append(jumpqueue.defer(noop))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        glue(view)(request())
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_contrib_django_under_asgi_holds_calls_until_close() -> None:
    from django.http import HttpResponse

    calls: list[Deferred[None]] = []

    async def view(request: HttpRequest) -> HttpResponseBase:
        calls.append(jumpqueue.defer(noop))
        return HttpResponse("ok")

    middleware = glue(view)
    assert middleware.is_async
    response = asyncio.run(middleware(request()))
    held = calls[0].status
    response.close()
    assert held is Status.HELD
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_contrib_django_releases_a_large_body_once_the_client_has_it() -> None:
    from django.http import HttpResponse

    arrived: list[int] = []
    calls: list[Deferred[None]] = []
    with loopback_connection() as connection:
        queued = connection.fill()  # what the server wrote of the body and its kernel holds

        def view(request: HttpRequest) -> HttpResponseBase:
            calls.append(jumpqueue.defer(lambda: arrived.append(connection.arrived())))
            return HttpResponse(b"x" * queued)

        wsgi_request = request()
        wsgi_request.META["gunicorn.socket"] = connection.server
        response = glue(view)(wsgi_request)
        connection.read_slowly()
        response.close()  # gunicorn's, after its last write
        assert calls[0].wait(WAIT)
    assert arrived[0] >= queued


def test_contrib_django_under_asgi_releases_a_large_body_once_the_client_has_it() -> None:
    from django.http import HttpResponse

    arrived: list[int] = []
    calls: list[Deferred[None]] = []
    with loopback_connection() as connection:
        queued = connection.fill()

        async def view(request: HttpRequest) -> HttpResponseBase:
            calls.append(jumpqueue.defer(lambda: arrived.append(connection.arrived())))
            return HttpResponse(b"x" * queued)

        async def serve() -> None:
            asgi_request = request()
            asgi_request.scope = {  # type: ignore[attr-defined]
                "server": connection.server.getsockname(),
                "client": connection.server.getpeername(),
            }
            response = await glue(view)(asgi_request)
            connection.read_slowly()
            # As Django's handler does after the final body message: in a thread.
            await asyncio.to_thread(response.close)
            assert calls[0].status is Status.HELD  # the event loop waits for the client
            await asyncio.to_thread(calls[0].wait, WAIT)

        asyncio.run(serve())
    assert arrived[0] >= queued


def test_contrib_django_under_asgi_skips_calls_of_a_cancelled_view() -> None:
    calls: list[Deferred[None]] = []

    async def view(request: HttpRequest) -> HttpResponseBase:
        calls.append(jumpqueue.defer(noop))
        raise asyncio.CancelledError  # what Django does to a view whose client left

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(glue(view)(request()))
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_contrib_django_leaves_the_release_to_an_outer_middleware() -> None:
    from django.http import HttpResponse

    calls: list[Deferred[None]] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        calls.append(jumpqueue.defer(noop))
        return HttpResponse("ok")

    outer = RequestScope()
    token = outer.activate()
    try:
        glue(view)(request()).close()
    finally:
        outer.deactivate(token)
    assert len(outer) == 1
    assert calls[0].status is Status.HELD
    outer.release(succeeded=True)
    assert calls[0].wait(WAIT)


def test_contrib_django_answers_overload_with_503(use_runtime: Callable[..., Runtime]) -> None:
    from django.http import HttpResponse

    from jumpqueue.contrib.django import JumpQueueMiddleware

    use_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    jumpqueue.defer(gate.wait, WAIT)
    middleware = glue(lambda request: HttpResponse("unused"))
    before = JumpQueueMiddleware.counters.overloaded
    try:
        jumpqueue.defer(noop)
    except jumpqueue.OverloadedError as error:
        response = middleware.process_exception(request(), error)
    finally:
        gate.set()
    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert JumpQueueMiddleware.counters.overloaded == before + 1
    assert middleware.process_exception(request(), RuntimeError("other")) is None


def test_contrib_django_reads_settings_jumpqueue(use_runtime: Callable[..., Runtime]) -> None:
    from django.http import HttpResponse
    from django.test import override_settings

    with override_settings(JUMPQUEUE={"MAX_WORKERS": 3, "OVERLOAD_RESPONSE": False}):
        middleware = glue(lambda request: HttpResponse("ok"))
    assert jumpqueue.get_runtime().config.max_workers == 3
    assert middleware.overload_response is False
    runtime = jumpqueue.get_runtime()
    with override_settings(JUMPQUEUE={"MAX_WORKERS": 3}):
        glue(lambda request: HttpResponse("ok"))
    assert jumpqueue.get_runtime() is runtime  # the same settings do not replace it


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"NO_SUCH_OPTION": 1}, "settings.JUMPQUEUE: unknown"),
        ({"MAX_WORKERS": 0}, "settings.JUMPQUEUE: max_workers"),
        ({"OVERLOAD_RESPONSE": "yes"}, "overload_response must be a bool"),
        (["MAX_WORKERS"], "must be a dict"),
    ],
)
def test_contrib_django_refuses_bad_settings(value: object, message: str) -> None:
    from django.http import HttpResponse
    from django.test import override_settings

    with override_settings(JUMPQUEUE=value), pytest.raises(ConfigurationError, match=message):
        glue(lambda request: HttpResponse("ok"))


def test_contrib_django_closes_stale_connections_around_each_call(
    use_runtime: Callable[..., Runtime],
) -> None:
    from django.db import connection
    from django.http import HttpResponse

    use_runtime(max_workers=1)  # one thread: the second call sees what the first left
    found: list[bool] = []

    def use_database() -> None:
        found.append(connection.connection is not None)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    calls: list[Deferred[None]] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        calls.extend([jumpqueue.defer(use_database), jumpqueue.defer(use_database)])
        return HttpResponse("ok")

    glue(view)(request()).close()
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SUCCEEDED] * 2
    assert found == [False, False]  # closed after the first call (CONN_MAX_AGE=0)


def test_contrib_django_keeps_the_connection_of_a_call_run_inline(
    use_runtime: Callable[..., Runtime],
) -> None:
    from django.db import connection
    from django.http import HttpResponse

    use_runtime(max_pending=1, on_overload="inline")
    gate = threading.Event()
    jumpqueue.defer(gate.wait, WAIT)
    found: list[bool] = []

    def view(request: HttpRequest) -> HttpResponseBase:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        jumpqueue.defer(lambda: found.append(connection.connection is not None))
        found.append(connection.connection is not None)
        return HttpResponse("ok")

    try:
        glue(view)(request()).close()
    finally:
        gate.set()
    assert found == [True, True]  # the inline call shares the request's connection


def test_contrib_django_response_works_with_finish_request_under_asgi() -> None:
    from django.http import HttpResponse, StreamingHttpResponse

    from jumpqueue.asgi import JumpQueueMiddleware, Receive, Scope, Send

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"str", b"eam"):
            yield chunk

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response: HttpResponseBase
        if scope["path"] == "/stream":
            response = StreamingHttpResponse(chunks())
        else:
            response = HttpResponse("plain", status=201)
            response.set_cookie("flavour", "oat")
        await jumpqueue.afinish_request(response)

    plain = asyncio.run(serve_asgi(JumpQueueMiddleware(app)))
    assert (plain.status, plain.body) == (201, b"plain")
    start = next(m for m in plain.sent if m["type"] == "http.response.start")
    cookies = [value for name, value in start["headers"] if name == b"set-cookie"]
    assert [cookie.split(b";")[0] for cookie in cookies] == [b"flavour=oat"]
    streamed = asyncio.run(serve_asgi(JumpQueueMiddleware(app), http_scope("/stream")))
    assert streamed.body == b"stream"


def test_contrib_django_response_works_with_finish_request_under_wsgi() -> None:
    from django.http import HttpResponse, StreamingHttpResponse

    from jumpqueue.wsgi import JumpQueueMiddleware

    from .fakes import serve_wsgi, wsgi_environ

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/stream":
            jumpqueue.finish_request(StreamingHttpResponse(iter([b"str", b"eam"])))
        else:
            jumpqueue.finish_request(HttpResponse("plain", status=202))
        return []

    plain = serve_wsgi(JumpQueueMiddleware(app))
    assert (plain.status, plain.content) == ("202 Accepted", b"plain")
    streamed = serve_wsgi(JumpQueueMiddleware(app), wsgi_environ("/stream"))
    assert streamed.content == b"stream"
    assert ("Content-Length", "6") in streamed.headers


def test_contrib_django_status_view_serves_the_page_to_loopback_or_the_token(
    status_pages: None,
) -> None:
    from django.test import RequestFactory

    from jumpqueue.contrib.django import status_view

    factory = RequestFactory()
    local = status_view()(factory.get("/status", {"openmetrics": ""}))
    locked = status_view(token="t")  # noqa: S106
    refused = locked(factory.get("/status"))
    given = locked(factory.get("/status", {"json": ""}, HTTP_AUTHORIZATION="Bearer t"))
    assert local.status_code == 200  # RequestFactory's client is 127.0.0.1
    assert local["Content-Type"].startswith("application/openmetrics-text")
    assert local.content.endswith(b"# EOF\n")
    assert refused.status_code == 403
    assert given.status_code == 200
    assert b'"accepted"' in given.content
