"""Celery against the real RabbitMQ (and Redis as a broker), with real workers the test starts."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import kombu
import kombu.exceptions
import pytest
import redis

import jumpqueue
from jumpqueue import Deferred, Status
from jumpqueue._deferred import _id_prefix
from jumpqueue.backends.celery import TASK_NAME, CeleryBackend, register

from ..conftest import RuntimeFactory
from . import backend_tasks
from .backend_tasks import REPORT_ENV
from .celery_app import BROKER_ENV, QUEUE_ENV, make_app
from .conftest import (
    BIN,
    RABBITMQ_URL,
    REDIS_URL,
    PrivateRedis,
    Process,
    Reporter,
    asgi_app,
    free_port,
    require,
    ride_out_broker_outage,
    served,
    unique_name,
)

TRACE = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
StartWorker = Callable[[str, str], Process]


def tag() -> str:
    return f"celery-{uuid.uuid4().hex[:8]}"


def start_worker(
    broker: str, queue: str, reporter: Reporter, app: str = "tests.backends.celery_app"
) -> Process:
    """A real `celery worker` (solo pool: the task runs in the worker process) on one queue."""
    process = Process(
        [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "--pool=solo",
            "--queues",
            queue,
            "--hostname",
            f"{queue}-{uuid.uuid4().hex[:4]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ],
        env={BROKER_ENV: broker, QUEUE_ENV: queue, REPORT_ENV: reporter.address},
    )
    process.wait_for_line(" ready.")
    return process


@pytest.fixture
def workers(reporter: Reporter) -> Iterator[StartWorker]:
    """Start Celery workers; every one is stopped after the test."""
    started: list[Process] = []

    def start(broker: str, queue: str) -> Process:
        process = start_worker(broker, queue, reporter)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()  # see amqp_worker: a warm shutdown adds nothing the test checks


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[Callable[[], str]]:
    """Name RabbitMQ queues for the module; each is deleted (with its exchange) after."""
    require(5672, "RabbitMQ")
    names: list[str] = []

    def new_queue() -> str:
        names.append(unique_name())
        return names[-1]

    yield new_queue
    with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as connection:
        channel = connection.default_channel
        for name in names:
            for suffix in ("", "-idle"):
                channel.queue_delete(name + suffix)
                channel.exchange_delete(name + suffix)


@pytest.fixture(scope="module")
def amqp_queue(rabbitmq: Callable[[], str]) -> str:
    return rabbitmq()


@pytest.fixture(scope="module")
def amqp_worker(amqp_queue: str, reporter: Reporter) -> Iterator[Process]:
    """One worker for the module's RabbitMQ tests."""
    process = start_worker(RABBITMQ_URL, amqp_queue, reporter)
    yield process
    # Its work is done. A warm shutdown of an idle worker on RabbitMQ would wait out
    # kombu's event loop poll, up to 10 s, before it looks at the stop flag again.
    process.kill()


def waiting_messages(queue: str) -> int:
    """Messages ready in a RabbitMQ queue (0 if it does not exist)."""
    with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as connection:
        try:
            declared = connection.default_channel.queue_declare(queue, passive=True)
        except connection.channel_errors:
            return 0
        return int(declared.message_count)


