"""The Flask extension in process: app context in calls, settings, the 503 handler."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

import jumpqueue
from jumpqueue import ConfigurationError, Deferred, Runtime, Status

from .fakes import serve_wsgi, wsgi_environ

pytest.importorskip("flask")

import flask

from jumpqueue.contrib.flask import JumpQueue

WAIT = 5.0


def make_app(**config: object) -> flask.Flask:
    app = flask.Flask("jqtest")
    app.config.update(config)
    return app


def test_contrib_flask_runs_calls_after_the_response_in_an_app_context() -> None:
    app = make_app()
    JumpQueue(app)
    names: list[str] = []
    calls: list[Deferred[None]] = []

    @app.get("/")
    def index() -> str:
        calls.append(jumpqueue.defer(lambda: names.append(flask.current_app.name)))
        return "ok"

    seen: list[Status] = []
    exchange = serve_wsgi(app, on_chunk=lambda _: seen.append(calls[0].status))
    assert exchange.content == b"ok"
    assert seen == [Status.HELD]
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED
    assert names == ["jqtest"]


def test_contrib_flask_call_has_an_app_context_and_no_request_context() -> None:
    app = make_app()
    JumpQueue(app)
    seen: dict[str, object] = {}
    calls: list[Deferred[None]] = []

    def probe(email: str) -> None:
        seen["email"] = email  # what the call needs comes as an argument
        seen["app"] = flask.current_app.name
        seen["request context"] = flask.has_request_context()
        seen["g"] = dict(vars(flask.g))  # the call's own application context
        try:
            seen["form"] = dict(flask.request.form)
        except (RuntimeError, AttributeError):
            seen["form"] = "unreadable"

    @app.post("/signup")
    def signup() -> str:
        flask.g.user = "ada"
        calls.append(jumpqueue.defer(probe, flask.request.form["email"]))
        return "welcome"

    response = app.test_client().post("/signup", data={"email": "ada@example.com"})
    assert response.text == "welcome"
    response.close()  # as a server does: the held calls are released
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SUCCEEDED
    assert seen == {
        "email": "ada@example.com",
        "app": "jqtest",
        "request context": False,
        "g": {},
        "form": "unreadable",
    }


def test_contrib_flask_skips_calls_of_a_failed_request() -> None:
    app = make_app()
    JumpQueue(app)
    calls: list[Deferred[None]] = []

    @app.get("/")
    def index() -> str:
        calls.append(jumpqueue.defer(lambda: None))
        raise RuntimeError("boom")

    exchange = serve_wsgi(app)
    assert exchange.status == "500 INTERNAL SERVER ERROR"
    assert calls[0].wait(WAIT)
    assert calls[0].status is Status.SKIPPED


@pytest.fixture
def full_backlog(use_runtime: Callable[..., Runtime]) -> Iterator[None]:
    use_runtime(max_pending=1, on_overload="reject")
    gate = threading.Event()
    jumpqueue.defer(gate.wait, WAIT)
    yield
    gate.set()


def test_contrib_flask_answers_overload_with_503(full_backlog: None) -> None:
    app = make_app()
    extension = JumpQueue(app)

    @app.get("/")
    def index() -> str:
        jumpqueue.defer(lambda: None)
        return "unreachable"

    exchange = serve_wsgi(app)
    assert exchange.status == "503 SERVICE UNAVAILABLE"
    assert dict(exchange.headers)["Retry-After"] == "1"
    assert extension.counters.overloaded == 1


def test_contrib_flask_can_leave_overload_to_the_app(full_backlog: None) -> None:
    app = make_app(JUMPQUEUE_OVERLOAD_RESPONSE=False)
    JumpQueue(app)

    @app.get("/")
    def index() -> str:
        jumpqueue.defer(lambda: None)
        return "unreachable"

    assert serve_wsgi(app).status == "500 INTERNAL SERVER ERROR"


def test_contrib_flask_reads_settings_from_app_config(use_runtime: Callable[..., Runtime]) -> None:
    app = make_app(JUMPQUEUE_MAX_WORKERS=3, JUMPQUEUE_ON_OVERLOAD="drop", OTHER=1)
    extension = JumpQueue()
    extension.init_app(app)
    config = jumpqueue.get_runtime().config
    assert (config.max_workers, config.on_overload) == (3, "drop")
    assert app.extensions["jumpqueue"] is extension


def test_contrib_flask_refuses_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"app\.config: unknown"):
        JumpQueue(make_app(JUMPQUEUE_NO_SUCH_OPTION=1))


def test_contrib_flask_finish_request_takes_a_flask_response() -> None:
    app = make_app()
    extension = JumpQueue(app)
    done = threading.Event()

    @app.get("/")
    def index() -> str:
        jumpqueue.finish_request(flask.Response("early", status=202))
        jumpqueue.defer(done.set)
        return "late"

    exchange = serve_wsgi(app, wsgi_environ("/"))
    assert (exchange.status, exchange.content) == ("202 ACCEPTED", b"early")
    assert done.wait(WAIT)
    assert extension.counters.finished_early == 1
