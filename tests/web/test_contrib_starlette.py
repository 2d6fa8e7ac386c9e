"""The Starlette/FastAPI glue in process, driven by the fake ASGI server and Starlette's TestClient.

(Starlette's own test client warns about its httpx dependency in recent releases.)
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

import jumpqueue
from jumpqueue import Deferred, Runtime, RuntimeClosedError, Status

pytest.importorskip("fastapi")

from fastapi import BackgroundTasks, Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from jumpqueue.asgi import ASGIApp
from jumpqueue.contrib.starlette import HttpCounters, JumpQueueMiddleware

from .fakes import http_scope, serve_asgi
from .test_asgi_middleware import run_lifespan

with warnings.catch_warnings():
    # Starlette's test client warns that it prefers httpx2 to httpx.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

WAIT = 5.0


def make_app(counters: HttpCounters | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JumpQueueMiddleware, counters=counters or HttpCounters())
    return app


def test_contrib_starlette_holds_calls_deferred_in_a_dependency() -> None:
    app = make_app()
    calls: list[Deferred[None]] = []
    statuses: list[Status] = []

    def session() -> Iterator[str]:
        calls.append(jumpqueue.defer(lambda: None))
        yield "session"
        calls.append(jumpqueue.defer(lambda: None))

    @app.get("/")
    def index(name: str = Depends(session)) -> str:
        # (Annotated[str, Depends(session)] cannot name a local function under
        # `from __future__ import annotations`.)
        statuses.append(calls[0].status)
        return name

    exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    assert exchange.body == b'"session"'
    assert all(call.wait(WAIT) for call in calls)
    assert statuses == [Status.HELD]
    assert [call.status for call in calls] == [Status.SUCCEEDED] * 2


def test_contrib_starlette_skips_calls_of_a_failed_request() -> None:
    app = make_app()
    calls: list[Deferred[None]] = []

    @app.get("/")
    async def index() -> str:
        calls.append(jumpqueue.defer(lambda: None))
        raise RuntimeError("boom")

    exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    assert isinstance(exchange.error, RuntimeError)
    assert exchange.status == 500
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_contrib_starlette_answers_overload_with_503(use_runtime: Callable[..., Runtime]) -> None:
    counters = HttpCounters()
    app = make_app(counters)

    @app.get("/")
    async def index() -> str:
        jumpqueue.defer(lambda: None)
        return "unreachable"

    use_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    jumpqueue.defer(gate.wait, WAIT)
    try:
        exchange = asyncio.run(serve_asgi(app, http_scope("/")))
    finally:
        gate.set()
    assert exchange.status == 503
    assert exchange.headers["retry-after"] == "1"
    assert counters.overloaded == 1


def test_contrib_starlette_lifespan_drains_the_default_runtime(
    use_runtime: Callable[..., Runtime],
) -> None:
    runtime = jumpqueue.get_runtime()
    gate = threading.Event()
    call = jumpqueue.defer(gate.wait, WAIT)
    asyncio.run(run_lifespan(make_app(), on_shutdown=gate.set))
    assert runtime.closed
    assert call.status is Status.SUCCEEDED


# -- Starlette's TestClient: with and without its lifespan, in any order --------------------


async def send_welcome(address: str, sent: list[str]) -> None:
    await asyncio.sleep(0.01)  # the mail server's round trip
    sent.append(address)


def signup_app(framework: str, sent: list[str]) -> ASGIApp:
    """A FastAPI or Starlette app whose signup defers a coroutine that awaits."""

    async def signup(request: Request) -> PlainTextResponse:
        jumpqueue.defer(send_welcome, request.query_params["email"], sent)
        return PlainTextResponse("welcome")

    if framework == "starlette":
        return Starlette(
            routes=[Route("/signup", signup, methods=["POST"])],
            middleware=[Middleware(JumpQueueMiddleware)],
        )
    app = make_app()
    app.add_api_route("/signup", signup, methods=["POST"])
    return app


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_contrib_starlette_test_client_without_lifespan_runs_the_call_before_it_returns(
    framework: str,
) -> None:
    sent: list[str] = []
    client = TestClient(signup_app(framework, sent))
    assert client.post("/signup?email=a@example.com").text == "welcome"
    # The client closes its event loop after each request: the call ran to its end first.
    assert sent == ["a@example.com"]
    assert jumpqueue.stats().succeeded == 1


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_contrib_starlette_test_client_works_after_another_one_shut_its_lifespan_down(
    framework: str,
) -> None:
    sent: list[str] = []
    app = signup_app(framework, sent)
    with TestClient(app) as client:
        client.post("/signup?email=1@example.com")
    drained = jumpqueue.get_runtime()
    assert drained.closed  # the lifespan's shutdown drained it...
    assert jumpqueue.stats().succeeded == 1  # ...and what it ran can still be read
    # A request with no lifespan, a lifespan again, a call outside any request: all served.
    assert TestClient(app).post("/signup?email=2@example.com").status_code == 200
    with TestClient(app) as client:
        client.post("/signup?email=3@example.com")
    assert jumpqueue.defer(send_welcome, "4@example.com", sent).result(timeout=WAIT) is None
    assert sent == [f"{n}@example.com" for n in (1, 2, 3, 4)]
    renewed = jumpqueue.get_runtime()
    assert renewed is not drained
    assert renewed.config == drained.config


def test_contrib_starlette_runtime_drained_by_a_lifespan_is_renewed_with_its_config(
    use_runtime: Callable[..., Runtime],
) -> None:
    drained = use_runtime(max_workers=3)
    asyncio.run(run_lifespan(make_app()))
    assert jumpqueue.get_runtime() is drained
    assert jumpqueue.defer(lambda: "ran").result(timeout=WAIT) == "ran"
    assert jumpqueue.get_runtime().config.max_workers == 3
    assert drained.closed


def test_contrib_starlette_runtime_shut_down_by_the_application_stays_shut_down() -> None:
    jumpqueue.shutdown()
    with pytest.raises(RuntimeClosedError):
        jumpqueue.defer(lambda: None)


# -- FastAPI's order: BackgroundTasks, dependencies with yield, jumpqueue's calls ---------------


class Session:
    """What a dependency with `yield` hands out and closes in its teardown (a database session)."""

    closed = False


def test_contrib_starlette_calls_start_with_the_response_before_tasks_and_teardown() -> None:
    app = make_app()
    events: list[str] = []
    call_started = threading.Event()
    calls: list[Deferred[None]] = []

    def database() -> Iterator[Session]:
        session = Session()
        yield session
        # Waits for the call: had calls waited for the teardown, this would time out.
        events.append(f"teardown: call started {call_started.wait(WAIT)}")
        session.closed = True

    def send(session: Session) -> None:  # given the session: the pattern NOT to follow
        events.append(f"call: session closed {session.closed}")
        call_started.set()

    def background(number: int) -> None:
        events.append(f"background {number}: call held {calls[0].status is Status.HELD}")

    # (Annotated[...] cannot name a local function under `from __future__ import annotations`.)
    @app.post("/signup")
    def signup(tasks: BackgroundTasks, session: Session = Depends(database)) -> str:  # noqa: B008
        calls.append(jumpqueue.defer(send, session))
        tasks.add_task(background, 1)
        tasks.add_task(background, 2)
        return "welcome"

    with TestClient(app) as client:
        assert client.post("/signup").json() == "welcome"
    assert calls[0].status is Status.SUCCEEDED
    # The call starts once the response is sent: before BackgroundTasks (which run in
    # order) and FastAPI's teardown, and runs alongside them, the session still open.
    assert "call: session closed False" in events
    assert [event for event in events if not event.startswith("call")] == [
        "background 1: call held False",
        "background 2: call held False",
        "teardown: call started True",
    ]
