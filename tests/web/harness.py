"""Real servers as subprocesses on loopback, and the coordinator their tasks report to."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
#: How long a server may take to answer its first request.
START_LIMIT = 30.0
#: Starts tried when another process takes the port first.
START_ATTEMPTS = 3
#: Runs the command after it with SIGINT's default disposition, as a terminal starts a
#: server: a suite started with SIGINT ignored (nohup, a background job) hands SIG_IGN
#: down, and Python then never raises KeyboardInterrupt. Not `preexec_fn`: that runs
#: Python in a forked child of a process with threads.
WITH_SIGINT = (
    PY,
    "-S",
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
)


class Coordinator:
    """A TCP server the tasks in a server process connect to (see `apps/common.py`).

    It records what each task says (`ran X`, `ready X`, `done X`) and answers a
    `ready X` with `go` only once the test has called `allow("X")`.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        host, port = self._listener.getsockname()[:2]
        self.address = f"{host}:{port}"
        self._condition = threading.Condition()
        self._events: list[str] = []
        self._allowed: set[str] = set()
        self._connections: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="coordinator", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._condition:
                self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection, connection.makefile("rwb") as stream:
            line = stream.readline().decode().strip()
            self._record(line)
            kind, _, tag = line.partition(" ")
            if kind != "ready":
                return
            with self._condition:
                self._condition.wait_for(lambda: tag in self._allowed or self._closed, 60)
                if self._closed:
                    return
            stream.write(b"go\n")
            stream.flush()
            self._record(stream.readline().decode().strip())

    def _record(self, event: str) -> None:
        if event:
            with self._condition:
                self._events.append(event)
                self._condition.notify_all()

    def events(self) -> list[str]:
        """Everything the tasks said so far, in order."""
        with self._condition:
            return list(self._events)

    def seen(self, event: str) -> bool:
        """Whether a task said `event`."""
        with self._condition:
            return event in self._events

    def wait_for(self, event: str, timeout: float = 15.0) -> None:
        """Wait until a task says `event`; fail the test if none does in time."""
        with self._condition:
            if not self._condition.wait_for(lambda: event in self._events, timeout):
                raise AssertionError(f"no {event!r} within {timeout} s; seen {self._events}")

    def started_at(self, tag: str, timeout: float = 15.0) -> float:
        """When the task tagged `tag` said it started (`common.report_start`), on its clock."""
        prefix = f"started {tag} "
        with self._condition:
            if not self._condition.wait_for(
                lambda: any(event.startswith(prefix) for event in self._events), timeout
            ):
                raise AssertionError(f"no {prefix!r} within {timeout} s; seen {self._events}")
            event = next(event for event in self._events if event.startswith(prefix))
        return float(event.removeprefix(prefix))

    def allow(self, tag: str) -> None:
        """Let the task (or handler) that said `ready <tag>` go on."""
        with self._condition:
            self._allowed.add(tag)
            self._condition.notify_all()

    def close(self) -> None:
        """Stop listening and hang up on every task."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            connections, self._connections = self._connections, []
        self._listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How to start one server with one application.

    Attributes:
        name: the server and worker type, as the test ids show them.
        command: the command line for a port.
        framework: the framework of the application it serves.
        needs: modules that must be importable, else the test is skipped.
    """

    name: str
    command: Callable[[int], list[str]]
    framework: str
    needs: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """The first module it needs that is not installed, or None."""
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                return module
        return None


def _gunicorn(worker: str, app: str, *extra: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            PY,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            worker,
            "--graceful-timeout",
            "15",
            "--config",
            "python:jumpqueue.contrib.gunicorn",
            *extra,
            app,
        ]

    return command


def _uvicorn_worker() -> str:
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker.UvicornWorker"
    return "uvicorn.workers.UvicornWorker"


