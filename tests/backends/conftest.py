"""Fixtures of the backend tests: real brokers, real workers, a real web server, and a reporter.

The shared services are Redis at 127.0.0.1:6379 (database 15 only, keys named
after the test's own `jumpqueue-test-*` queue) and RabbitMQ at 127.0.0.1:5672.
Where one is unreachable its tests are skipped, except under `CI=true`, where
they fail. A broker that a test stops is a private `redis-server` it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from jumpqueue import Deferred, Status
from jumpqueue.asgi import JumpQueueMiddleware
from jumpqueue.context import request_id, traceparent

from . import backend_tasks
from .backend_tasks import REPORT_ENV

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/15"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: How long a broker or a worker may take to start.
START_LIMIT = 20.0

Event = dict[str, Any]
Scope = MutableMapping[str, Any]


def unique_name() -> str:
    """A queue (and key prefix) name no other test run uses."""
    return f"jumpqueue-test-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(port: int, name: str) -> None:
    """Skip the test if the service on `port` is unreachable; under CI=true, fail it."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as error:
        message = f"{name} is not reachable on 127.0.0.1:{port} ({error})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


class Reporter:
    """A TCP server the tasks report to; it answers each report with its tag's count."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self._listener.getsockname()[:2])
        self._changed = threading.Condition()
        self._events: list[Event] = []
        threading.Thread(target=self._accept, name="reporter", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection, connection.makefile("rwb") as stream:
            event = json.loads(stream.readline())
            with self._changed:
                self._events.append(event)
                count = sum(e["tag"] == event["tag"] for e in self._events)
                self._changed.notify_all()
            stream.write(f"{count}\n".encode())
            stream.flush()

    def events(self, tag: str) -> list[Event]:
        """The reports with this tag so far."""
        with self._changed:
            return [event for event in self._events if event["tag"] == tag]

    def wait(self, tag: str, count: int = 1, timeout: float = 15.0) -> list[Event]:
        """The first `count` reports with this tag, waiting up to `timeout` seconds for them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.events(tag)) >= count, timeout)
        events = self.events(tag)
        assert len(events) >= count, f"{tag}: {len(events)} of {count} report(s) in {timeout} s"
        return events[:count]

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="package")
def reporter() -> Iterator[Reporter]:
    """One reporter for the package; local calls and worker processes report to it."""
    hub = Reporter()
    previous = os.environ.get(REPORT_ENV)
    os.environ[REPORT_ENV] = hub.address
    yield hub
    if previous is None:
        del os.environ[REPORT_ENV]
    else:
        os.environ[REPORT_ENV] = previous
    hub.close()


class Process:
    """A subprocess in its own session, with what it printed, killed with its children on close."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._printed = threading.Condition()
        self.popen = subprocess.Popen(
            args,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout as output:
            for line in output:
                with self._printed:
                    self.lines.append(line)
                    self._printed.notify_all()
        with self._printed:
            self._printed.notify_all()

    def wait_for_line(self, text: str, timeout: float = START_LIMIT) -> None:
        """Wait until the process printed a line containing `text`."""
        with self._printed:
            found = self._printed.wait_for(
                lambda: any(text in line for line in self.lines) or self.popen.poll() is not None,
                timeout,
            )
            if not any(text in line for line in self.lines):
                output = "".join(self.lines[-30:])
                raise AssertionError(f"{self.args[0]} never printed {text!r} ({found=}):\n{output}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL the process and its children, and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._reader.join(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it is not gone within `timeout`."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # children a warm shutdown left
        self._reader.join(10)


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    """Start subprocesses; every one is stopped after the test."""
    started: list[Process] = []

    def start(args: list[str], *, env: dict[str, str] | None = None) -> Process:
        process = Process(args, env=env)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


class PrivateRedis:
    """A `redis-server` of the test's own, on its own port, that the test may stop and restart."""

    def __init__(self, start: Callable[..., Process]) -> None:
        self._start = start
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Process | None = None

    def up(self) -> None:
        self.process = self._start(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        )
        self.process.wait_for_line("Ready to accept connections")

    def down(self) -> None:
        assert self.process is not None
        self.process.kill()


@pytest.fixture
def private_redis(processes: Callable[..., Process]) -> PrivateRedis:
    """A private redis-server, started."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(processes)
    server.up()
    return server


Handler = Callable[[str, dict[str, str]], int]


def asgi_app(handler: Handler) -> JumpQueueMiddleware:
    """A tiny ASGI app behind jumpqueue's middleware: `handler(path, query)` returns the status.

    It sets the carried context from `X-Request-ID` and `traceparent`, as an
    application (or its middleware) would.
    """

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        request_id.set(headers.get("x-request-id"))
        traceparent.set(headers.get("traceparent"))
        query = dict(
            pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
        )
        status = handler(scope["path"], query)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    return JumpQueueMiddleware(app)


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve the app with uvicorn on a loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    # Listening already: requests wait in the backlog until uvicorn accepts them.
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield "http://{}:{}".format(*sock.getsockname()[:2])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclasses.dataclass
class Outage:
    """What a broker outage looked like from a real web request's side."""

    handles: list[Deferred[Any]]
    sent: int  # requests made, each deferring one call
    local: list[Event]  # the calls that ran here instead, in order


def ride_out_broker_outage(private_redis: PrivateRedis, reporter: Reporter, name: str) -> Outage:
    """Serve requests that defer one call each while the broker is up, down, then up again.

    Every request must answer at once (the broker is never waited on); calls made while
    the broker is down run here; the loop ends with the first call handed off again.
    """
    handles: list[Deferred[Any]] = []

    def handler(path: str, query: dict[str, str]) -> int:
        handles.append(backend_tasks.record.defer(name, {"n": int(query["n"])}))
        return 200

    def request(client: httpx.Client, n: int) -> Deferred[Any]:
        started = time.monotonic()
        assert client.get(f"/order?n={n}").status_code == 200
        assert time.monotonic() - started < 3.0  # the request never waits on the broker (4 s)
        handle = handles[-1]
        assert handle.wait(10)
        return handle

    with served(asgi_app(handler)) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert request(client, 0).status is Status.HANDED_OFF
        private_redis.down()
        for n in range(1, 4):
            assert request(client, n).status is Status.SUCCEEDED  # ran here instead
        private_redis.up()
        deadline = time.monotonic() + 15
        n = 4
        while request(client, n).status is not Status.HANDED_OFF:
            assert time.monotonic() < deadline, "hand-off did not resume"
            n += 1
    local = reporter.events(name)
    assert [event["payload"]["n"] for event in local[:3]] == [1, 2, 3]
    assert all(event["pid"] == os.getpid() for event in local)
    return Outage(handles, n, local)
