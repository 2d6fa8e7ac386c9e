"""The Litestar plugin in process, through Litestar's test client."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import jumpqueue
from jumpqueue import Deferred, Runtime, Status

pytest.importorskip("litestar")

from litestar import Litestar, Response, get
from litestar.testing import TestClient

from jumpqueue.contrib.litestar import JumpQueuePlugin

WAIT = 5.0


def test_contrib_litestar_holds_calls_until_the_response_is_sent() -> None:
    calls: list[Deferred[None]] = []
    statuses: list[Status] = []

    @get("/")
    async def index() -> str:
        calls.append(jumpqueue.defer(lambda: None))
        statuses.append(calls[0].status)
        return "ok"

    with TestClient(Litestar([index], plugins=[JumpQueuePlugin()])) as client:
        assert client.get("/").text == "ok"
        assert calls[0].wait(WAIT)
    assert statuses == [Status.HELD]
    assert calls[0].status is Status.SUCCEEDED


def test_contrib_litestar_skips_calls_of_a_failed_request() -> None:
    calls: list[Deferred[None]] = []

    @get("/")
    async def index() -> str:
        calls.append(jumpqueue.defer(lambda: None))
        raise RuntimeError("boom")

    app = Litestar([index], plugins=[JumpQueuePlugin()])
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/").status_code == 500
        assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


def test_contrib_litestar_answers_overload_with_503(use_runtime: Callable[..., Runtime]) -> None:
    plugin = JumpQueuePlugin()

    @get("/")
    async def index() -> str:
        jumpqueue.defer(lambda: None)
        return "unreachable"

    gate = threading.Event()
    with TestClient(Litestar([index], plugins=[plugin])) as client:
        use_runtime(max_pending=1, on_overload="reject")
        jumpqueue.defer(gate.wait, WAIT)
        try:
            response = client.get("/")
        finally:
            gate.set()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert plugin.counters.overloaded == 1


def test_contrib_litestar_finish_request_takes_a_litestar_response() -> None:
    plugin = JumpQueuePlugin()
    done = threading.Event()

    @get("/")
    async def index() -> str:
        await jumpqueue.afinish_request(Response("early", status_code=202))
        jumpqueue.defer(done.set)
        return "late"

    with TestClient(Litestar([index], plugins=[plugin])) as client:
        response = client.get("/")
        assert (response.status_code, response.text) == (202, "early")
        assert done.wait(WAIT)
    assert plugin.counters.finished_early == 1


def test_contrib_litestar_shutdown_drains_the_runtime(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()

    @get("/")
    async def index() -> str:
        return "ok"

    with TestClient(Litestar([index], plugins=[JumpQueuePlugin(runtime=runtime)])):
        assert not runtime.closed
    assert runtime.closed