SERVERS = {
    "uvicorn": ServerSpec(
        "uvicorn",
        lambda port: [
            *(PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning", "tests.web.apps.fastapi_app:app"),
        ],
        "fastapi",
        ("uvicorn", "fastapi"),
    ),
    "hypercorn": ServerSpec(
        "hypercorn",
        lambda port: [
            *(PY, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}"),
            "tests.web.apps.litestar_app:app",
        ],
        "litestar",
        ("hypercorn", "litestar"),
    ),
    "granian": ServerSpec(
        "granian",
        lambda port: [
            *(PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1", "tests.web.apps.asgi_plain:app"),
        ],
        "asgi",
        ("granian",),
    ),
    "gunicorn-sync": ServerSpec(
        "gunicorn-sync",
        _gunicorn("sync", "tests.web.apps.django_wsgi:application"),
        "django",
        ("gunicorn", "django"),
    ),
    "gunicorn-gthread": ServerSpec(
        "gunicorn-gthread",
        _gunicorn("gthread", "tests.web.apps.flask_app:app", "--threads", "4"),
        "flask",
        ("gunicorn", "flask"),
    ),
    "gunicorn-uvicorn": ServerSpec(
        "gunicorn-uvicorn",
        _gunicorn(_uvicorn_worker(), "tests.web.apps.django_asgi:application"),
        "django",
        ("gunicorn", "uvicorn", "django"),
    ),
    "waitress": ServerSpec(
        "waitress",
        lambda port: [
            *(PY, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4"),
            # wsgi_plain with the SIGTERM snippet of docs/servers.md.
            "tests.web.apps.waitress_app:app",
        ],
        "wsgi",
        ("waitress",),
    ),
    "werkzeug": ServerSpec(
        "werkzeug",
        lambda port: [
            *(PY, "-m", "tests.web.apps.serve_werkzeug", str(port)),
            "tests.web.apps.flask_app:app",
        ],
        "flask",
        ("werkzeug", "flask"),
    ),
}


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RunningServer:
    """A server subprocess in its own process group, with its log in a file."""

    def __init__(self, spec: ServerSpec, port: int, process: subprocess.Popen[bytes], log: Path):
        self.spec = spec
        self.port = port
        self.process = process
        self.log_path = log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        """GET on a fresh connection, so that no request waits behind a busy one."""
        return httpx.get(self.url + path, timeout=timeout, headers={"Connection": "close"})

    def stats(self) -> dict[str, Any]:
        """The application's /stats: runtime stats, web counters, pid and RSS."""
        response = self.get("/stats")
        response.raise_for_status()
        result: dict[str, Any] = json.loads(response.content)
        return result

    def wait_stats(
        self, accept: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll /stats until `accept` holds; fail with the last stats if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if accept(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"stats never matched within {timeout} s: {stats}")
            time.sleep(0.05)  # polling another process's counters: there is no event to wait on

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM (or `signum`) to the server's main process, as a process manager stops it."""
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the server to exit; its exit code."""
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after 10 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def running_installed(
    name: str, coordinator: Coordinator, log_dir: Path, **environment: str
) -> Iterator[RunningServer]:
    """`running()` for the server of that name, skipping the test where it is not installed."""
    spec = SERVERS[name]
    missing = spec.missing()
    if missing is not None:
        pytest.skip(f"{missing} is not installed for this Python")
    with running(spec, coordinator, log_dir, **environment) as started:
        yield started


@contextlib.contextmanager
def running(
    spec: ServerSpec, coordinator: Coordinator, log_dir: Path, **environment: str
) -> Iterator[RunningServer]:
    """Start the server, wait until it answers /stats, and always stop it afterwards."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "JQTEST_SYNC": coordinator.address,
        "JQTEST_SERVER": spec.name,
        "JUMPQUEUE_SHUTDOWN_TIMEOUT": "5",
        **environment,
    }
    env.pop("JQTEST_DJANGO_DB", None)
    for attempt in range(1, START_ATTEMPTS + 1):
        server = _start(spec, env, log_dir)
        try:
            _wait_until_serving(server)
        except PortTakenError:
            server.stop()
            if attempt == START_ATTEMPTS:
                raise
            continue
        except BaseException:
            server.stop()
            raise
        break
    try:
        yield server
    finally:
        server.stop()
        # Shown by pytest only when the test failed.
        print(
            f"--- last lines of the {spec.name} log ---", *server.log().splitlines()[-40:], sep="\n"
        )


class PortTakenError(AssertionError):
    """Another process took the free port between our probe and the server's bind."""


def _start(spec: ServerSpec, env: dict[str, str], log_dir: Path) -> RunningServer:
    port = free_port()
    log = log_dir / f"{spec.name}-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*WITH_SIGINT, *spec.command(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RunningServer(spec, port, process, log)


def _wait_until_serving(server: RunningServer) -> None:
    deadline = time.monotonic() + START_LIMIT
    while True:
        if server.process.poll() is not None:
            log = server.log()
            kind = PortTakenError if "address already in use" in log.lower() else AssertionError
            raise kind(f"{server.spec.name} exited at startup:\n{log}")
        try:
            if server.get("/stats", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{server.spec.name} did not serve within {START_LIMIT} s:\n{server.log()}"
            )
        time.sleep(0.05)  # the port is not open yet: nothing to wait on but time
