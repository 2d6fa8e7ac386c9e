"""Each application under examples/ run as its README says: real servers, clients and services."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from .backends.conftest import REDIS_URL, free_port, require
from .conftest import eventually

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BIN = Path(sys.executable).parent
#: How long a server or a worker may take to start, and a deferred call to show its effect.
START_LIMIT = 15.0
EFFECT_LIMIT = 15.0


@contextlib.contextmanager
def started(
    command: list[str],
    example: str,
    tmp_path: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command in the example's folder (waiting until `port` is open), stop it after."""
    log = tmp_path / f"{command[0]}-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BIN / command[0]), *command[1:]],
            cwd=EXAMPLES / example,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def serving(port: int) -> bool:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        return False

    try:
        if port is not None:
            eventually(
                functools.partial(serving, port), f"{example} serving on port {port}", START_LIMIT
            )
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        print(f"--- {command[0]} log ---", log.read_text(errors="replace")[-4000:], sep="\n")


def gunicorn(app: str, port: int) -> list[str]:
    """gunicorn with jumpqueue's hooks, as the examples' READMEs start it."""
    hooks = ["-c", "python:jumpqueue.contrib.gunicorn"]
    return ["gunicorn", *hooks, "-w", "2", "-b", f"127.0.0.1:{port}", app]


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, queue.Queue[Any]]]:
    """A real SMTP server on loopback (aiosmtpd); each message it receives goes to the queue."""
    from aiosmtpd.controller import Controller

    received: queue.Queue[Any] = queue.Queue()

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's hook name
            received.put(envelope)
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


def test_example_signup_mail_sends_the_welcome_mail_through_smtp_after_the_response(
    tmp_path: Path, smtp_server: tuple[int, queue.Queue[Any]]
) -> None:
    smtp_port, mails = smtp_server
    port = free_port()
    uvicorn = ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "signup_app:app"]
    with started(uvicorn, "signup_mail", tmp_path, port=port, env={"SMTP_PORT": str(smtp_port)}):
        url = f"http://127.0.0.1:{port}/signup"
        assert httpx.post(url, json={"email": "ada@example.com"}).status_code == 201
        mail = mails.get(timeout=EFFECT_LIMIT)
        assert mail.rcpt_tos == ["ada@example.com"]
        assert b"Subject: Welcome!" in mail.content
        # A failed request (409) skips its mail: the next one is the next sign-up's.
        assert httpx.post(url, json={"email": "ada@example.com"}).status_code == 409
        assert httpx.post(url, json={"email": "bob@example.com"}).status_code == 201
        assert mails.get(timeout=EFFECT_LIMIT).rcpt_tos == ["bob@example.com"]


def test_example_django_mail_sends_the_contact_form_through_djangos_smtp_backend(
    tmp_path: Path, smtp_server: tuple[int, queue.Queue[Any]]
) -> None:
    smtp_port, mails = smtp_server
    port = free_port()
    command = gunicorn("mailer_wsgi:application", port)
    with started(command, "django_mail", tmp_path, port=port, env={"EMAIL_PORT": str(smtp_port)}):
        url = f"http://127.0.0.1:{port}/contact"
        assert httpx.post(url, data={"email": "ada@example.com"}).status_code == 400
        form = {"email": "ada@example.com", "message": "Do you ship to Mars?"}
        answer = httpx.post(url, data=form)
        assert answer.status_code == 202, answer.text
        mail = mails.get(timeout=EFFECT_LIMIT)
        assert mail.rcpt_tos == ["team@example.com"]
        assert b"Subject: Message from ada@example.com" in mail.content
        assert b"Do you ship to Mars?" in mail.content