def test_celery_request_hands_off_to_a_real_worker(
    amqp_queue: str, amqp_worker: Process, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    use_runtime(backend=f"celery+{RABBITMQ_URL}", backend_queue=amqp_queue)
    name = tag()

    def handler(path: str, query: dict[str, str]) -> int:
        backend_tasks.record.defer(name, {"items": [1, "two", None], "ü": 1.5}, note="kw")
        jumpqueue.defer(backend_tasks.plain_record, f"{name}-plain", [3, 4])
        jumpqueue.defer(backend_tasks.async_record, f"{name}-async")
        return 200

    with served(asgi_app(handler)) as url:
        response = httpx.get(
            f"{url}/order", headers={"X-Request-ID": "req-celery", "traceparent": TRACE}, timeout=10
        )
    assert response.status_code == 200
    [event] = reporter.wait(name)
    assert event["payload"] == {"items": [1, "two", None], "ü": 1.5}
    assert event["note"] == "kw"
    assert (event["request_id"], event["traceparent"]) == ("req-celery", TRACE)
    assert event["pid"] == amqp_worker.pid
    assert reporter.wait(f"{name}-plain")[0]["payload"] == [3, 4]  # its module is included
    assert reporter.wait(f"{name}-async")[0]["request_id"] == "req-celery"
    stats = jumpqueue.stats()
    assert stats.backends["celery"]["handed_off"] == stats.handed_off == 3


def test_celery_task_options_map_onto_the_message(
    amqp_queue: str, amqp_worker: Process, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    run = register(make_app("memory://", "unused"))
    assert (run.name, run.acks_late, run.reject_on_worker_lost) == (TASK_NAME, True, True)
    use_runtime(backend=CeleryBackend(RABBITMQ_URL, queue=f"{amqp_queue}-idle"))
    handle = backend_tasks.with_options.defer(tag())
    assert handle.wait(10)
    assert handle.status is Status.HANDED_OFF
    with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as connection:
        raw = connection.default_channel.basic_get(f"{amqp_queue}-idle", no_ack=True)
        assert raw is not None
    headers = raw.properties["application_headers"]
    assert headers["id"] == handle.id  # our id is Celery's task id
    assert headers["task"] == TASK_NAME
    assert headers["timelimit"] == [7, None]
    [body] = json.loads(raw.body)[0]
    assert (body["retries"], body["retry_backoff"]) == (2, 1.5)

    use_runtime(backend=f"celery+{RABBITMQ_URL}", backend_queue=amqp_queue)
    name = tag()
    flaky = backend_tasks.flaky.defer(name, 2)
    assert len({event["pid"] for event in reporter.wait(name, 3)}) == 1
    amqp_worker.wait_for_line(f"[{flaky.id}] succeeded")
    assert sum(f"[{flaky.id}] retry:" in line for line in amqp_worker.lines) == 2
    wrong = backend_tasks.wrong_kind.defer(f"{name}-wrong")
    amqp_worker.wait_for_line(f"[{wrong.id}] raised unexpected: KeyError")
    assert not any(f"[{wrong.id}] retry:" in line for line in amqp_worker.lines)


def test_celery_a_failed_request_hands_off_nothing(
    amqp_queue: str, use_runtime: RuntimeFactory
) -> None:
    idle = f"{amqp_queue}-idle"
    use_runtime(backend=f"celery+{RABBITMQ_URL}", backend_queue=idle)
    before = waiting_messages(idle)
    handles: list[Deferred[Any]] = []

    def handler(path: str, query: dict[str, str]) -> int:
        handles.append(backend_tasks.record.defer(tag(), {}))
        handles.append(jumpqueue.defer(backend_tasks.record.options(always=True), tag(), {}))
        return 500

    with served(asgi_app(handler)) as url:
        assert httpx.get(f"{url}/fail", timeout=10).status_code == 500
    skipped, always = handles
    assert always.wait(10)
    assert (skipped.status, always.status) == (Status.SKIPPED, Status.HANDED_OFF)
    assert waiting_messages(idle) == before + 1  # only the always=True call


def test_celery_worker_refuses_functions_the_application_does_not_know(
    amqp_queue: str, amqp_worker: Process
) -> None:
    sender = make_app(RABBITMQ_URL, amqp_queue)
    message: dict[str, Any] = {
        "v": 1,
        "name": "os.system",
        "path": "os.system",
        "serializer": "json",
        "arguments": '[["true"],{}]',
        "context": {},
    }
    refused = f"{_id_prefix}-refused-{uuid.uuid4().hex[:6]}"
    sender.send_task(TASK_NAME, args=(message,), task_id=refused, queue=amqp_queue)
    amqp_worker.wait_for_line(f"refused 'os.system' [{refused}]")
    pickled = {**message, "name": "tests.backends.record", "serializer": "pickle"}
    sender.send_task(TASK_NAME, args=(pickled,), queue=amqp_queue)
    amqp_worker.wait_for_line("are not accepted here")


def test_celery_worker_killed_mid_task_gets_it_redelivered(
    rabbitmq: Callable[[], str],
    workers: StartWorker,
    reporter: Reporter,
    use_runtime: RuntimeFactory,
) -> None:
    queue = rabbitmq()
    first = workers(RABBITMQ_URL, queue)
    use_runtime(backend=f"celery+{RABBITMQ_URL}", backend_queue=queue)
    name = tag()
    handle = backend_tasks.killed_once.defer(name)
    [started] = reporter.wait(name)
    assert started["pid"] == first.pid
    first.kill()  # SIGKILL mid-task: the message was never acknowledged
    second = workers(RABBITMQ_URL, queue)
    again = reporter.wait(name, 2)[1]
    assert again["pid"] == second.pid
    second.wait_for_line(f"[{handle.id}] succeeded")


def test_celery_redis_broker_hands_off_to_a_real_worker(
    workers: StartWorker, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    require(6379, "Redis")
    queue = unique_name()
    try:
        worker = workers(REDIS_URL, queue)
        # The application's own Celery app, keys prefixed like the worker's.
        use_runtime(backend=CeleryBackend(app=make_app(REDIS_URL, queue)))
        name = tag()
        handle = backend_tasks.record.defer(name, {"broker": "redis"})
        [event] = reporter.wait(name)
        assert event["payload"] == {"broker": "redis"}
        assert event["pid"] == worker.pid
        worker.wait_for_line(f"[{handle.id}] succeeded")
        worker.stop()
    finally:
        with redis.Redis.from_url(REDIS_URL) as connection:
            keys = list(connection.scan_iter(match=f"{queue}*", count=1000))
            if keys:
                connection.delete(*keys)


def test_celery_broker_stopped_mid_test_falls_back_and_hand_off_resumes(
    private_redis: PrivateRedis, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    queue = unique_name()
    use_runtime(backend=f"celery+{private_redis.url}", backend_queue=queue, handoff_timeout=4.0)
    outage = ride_out_broker_outage(private_redis, reporter, tag())
    with redis.Redis.from_url(private_redis.url) as restarted:
        assert restarted.llen(queue) == 1  # the message sent after the restart
    counts = jumpqueue.stats().backends["celery"]
    assert counts["handed_off"] == 2
    assert counts["handoff_failures"] >= 1
    assert counts["handoff_fallbacks"] == len(outage.local) == outage.sent - 1


def test_celery_ping_answers_while_rabbitmq_does_and_fails_fast_when_nothing_listens(
    rabbitmq: Callable[[], str],
) -> None:
    config = jumpqueue.Config(handoff_timeout=1.0)
    executor = CeleryBackend(RABBITMQ_URL).open(config, host=None)  # type: ignore[arg-type]
    executor.ping()
    executor.close()
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    dead = CeleryBackend(nowhere).open(config, host=None)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(kombu.exceptions.OperationalError, match="refused"):
        dead.ping()
    assert time.monotonic() - started < 3 * config.handoff_timeout
    dead.close()


@pytest.mark.parametrize(
    ("project", "greeting"),
    [("django", "read from the Django settings"), ("flask", "read from the Flask app's config")],
)
def test_celery_worker_started_as_documented_runs_a_project_task(  # noqa: PLR0917 -- fixtures
    rabbitmq: Callable[[], str],
    reporter: Reporter,
    use_runtime: RuntimeFactory,
    monkeypatch: pytest.MonkeyPatch,
    project: str,
    greeting: str,
) -> None:
    from .startup import flask_app
    from .startup import tasks as django_tasks

    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)  # as on a fresh worker machine
    queue = rabbitmq()
    use_runtime(backend=f"celery+{RABBITMQ_URL}", backend_queue=queue)
    worker = start_worker(
        RABBITMQ_URL, queue, reporter, app=f"tests.backends.startup.{project}_celery"
    )
    try:
        greet = django_tasks.greet if project == "django" else flask_app.greet
        name = tag()
        handle = greet.defer(name)
        assert handle.wait(10)
        assert handle.status is Status.HANDED_OFF
        [event] = reporter.wait(name)
    finally:
        worker.kill()  # its work is done: no need to wait for a warm shutdown
    assert event["greeting"] == greeting
