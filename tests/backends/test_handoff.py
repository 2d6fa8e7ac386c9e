from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import jumpqueue
from jumpqueue import (
    Config,
    ConfigurationError,
    HandOffError,
    InvalidCallError,
    Status,
    TaskNotRunError,
    TaskOptions,
)
from jumpqueue.backends import _handoff, _message, from_url, redact
from jumpqueue.backends._handoff import HandOffExecutor
from jumpqueue.context import request_id, traceparent
from jumpqueue.integration import RequestScope

from ..conftest import RuntimeFactory

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ran: list[tuple[Any, ...]] = []


def collect(*args: Any) -> None:
    ran.append(args)


@jumpqueue.task(name="tests.backends.handoff.named", retries=2, retry_backoff=0.5)
def named(x: int) -> int:
    return x


@jumpqueue.task(retries=1, retry_backoff=0)
def fails_once() -> None:
    ran.append(("again",) if ran else ("first",))
    if len(ran) == 1:
        raise ValueError("first")


@jumpqueue.task(on_handoff_error="raise")
def strict(x: int) -> None:
    ran.append((x,))


class FakeTransport:
    """Records messages; fails while `failing` is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], float | None]] = []
        self.failing: Exception | None = None
        self.closed = threading.Event()
        self.tries = 0
        self.duplicate = False

    def send(self, message: dict[str, Any], *, timeout: float | None) -> bool:
        self.tries += 1
        if self.failing is not None:
            raise self.failing
        self.sent.append((message, timeout))
        return not self.duplicate

    def ping(self) -> None:
        if self.failing is not None:
            raise self.failing

    def close(self) -> None:
        self.closed.set()


class FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self.transport = FakeTransport()

    def open(self, config: Config, host: Any) -> HandOffExecutor:
        return HandOffExecutor(self.name, self.transport, config, host)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_handoff, "RECONNECT_FIRST", 0.01)
    monkeypatch.setattr(_handoff, "RECONNECT_MAX", 0.02)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "rq+redis://127.0.0.1:6379/0",
        "rq+rediss://user:secret@redis.example:6380/2",
        "celery+amqp://guest:guest@127.0.0.1:5672//",
        "celery+redis://127.0.0.1:6379/1",
    ],
)
def test_handoff_config_accepts_backend_urls_by_scheme(url: str) -> None:
    assert Config(backend=url).backend == url


@pytest.mark.parametrize(
    "value", ["redis://127.0.0.1:6379/0", "kafka+tcp://x:1", "rq+", "rq", 42, object()]
)
def test_handoff_config_refuses_what_is_no_backend(value: object) -> None:
    with pytest.raises(ConfigurationError, match="backend"):
        Config(backend=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("rq+http://127.0.0.1:6379/0", "rq speaks to redis://, rediss://, unix://, not http://"),
        ("rq+redis://127.0.0.1:abc/0", "port is not a number"),
        ("rq+redis://127.0.0.1:70000/0", "port is not a number"),
        ("celery+amqp://guest:guest@127.0.0.1:notaport//", "port is not a number"),
        ("rq+redis://[::1", "cannot be parsed"),
        ("celery+amqp://a:5672//;amqp://b:x//", "port is not a number"),
        # Redis clients read these as database 0, or fail at the first send.
        ("rq+redis://127.0.0.1:6379/abc", "database must be a number.*'abc'"),
        ("rq+redis://127.0.0.1:6379?db=two", "database must be a number.*'two'"),
        ("celery+redis://127.0.0.1:6379/abc", "database must be a number"),
        ("rq+://127.0.0.1:6379/0", "no scheme"),
    ],
)
def test_handoff_config_refuses_broker_urls_that_cannot_work(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Config(backend=url)
    with pytest.raises(ConfigurationError, match=problem):
        jumpqueue.configure(backend=url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("celery+bogus://127.0.0.1//", "no transport 'bogus'"),
        ("celery+amqpp://guest:secret@127.0.0.1//", "no transport 'amqpp'; did you mean 'amqp'"),
        ("rq+redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_handoff_configure_refuses_what_the_engine_cannot_use(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as raised:
        jumpqueue.configure(backend=url)
    assert "secret" not in str(raised.value)


def test_handoff_config_options_are_validated_and_read_from_the_environment() -> None:
    with pytest.raises(ConfigurationError, match="handoff_timeout"):
        Config(handoff_timeout=0)
    with pytest.raises(ConfigurationError, match="on_handoff_error"):
        Config(on_handoff_error="retry")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="backend_queue"):
        Config(backend_queue="")
    with pytest.raises(ConfigurationError, match="on_handoff_error"):
        TaskOptions(on_handoff_error="drop")  # type: ignore[arg-type]
    config = Config.from_env(
        {
            "JUMPQUEUE_BACKEND": "rq+redis://127.0.0.1:6379/3",
            "JUMPQUEUE_BACKEND_QUEUE": "emails",
            "JUMPQUEUE_HANDOFF_TIMEOUT": "0.5",
            "JUMPQUEUE_ON_HANDOFF_ERROR": "raise",
        }
    )
    assert config.backend == "rq+redis://127.0.0.1:6379/3"
    assert config.backend_queue == "emails"
    assert config.handoff_timeout == 0.5
    assert config.on_handoff_error == "raise"
    assert Config.from_env({"JUMPQUEUE_BACKEND": ""}).backend is None


def test_handoff_config_does_not_show_a_broker_password() -> None:
    config = Config(backend="celery+amqp://user:s3cret@10.0.0.5:5672//")
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigurationError) as raised:
        Config(backend="amqp://user:s3cret@10.0.0.5:5672//")
    assert "s3cret" not in str(raised.value)
    assert "user:***@10.0.0.5" in str(raised.value)
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_handoff_config_keeps_a_backend_object_as_it_is() -> None:
    backend = FakeBackend()
    config = Config(backend=backend)
    assert config.replace(max_workers=2).backend is backend
    assert hash(config) == hash(Config(backend=backend))


def test_handoff_backend_urls_import_their_engine_only_when_opened() -> None:
    code = (
        "import sys, jumpqueue\n"
        "jumpqueue.Config(backend='celery+amqp://guest:guest@127.0.0.1:5672//')\n"
        "print(sorted(m for m in ('rq', 'redis', 'celery', 'kombu') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=20
    )
    assert out.stdout.strip() == "[]"
    backend = from_url("rq+redis://127.0.0.1:6379/9", queue="emails")
    assert type(backend).__name__ == "RQBackend"
    assert backend.name == "rq"


# -- hand-off ---------------------------------------------------------------------------------


def test_handoff_sends_a_message_and_the_call_is_final_here(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend, task_timeout=30)
    token = request_id.set("req-7")
    trace = traceparent.set(TRACE)
    try:
        handle = runtime.defer(named, 5)
        plain = runtime.defer(collect, "a", [1, 2], {"k": None})
    finally:
        request_id.reset(token)
        traceparent.reset(trace)
    assert handle.wait(5)
    assert plain.wait(5)
    assert handle.status is Status.HANDED_OFF
    with pytest.raises(TaskNotRunError, match="handed off to fake") as raised:
        handle.result()
    assert raised.value.status == "handed_off"
    # Two sends, each on a hand-off thread: in either order under load.
    sent = {message["id"]: (message, timeout) for message, timeout in backend.transport.sent}
    assert len(sent) == len(backend.transport.sent) == 2
    (message, timeout), (plain_message, _) = sent[handle.id], sent[plain.id]
    assert timeout == 30
    assert message["id"] == handle.id
    assert message["name"] == "tests.backends.handoff.named"
    assert message["path"] == f"{__name__}.named"
    assert message["arguments"] == "[[5],{}]"
    assert message["context"] == {"request_id": "req-7", "traceparent": TRACE}
    assert (message["retries"], message["retry_backoff"]) == (2, 0.5)
    assert message["retry_on"] == ["builtins.Exception"]
    assert plain_message["name"] == f"{__name__}.collect"
    assert ran == []
    stats = runtime.stats()
    assert stats.handed_off == 2
    assert stats.backends == {
        "fake": {"handed_off": 2, "handoff_failures": 0, "handoff_fallbacks": 0}
    }
    assert stats.submitted == stats.finished + stats.in_flight
    assert stats.as_dict()["backends"] == {
        "fake": {"handed_off": 2, "handoff_failures": 0, "handoff_fallbacks": 0}
    }


def test_handoff_refuses_at_defer_time_what_cannot_leave(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(backend=FakeBackend())

    def closure() -> None:
        pass

    with pytest.raises(InvalidCallError, match="lambda"):
        runtime.defer(lambda: None)
    with pytest.raises(InvalidCallError, match="closure"):
        runtime.defer(closure)
    with pytest.raises(InvalidCallError, match="JSON"):
        runtime.defer(collect, object())
    assert runtime.stats().submitted == 0
    pickled = jumpqueue.task(collect).options(serializer="pickle")
    assert runtime.defer(pickled, {1, 2}).wait(5)


def test_handoff_waits_for_the_response_and_a_failed_request_sends_nothing(
    make_runtime: RuntimeFactory,
) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    scope = RequestScope()
    token = scope.activate()
    try:
        held = runtime.defer(collect, "held")
        always = runtime.defer(jumpqueue.task(collect).options(always=True), "always")
    finally:
        scope.deactivate(token)
    assert held.status.value == "held"
    assert backend.transport.sent == []
    scope.release(succeeded=False)
    assert always.wait(5)
    assert held.status is Status.SKIPPED
    assert always.status is Status.HANDED_OFF
    assert [message["arguments"] for message, _ in backend.transport.sent] == ['[["always"],{}]']
    stats = runtime.stats()
    assert (stats.skipped, stats.handed_off) == (1, 1)


def test_handoff_falls_back_to_the_local_pool_and_resumes_by_itself(
    make_runtime: RuntimeFactory, fast_reconnect: None, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    backend.transport.failing = ConnectionError("broker gone")
    first = runtime.defer(collect, 1)
    assert first.wait(5)
    assert first.status is Status.SUCCEEDED  # ran here instead
    assert ran == [(1,)]
    assert "broker is unreachable" in caplog.text
    assert "running it locally" in caplog.text
    backend.transport.failing = None
    deadline = time.monotonic() + 10
    while True:  # the broker is tried again after its short pause
        handle = runtime.defer(collect, 2)
        assert handle.wait(5)
        if handle.status is Status.HANDED_OFF:
            break
        assert time.monotonic() < deadline, "hand-off did not resume"
    assert "reachable again" in caplog.text
    stats = runtime.stats()
    counts = stats.backends["fake"]
    assert counts["handoff_failures"] == 1
    assert counts["handoff_fallbacks"] == len(ran)
    assert counts["handed_off"] == 1
    assert stats.succeeded == len(ran)
    assert stats.submitted == stats.finished


def test_handoff_does_not_retry_a_dead_broker_for_every_call(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    backend.transport.failing = ConnectionError("broker gone")
    handles = [runtime.defer(collect, n) for n in range(40)]
    assert all(handle.wait(5) for handle in handles)
    # Senders already sending when the first failure came back fail too; no later one tries.
    assert 1 <= backend.transport.tries <= _handoff.MAX_SENDERS
    counts = runtime.stats().backends["fake"]
    assert counts["handoff_failures"] == backend.transport.tries
    assert counts["handoff_fallbacks"] == 40


def test_handoff_raise_fails_the_handle_and_then_defer(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    backend.transport.failing = ConnectionError("broker gone")
    handle = runtime.defer(strict, 1)
    assert handle.wait(5)
    assert handle.status is Status.FAILED
    with pytest.raises(HandOffError, match="could not be handed off") as raised:
        handle.result()
    assert raised.value.backend == "fake"
    assert isinstance(raised.value.__cause__, ConnectionError)
    with pytest.raises(HandOffError, match="unreachable"):
        runtime.defer(strict, 2)  # known down: refused at once
    assert ran == []
    assert runtime.stats().failed == 1


def test_handoff_journal_fallback_without_a_journal_runs_locally(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend, on_handoff_error="journal")
    backend.transport.failing = ConnectionError("broker gone")
    handle = runtime.defer(collect, 1)
    assert handle.wait(5)
    assert handle.status is Status.SUCCEEDED
    assert "no journal is configured" in caplog.text


def test_handoff_local_fallback_retries_locally(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    backend.transport.failing = ConnectionError("broker gone")
    handle = runtime.defer(fails_once)
    assert handle.wait(5)
    assert handle.status is Status.SUCCEEDED
    assert ran == [("first",), ("again",)]
    assert backend.transport.tries == 1


def test_handoff_arguments_changed_after_defer_fall_back(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    scope = RequestScope()
    token = scope.activate()
    payload: dict[str, Any] = {"ok": 1}
    try:
        handle = runtime.defer(collect, payload)
    finally:
        scope.deactivate(token)
    payload["bad"] = object()  # no longer JSON when it is sent
    scope.release(succeeded=True)
    assert handle.wait(5)
    assert handle.status is Status.SUCCEEDED
    assert backend.transport.tries == 0
    assert runtime.stats().backends["fake"]["handoff_fallbacks"] == 1


def test_handoff_a_duplicate_id_is_logged_not_sent_twice(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    backend.transport.duplicate = True
    runtime = make_runtime(backend=backend)
    caplog.set_level(logging.INFO, logger="jumpqueue")
    handle = runtime.defer(collect, 1)
    assert handle.wait(5)
    assert handle.status is Status.HANDED_OFF
    assert "already in fake under that id" in caplog.text


def test_handoff_shutdown_drains_and_closes_the_connection(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    handles = [runtime.defer(collect, n) for n in range(50)]
    runtime.shutdown(timeout=10)
    assert all(handle.status is Status.HANDED_OFF for handle in handles)
    assert backend.transport.closed.wait(5)
    assert repr(runtime._dispatcher.backend).startswith("<HandOffExecutor fake up")


def test_handoff_unused_backend_closes_at_shutdown(make_runtime: RuntimeFactory) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    runtime.shutdown(timeout=1)
    assert backend.transport.closed.is_set()
    executor = runtime._dispatcher.backend
    assert executor is not None
    assert (executor.workers, executor.stuck) == (0, 0)


def test_handoff_sender_survives_an_unexpected_error(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    runtime = make_runtime(backend=backend)
    build = _message.build
    surprises = [RuntimeError("surprise")]

    def flaky_build(*args: Any, **kwargs: Any) -> Any:
        if surprises:
            raise surprises.pop()
        return build(*args, **kwargs)

    monkeypatch.setattr(_message, "build", flaky_build)
    first = runtime.defer(collect, "first")
    assert first.wait(5)
    assert first.status is Status.SUCCEEDED  # fell back to the local pool
    assert "failed unexpectedly" in caplog.text
    second = runtime.defer(collect, "second")
    assert second.wait(5)
    assert second.status is Status.HANDED_OFF  # the sender is still there


def test_handoff_ping_asks_the_transport_and_sends_nothing() -> None:
    backend = FakeBackend()
    executor = backend.open(Config(), host=None)
    executor.ping()
    backend.transport.failing = ConnectionError("broker gone")
    with pytest.raises(ConnectionError, match="broker gone"):
        executor.ping()
    executor.close()
    assert backend.transport.sent == []
