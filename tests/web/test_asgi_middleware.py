"""The ASGI middleware in process, driven by a fake server: every edge of the release rule."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import jumpqueue
from jumpqueue import (
    Deferred,
    InvalidResponseError,
    JumpQueueError,
    MiddlewareMissingError,
    OverloadedError,
    ResponseStartedError,
    Runtime,
    Status,
)
from jumpqueue.asgi import JumpQueueMiddleware, Message, Receive, Scope, Send
from jumpqueue.integration import LARGE_BODY

from ..conftest import RuntimeFactory
from .fakes import http_scope, loopback_connection, serve_asgi

T = TypeVar("T")
WAIT = 5.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def noop() -> None:
    pass


@jumpqueue.task(always=True)
def noop_always() -> None:
    pass


async def respond(send: Send, status: int = 200, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_asgi_middleware_holds_calls_until_the_last_body_message() -> None:
    calls: list[Deferred[None]] = []
    seen: list[tuple[str, bool, Status]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b", "more_body": False})

    def on_send(message: Message) -> None:
        seen.append((message["type"], message.get("more_body", False), calls[0].status))

    exchange = run(serve_asgi(JumpQueueMiddleware(app), on_send=on_send))
    assert exchange.body == b"ab"
    assert [status for _, _, status in seen] == [Status.HELD] * 3
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_asgi_middleware_defers_coroutines_on_the_application_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def record_loop() -> None:
        loops.append(asyncio.get_running_loop())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        call = jumpqueue.defer(record_loop)
        await respond(send)
        while not call.done():  # the call runs on this loop, once the response is out
            await asyncio.sleep(0)
        assert loops == [asyncio.get_running_loop()]

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert exchange.error is None


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_asgi_middleware_skips_calls_when_the_status_is_an_error(status: int) -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        await respond(send, status)

    run(serve_asgi(JumpQueueMiddleware(app)))
    plain, always = calls
    assert plain.wait(WAIT)
    assert always.wait(WAIT)
    assert (plain.status, always.status) == (Status.SKIPPED, Status.SUCCEEDED)
    assert jumpqueue.stats().skipped == 1


@pytest.mark.parametrize("started", [False, True])
def test_asgi_middleware_skips_calls_when_the_app_raises(*, started: bool) -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise RuntimeError("boom")

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert isinstance(exchange.error, RuntimeError)
    plain, always = calls
    assert plain.wait(WAIT)
    assert always.wait(WAIT)
    assert (plain.status, always.status) == (Status.SKIPPED, Status.SUCCEEDED)


def test_asgi_middleware_skips_calls_when_the_app_returns_without_a_response() -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))

    run(serve_asgi(JumpQueueMiddleware(app)))
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_asgi_middleware_runs_calls_when_the_client_leaves_during_the_response() -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        await respond(send)

    exchange = run(serve_asgi(JumpQueueMiddleware(app), disconnect_on="http.response.body"))
    assert isinstance(exchange.error, OSError)
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_asgi_middleware_runs_calls_when_the_app_sees_the_client_leave() -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"

    exchange = run(serve_asgi(JumpQueueMiddleware(app), client_leaves=True))
    assert exchange.error is None
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_asgi_middleware_waits_for_the_last_trailers() -> None:
    calls: list[Deferred[None]] = []
    seen: list[Status] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"a"})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": []})

    run(serve_asgi(JumpQueueMiddleware(app), on_send=lambda m: seen.append(calls[0].status)))
    assert seen == [Status.HELD] * 4
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_asgi_middleware_sends_a_large_final_body_in_parts_through_flow_control() -> None:
    calls: list[Deferred[None]] = []
    body = bytes(range(256)) * (LARGE_BODY // 64) + b"tail"
    parts: list[tuple[int, bool, Status]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        await respond(send, body=body)

    def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            parts.append((len(message["body"]), message.get("more_body", False), calls[0].status))

    exchange = run(serve_asgi(JumpQueueMiddleware(app), on_send=on_send))
    assert exchange.body == body
    # Each part's send returns only once the server took it (its flow control).
    assert parts == [(LARGE_BODY, True, Status.HELD)] * 4 + [(4, False, Status.HELD)]
    assert calls[0].wait(WAIT)


def test_asgi_middleware_sends_a_small_body_as_it_is() -> None:
    message = {"type": "http.response.body", "body": b"x" * LARGE_BODY}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        jumpqueue.defer(noop)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(message)

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert exchange.sent[1] is message


def test_asgi_middleware_releases_a_large_body_once_the_client_has_it() -> None:
    arrived: list[int] = []
    calls: list[Deferred[None]] = []
    with loopback_connection() as connection:
        # What the server wrote of the body and its kernel still holds.
        queued = connection.fill()
        scope = http_scope(
            server=connection.server.getsockname(), client=connection.server.getpeername()
        )

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(jumpqueue.defer(lambda: arrived.append(connection.arrived())))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x" * queued, "more_body": True})
            connection.read_slowly()
            await send({"type": "http.response.body", "body": b""})
            assert calls[0].status is not Status.HELD  # the final send returns once released

        exchange = run(serve_asgi(JumpQueueMiddleware(app), scope))
        assert exchange.error is None
        assert calls[0].wait(WAIT)
    assert arrived[0] >= queued


def test_asgi_middleware_passes_other_scopes_through_untouched() -> None:
    received: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "websocket", "path": "/ws"}
    run(JumpQueueMiddleware(app)(scope, receive, send))
    assert received == [(scope, receive, send)]


def test_asgi_middleware_enters_around_calls_for_each_call() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")
    seen: list[str] = []

    @contextlib.contextmanager
    def marked() -> Iterator[None]:
        token = marker.set("inside")
        try:
            yield
        finally:
            marker.reset(token)

    def look() -> None:
        seen.append(marker.get())

    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(look))
        await respond(send)

    run(serve_asgi(JumpQueueMiddleware(app, around_calls=(marked,))))
    assert calls[0].wait(WAIT)
    assert seen == ["inside"]


# -- overload -------------------------------------------------------------------------------


@pytest.fixture
def full_backlog(use_runtime: Callable[..., Runtime]) -> Iterator[Deferred[bool]]:
    """A default runtime with room for one call, taken by a call that waits for the test."""
    use_runtime(max_pending=1, on_overload="reject", overload_wait=1.5)
    gate = threading.Event()
    blocker = jumpqueue.defer(gate.wait, WAIT)
    yield blocker
    gate.set()


def test_asgi_middleware_answers_overload_with_503_and_retry_after(
    full_backlog: Deferred[bool],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        jumpqueue.defer(noop)
        await respond(send)

    middleware = JumpQueueMiddleware(app)
    exchange = run(serve_asgi(middleware))
    assert exchange.error is None
    assert exchange.status == 503
    assert exchange.headers["retry-after"] == "2"
    assert int(exchange.headers["content-length"]) == len(exchange.body)
    assert middleware.counters.overloaded == 1
    assert jumpqueue.stats().shed == {"reject": 1}


def test_asgi_middleware_lets_overload_through_when_told_to(
    full_backlog: Deferred[bool],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        jumpqueue.defer(noop)

    middleware = JumpQueueMiddleware(app, overload_response=False)
    exchange = run(serve_asgi(middleware))
    assert isinstance(exchange.error, OverloadedError)
    assert exchange.sent == []
    assert middleware.counters.overloaded == 0


def test_asgi_middleware_cannot_answer_overload_once_the_response_started(
    full_backlog: Deferred[bool],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        jumpqueue.defer(noop)

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert isinstance(exchange.error, OverloadedError)
    assert exchange.status == 200


# -- finish_request ---------------------------------------------------------------------------


def test_asgi_finish_request_sends_now_and_discards_the_rest() -> None:
    calls: dict[str, Deferred[None]] = {}
    sent_at_finish: list[int] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls["before"] = jumpqueue.defer(noop)
        await jumpqueue.afinish_request((201, [("X-Early", "yes")], b"early"))
        sent_at_finish.append(len(sent))
        # Released once the response was sent, while this handler still runs.
        assert await asyncio.to_thread(calls["before"].wait, WAIT)
        calls["after"] = jumpqueue.defer(noop)
        assert calls["after"].status is not Status.HELD  # submitted at once
        await respond(send, 200, b"late")

    middleware = JumpQueueMiddleware(app)
    exchange = run(serve_asgi(middleware, on_send=sent.append))
    assert exchange.error is None
    assert sent_at_finish == [2]
    assert exchange.status == 201
    assert exchange.body == b"early"
    assert exchange.headers == {"x-early": "yes", "content-length": "5"}
    assert calls["after"].wait(WAIT)
    assert {name: call.status for name, call in calls.items()} == {
        "before": Status.SUCCEEDED,
        "after": Status.SUCCEEDED,
    }
    assert middleware.counters.finished_early == 1


def test_asgi_finish_request_with_an_error_status_skips_the_held_calls() -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.extend([jumpqueue.defer(noop), jumpqueue.defer(noop_always)])
        await jumpqueue.afinish_request((500, [], b"failed"))

    run(serve_asgi(JumpQueueMiddleware(app)))
    assert all(call.wait(WAIT) for call in calls)
    assert [call.status for call in calls] == [Status.SKIPPED, Status.SUCCEEDED]


def test_asgi_finish_request_twice_raises() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await jumpqueue.afinish_request((200, [], b"once"))
        try:
            await jumpqueue.afinish_request((200, [], b"twice"))
        except ResponseStartedError as error:
            errors.append(error)

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert exchange.body == b"once"
    assert len(errors) == 1
    assert "called already" in str(errors[0])


def test_asgi_finish_request_after_the_app_started_its_response_raises() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await jumpqueue.afinish_request((200, [], b"too late"))

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert isinstance(exchange.error, ResponseStartedError)


def test_asgi_finish_request_logs_and_counts_a_later_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await jumpqueue.afinish_request((200, [], b"fine"))
        raise RuntimeError("after the response")

    middleware = JumpQueueMiddleware(app)
    with caplog.at_level(logging.ERROR, logger="jumpqueue"):
        exchange = run(serve_asgi(middleware))
    assert exchange.error is None
    assert exchange.body == b"fine"
    assert middleware.counters.errors_after_finish == 1
    assert "raised after finish_request()" in caplog.text
    assert "after the response" in caplog.text


def test_asgi_finish_request_works_from_a_worker_thread() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.to_thread(jumpqueue.finish_request, (200, [], b"from a thread"))

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert exchange.body == b"from a thread"


def test_asgi_finish_request_refuses_to_block_the_event_loop() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        jumpqueue.finish_request((200, [], b"blocking"))

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert isinstance(exchange.error, JumpQueueError)
    assert "afinish_request" in str(exchange.error)


def test_asgi_finish_request_refuses_what_is_not_a_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await jumpqueue.afinish_request("just text")
        await respond(send)

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert isinstance(exchange.error, InvalidResponseError)
    assert exchange.sent == []


def test_asgi_finish_request_counts_a_client_that_left_as_no_failure() -> None:
    calls: list[Deferred[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(jumpqueue.defer(noop))
        await jumpqueue.afinish_request((200, [], b"lost"))

    exchange = run(serve_asgi(JumpQueueMiddleware(app), disconnect_on="http.response.start"))
    assert exchange.error is None
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED


def test_finish_request_outside_the_middleware_says_it_is_missing() -> None:
    with pytest.raises(MiddlewareMissingError, match="middleware"):
        jumpqueue.finish_request((200, [], b""))
    with pytest.raises(MiddlewareMissingError, match="middleware"):
        run(jumpqueue.afinish_request((200, [], b"")))


def test_asgi_finish_request_accepts_a_starlette_response() -> None:
    responses = pytest.importorskip("starlette.responses")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await jumpqueue.afinish_request(responses.PlainTextResponse("native", status_code=202))

    exchange = run(serve_asgi(JumpQueueMiddleware(app)))
    assert (exchange.status, exchange.body) == (202, b"native")
    assert exchange.headers["content-type"].startswith("text/plain")


# -- lifespan ---------------------------------------------------------------------------------


async def run_lifespan(
    app: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]],
    on_shutdown: Callable[[], None] = noop,
) -> list[str]:
    """Start and stop the app through the lifespan protocol; the messages it sent."""
    incoming = ["lifespan.startup", "lifespan.shutdown"]
    sent: list[str] = []
    started = asyncio.Event()

    async def receive() -> Message:
        kind = incoming.pop(0)
        if kind == "lifespan.shutdown":
            await started.wait()
            on_shutdown()
        return {"type": kind}

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']}")
    await respond(send)


def test_asgi_lifespan_is_answered_for_an_app_that_does_not_speak_it() -> None:
    gate = threading.Event()
    call = jumpqueue.defer(gate.wait, WAIT)
    # The call can end only once shutdown has begun: the drain must wait for it.
    sent = run(run_lifespan(JumpQueueMiddleware(http_only), on_shutdown=gate.set))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert call.status is Status.SUCCEEDED
    assert jumpqueue.get_runtime().closed


def test_asgi_lifespan_drains_before_the_app_reports_its_shutdown() -> None:
    closed_when_complete: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})

    async def spy(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                closed_when_complete.append(jumpqueue.get_runtime().closed)
            await send(message)

        await JumpQueueMiddleware(app)(scope, receive, watched)

    sent = run(run_lifespan(spy))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert closed_when_complete == [True]


def test_asgi_lifespan_failure_of_the_app_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("startup failed")

    with pytest.raises(RuntimeError, match="startup failed"):
        run(run_lifespan(JumpQueueMiddleware(app)))


def test_asgi_lifespan_startup_replaces_a_closed_default_runtime(
    use_runtime: Callable[..., Runtime],
) -> None:
    old = use_runtime(max_workers=3)
    old.shutdown()
    run(run_lifespan(JumpQueueMiddleware(http_only)))
    new = jumpqueue.get_runtime()
    assert new is not old
    assert new.config == old.config


def test_asgi_lifespan_drains_the_runtime_it_was_given(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    run(run_lifespan(JumpQueueMiddleware(http_only, runtime=runtime)))
    assert runtime.closed
    assert not jumpqueue.get_runtime().closed


def test_asgi_lifespan_warns_when_the_runtime_it_was_given_is_shut_down(
    make_runtime: Callable[..., Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime()
    runtime.shutdown()
    with caplog.at_level(logging.WARNING, logger="jumpqueue"):
        run(run_lifespan(JumpQueueMiddleware(http_only, runtime=runtime)))
    assert "shut down" in caplog.text


def test_asgi_finish_request_that_fails_before_sending_leaves_the_request_open() -> None:
    class Broken:
        status_code = 200

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("cannot render")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(RuntimeError):
            await jumpqueue.afinish_request(Broken())
        await respond(send, 200, b"answered after all")

    middleware = JumpQueueMiddleware(app)
    exchange = run(serve_asgi(middleware))
    assert exchange.body == b"answered after all"
    assert middleware.counters.finished_early == 0


def test_asgi_pending_call_keeps_no_request_state_alive(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1)
    gate = threading.Event()
    runtime.defer(gate.wait, 10)  # the one thread is busy: the next call stays pending

    class ServerState:
        """Stands for the server's per-request objects (uvicorn's cycle, h11 state...)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        runtime.defer(gate.wait, 10)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def serve() -> weakref.ref[ServerState]:
        state = ServerState()

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message, state: ServerState = state) -> None:
            pass

        await JumpQueueMiddleware(app, runtime=runtime)(
            {"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send
        )
        return weakref.ref(state)

    alive = asyncio.run(serve())
    gc.collect()
    assert runtime.stats().pending == 1
    assert alive() is None  # the pending call holds nothing of the request's server state
    gate.set()