def test_example_webhook_relay_retries_until_the_target_takes_the_event(tmp_path: Path) -> None:
    attempts: list[bytes] = []
    taken = threading.Event()

    class Target(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            attempts.append(self.rfile.read(int(self.headers["Content-Length"])))
            # Down for the first two attempts, as a target being deployed is.
            self.send_response(503 if len(attempts) < 3 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if len(attempts) == 3:
                taken.set()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- its signature
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    port = free_port()
    target_url = f"http://127.0.0.1:{target.server_port}/events"
    try:
        relay = gunicorn("relay_app:app", port)
        with started(relay, "webhook_relay", tmp_path, port=port, env={"RELAY_TARGET": target_url}):
            event = json.dumps({"type": "invoice.paid", "id": 42})
            answer = httpx.post(
                f"http://127.0.0.1:{port}/hooks",
                content=event,
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 202
            assert taken.wait(EFFECT_LIMIT), attempts
    finally:
        target.shutdown()
        target.server_close()
    assert attempts == [event.encode()] * 3


# Two Litestar start-ups (its suite's, the server's) and a child process, under coverage.
@pytest.mark.timeout(90)
def test_example_thumbnails_are_made_in_a_child_process_after_the_upload(tmp_path: Path) -> None:
    from PIL import Image

    # Its own suite first: the recipe the Litestar tutorial quotes.
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLES / "thumbnails",
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "THUMBS_MEDIA": str(tmp_path / "suite")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout + suite.stderr
    assert "1 passed" in suite.stdout, suite.stdout
    original = io.BytesIO()
    Image.linear_gradient("L").resize((2400, 1800)).convert("RGB").save(original, format="PNG")
    port = free_port()
    uvicorn = ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "thumbs_app:app"]
    media = {"THUMBS_MEDIA": str(tmp_path / "served")}
    with started(uvicorn, "thumbnails", tmp_path, port=port, env=media):
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{url}/images/not.a.name", content=b"").status_code == 400
        assert httpx.post(f"{url}/images/sunset", content=original.getvalue()).status_code == 202

        def made() -> httpx.Response | None:
            response = httpx.get(f"{url}/thumbnails/sunset")
            return None if response.status_code == 404 else response

        # The first call starts the process pool's child, which imports Pillow and the app.
        thumbnail = eventually(made, "a thumbnail made by the child process", 3 * EFFECT_LIMIT)
    assert thumbnail.status_code == 200
    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert image.size == (256, 192)


def test_example_rq_orders_are_handed_to_a_real_rq_worker_by_configuration(
    tmp_path: Path,
) -> None:
    require(6379, "Redis")
    import redis

    name = f"jumpqueue-test-{uuid.uuid4().hex[:12]}"
    env = {
        "JUMPQUEUE_BACKEND": f"rq+{REDIS_URL}",
        "JUMPQUEUE_BACKEND_QUEUE": name,
        "ORDERS_REDIS": REDIS_URL,
        "ORDERS_FULFILLED": f"{name}:fulfilled",
    }
    port = free_port()
    connection = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    worker = ["rq", "worker", "--url", REDIS_URL, "--name", name, name]
    try:
        with (
            started(worker, "rq_orders", tmp_path, env=env),
            started(
                gunicorn("orders_app:application", port), "rq_orders", tmp_path, port=port, env=env
            ),
        ):
            assert httpx.post(f"http://127.0.0.1:{port}/orders/7").status_code == 202
            popped = connection.blpop([env["ORDERS_FULFILLED"]], timeout=EFFECT_LIMIT)
            assert popped is not None, "the order was not fulfilled"
            done = json.loads(popped[1])
            assert done["order"] == 7
            # It went through RQ: its job reaches the queue's finished registry.
            eventually(
                lambda: connection.zcard(f"rq:finished:{name}"),
                "a job finished on the RQ queue",
                EFFECT_LIMIT,
            )
    finally:
        keys = list(connection.scan_iter(match=f"*{name}*", count=1000))
        keys += ["rq:job:" + str(job) for job in connection.zrange(f"rq:finished:{name}", 0, -1)]
        if keys:
            connection.delete(*keys)
        for registry in ("rq:queues", "rq:workers"):
            for member in connection.smembers(registry):
                if name in member:
                    connection.srem(registry, member)
        connection.close()
