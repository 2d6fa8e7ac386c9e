"""The WSGI middleware in process, driven by a fake server: every edge of the release rule."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import jumpqueue
from jumpqueue import (
    Deferred,
    InvalidResponseError,
    OverloadedError,
    ResponseStartedError,
    Runtime,
    Status,
)
from jumpqueue.wsgi import JumpQueueMiddleware

from .fakes import FileWrapper, loopback_connection, serve_wsgi, wsgi_environ

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

WAIT = 5.0


def noop() -> None:
    pass


@jumpqueue.task(always=True)
def noop_always() -> None:
    pass


def test_wsgi_middleware_holds_calls_until_the_server_closes_the_body() -> None:
    calls: list[Deferred[None]] = []
    seen: list[Status] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        yield b"a"
        calls.append(jumpqueue.defer(noop))  # the generator runs inside the request too
        yield b"b"

    exchange = serve_wsgi(JumpQueueMiddleware(app), on_chunk=lambda _: seen.append(calls[0].status))
    assert exchange.content == b"ab"
    assert exchange.closed
    assert seen == [Status.HELD, Status.HELD]
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SUCCEEDED] * 2


@pytest.mark.parametrize("how", ["iterable", "file", "finish_request"])
def test_wsgi_middleware_releases_a_large_body_once_the_client_has_it(
    how: str, tmp_path: Path
) -> None:
    arrived: list[int] = []
    calls: list[Deferred[None]] = []
    with loopback_connection() as connection:
        queued = connection.fill()  # what the server wrote of the body and its kernel holds
        path = tmp_path / "body"
        path.write_bytes(b"x" * queued)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            calls.append(jumpqueue.defer(lambda: arrived.append(connection.arrived())))
            if how == "finish_request":
                jumpqueue.finish_request((200, [], b"x" * queued))
                return []
            start_response("200 OK", [])
            if how == "file":
                wrapper: type[FileWrapper] = environ["wsgi.file_wrapper"]
                return wrapper(path.open("rb"))
            return [b"x" * queued]

        connection.read_slowly()
        environ = wsgi_environ()
        environ["gunicorn.socket"] = connection.server
        serve_wsgi(JumpQueueMiddleware(app), environ)
        assert calls[0].wait(WAIT)
    assert arrived[0] >= queued


@pytest.mark.parametrize("status", ["400 Bad Request", "500 Internal Server Error"])
def test_wsgi_middleware_skips_calls_when_the_status_is_an_error(status: str) -> None:
    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        start_response(status, [])
        return [b"no"]

    serve_wsgi(JumpQueueMiddleware(app))
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SKIPPED, Status.SUCCEEDED]


def test_wsgi_middleware_skips_calls_when_the_app_raises() -> None:
    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        raise RuntimeError("boom")

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert isinstance(exchange.error, RuntimeError)
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SKIPPED, Status.SUCCEEDED]


def test_wsgi_middleware_skips_calls_when_the_body_raises() -> None:
    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        yield b"a"
        raise RuntimeError("mid-stream")

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert isinstance(exchange.error, RuntimeError)
    assert exchange.closed
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_wsgi_middleware_skips_calls_when_closing_the_body_raises() -> None:
    calls: list[Deferred[None]] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"a"

        def close(self) -> None:
            raise RuntimeError("close failed")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        return Body()

    with pytest.raises(RuntimeError, match="close failed"):
        serve_wsgi(JumpQueueMiddleware(app))
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_wsgi_middleware_runs_calls_when_the_client_leaves_early() -> None:
    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        yield from (b"a", b"b", b"c")

    exchange = serve_wsgi(JumpQueueMiddleware(app), stop_after=1)
    assert exchange.content == b"a"
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_wsgi_middleware_keeps_the_servers_file_wrapper() -> None:
    calls: list[Deferred[None]] = []
    seen: list[Status] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        wrapper: Callable[[io.BytesIO], Iterable[bytes]] = environ["wsgi.file_wrapper"]
        return wrapper(io.BytesIO(b"file content"))

    exchange = serve_wsgi(JumpQueueMiddleware(app), on_chunk=lambda _: seen.append(calls[0].status))
    assert type(exchange.body) is FileWrapper  # the server can still use sendfile
    assert exchange.content == b"file content"
    assert seen == [Status.HELD]
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_wsgi_middleware_wraps_a_file_wrapper_it_cannot_hook() -> None:
    class SlottedWrapper:
        __slots__ = ("filelike",)

        def __init__(self, filelike: io.BytesIO, blksize: int = 8192) -> None:
            self.filelike = filelike

        def __iter__(self) -> Iterator[bytes]:
            return iter(lambda: self.filelike.read(8192), b"")

        def close(self) -> None:
            self.filelike.close()

    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(jumpqueue.defer(noop))
        start_response("200 OK", [])
        return SlottedWrapper(io.BytesIO(b"data"))

    # Its close() cannot be hooked: it is served as a plain iterable instead.
    environ = wsgi_environ()
    environ["wsgi.file_wrapper"] = SlottedWrapper
    exchange = serve_wsgi(JumpQueueMiddleware(app), environ)
    assert type(exchange.body) is not SlottedWrapper
    assert exchange.content == b"data"
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


# -- overload -------------------------------------------------------------------------------


@pytest.fixture
def full_backlog(use_runtime: Callable[..., Runtime]) -> Iterator[Deferred[bool]]:
    """A default runtime with room for one call, taken by a call that waits for the test."""
    use_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    blocker = jumpqueue.defer(gate.wait, WAIT)
    yield blocker
    gate.set()


@pytest.mark.parametrize("started", [False, True])
def test_wsgi_middleware_answers_overload_with_503_and_retry_after(
    full_backlog: Deferred[bool], *, started: bool
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if started:  # headers given but not sent yet: they can still be replaced
            start_response("200 OK", [])
        jumpqueue.defer(noop)
        return [b"ok"]

    middleware = JumpQueueMiddleware(app)
    exchange = serve_wsgi(middleware)
    assert exchange.error is None
    assert exchange.status == "503 Service Unavailable"
    assert dict(exchange.headers)["Retry-After"] == "1"
    assert middleware.counters.overloaded == 1


def test_wsgi_middleware_lets_overload_through_when_told_to(
    full_backlog: Deferred[bool],
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.defer(noop)
        return [b"ok"]

    exchange = serve_wsgi(JumpQueueMiddleware(app, overload_response=False))
    assert isinstance(exchange.error, OverloadedError)


def test_wsgi_middleware_cannot_answer_overload_after_writing(
    full_backlog: Deferred[bool],
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])(b"written")
        jumpqueue.defer(noop)
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert isinstance(exchange.error, OverloadedError)
    assert exchange.status == "200 OK"


# -- finish_request ---------------------------------------------------------------------------


def test_wsgi_finish_request_writes_now_and_discards_the_rest() -> None:
    calls: dict[str, Deferred[None]] = {}
    written_at_finish: list[list[bytes]] = []
    closed: list[bool] = []

    class Late:
        def __iter__(self) -> Iterator[bytes]:
            yield b"late"

        def close(self) -> None:
            closed.append(True)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls["before"] = jumpqueue.defer(noop)
        jumpqueue.finish_request((202, [("X-Early", "yes")], b"early"))
        written_at_finish.append(list(exchange_written))
        assert calls["before"].wait(WAIT)  # released while this handler still runs
        calls["after"] = jumpqueue.defer(noop)
        start_response("200 OK", [])(b"ignored")
        return Late()

    exchange_written: list[bytes] = []
    middleware = JumpQueueMiddleware(app)

    def recording(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: object) -> object:
            write = start_response(status, headers)

            def tee(data: bytes) -> object:
                exchange_written.append(data)
                return write(data)

            return tee

        return middleware(environ, start)  # type: ignore[arg-type]

    exchange = serve_wsgi(recording)
    assert exchange.error is None
    assert written_at_finish == [[b"early"]]
    assert exchange.status == "202 Accepted"
    assert exchange.headers == [("X-Early", "yes"), ("Content-Length", "5")]
    assert exchange.content == b"early"
    assert closed == [True]
    assert calls["after"].wait(WAIT)
    assert [call.status for call in calls.values()] == [Status.SUCCEEDED] * 2
    assert middleware.counters.finished_early == 1


def test_wsgi_finish_request_with_an_error_status_skips_the_held_calls() -> None:
    calls: list[Deferred[None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        jumpqueue.finish_request((503, [], b"later"))
        return []

    serve_wsgi(JumpQueueMiddleware(app))
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SKIPPED, Status.SUCCEEDED]


def test_wsgi_finish_request_twice_raises() -> None:
    errors: list[Exception] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.finish_request((200, [], b"once"))
        try:
            jumpqueue.finish_request((200, [], b"twice"))
        except ResponseStartedError as error:
            errors.append(error)
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert exchange.content == b"once"
    assert len(errors) == 1


def test_wsgi_finish_request_after_start_response_raises() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        jumpqueue.finish_request((200, [], b"too late"))
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert isinstance(exchange.error, ResponseStartedError)


def test_wsgi_finish_request_logs_and_counts_a_later_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.finish_request((200, [], b"fine"))
        raise RuntimeError("after the response")

    middleware = JumpQueueMiddleware(app)
    with caplog.at_level(logging.ERROR, logger="jumpqueue"):
        exchange = serve_wsgi(middleware)
    assert exchange.error is None
    assert exchange.content == b"fine"
    assert middleware.counters.errors_after_finish == 1
    assert "after the response" in caplog.text


def test_wsgi_finish_request_inside_a_generator_body_discards_the_rest() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        jumpqueue.finish_request((200, [], b"early"))
        start_response("200 OK", [])
        yield b"late"
        raise RuntimeError("after the response")

    middleware = JumpQueueMiddleware(app)
    exchange = serve_wsgi(middleware)
    assert exchange.error is None
    assert exchange.content == b"early"
    assert middleware.counters.errors_after_finish == 1


def test_wsgi_finish_request_goes_on_when_the_client_has_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Deferred[None]] = []

    def gone(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: object) -> object:
            def write(data: bytes) -> None:
                raise BrokenPipeError("the client went away")

            return write

        return JumpQueueMiddleware(app)(environ, start)  # type: ignore[arg-type]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(jumpqueue.defer(noop))
        jumpqueue.finish_request((200, [], b"lost"))
        return []

    with caplog.at_level(logging.WARNING, logger="jumpqueue"):
        exchange = serve_wsgi(gone)
    assert exchange.error is None
    assert "could not send" in caplog.text
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_wsgi_finish_request_refuses_what_is_not_a_response() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.finish_request(b"just bytes")
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert isinstance(exchange.error, InvalidResponseError)


def test_wsgi_afinish_request_works_in_an_async_view() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        asyncio.run(jumpqueue.afinish_request((200, [], b"from a coroutine")))
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert exchange.content == b"from a coroutine"


def test_wsgi_finish_request_accepts_a_werkzeug_response() -> None:
    wrappers = pytest.importorskip("werkzeug.wrappers")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.finish_request(wrappers.Response("native", status=201, mimetype="text/plain"))
        return []

    exchange = serve_wsgi(JumpQueueMiddleware(app))
    assert exchange.status == "201 CREATED"
    assert exchange.content == b"native"
    assert ("Content-Length", "6") in exchange.headers
