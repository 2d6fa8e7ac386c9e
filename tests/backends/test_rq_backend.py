"""RQ against the real Redis (database 15), with a real `rq worker` started by the test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import rq
from rq.job import Job, JobStatus

import jumpqueue
from jumpqueue import Deferred, Status
from jumpqueue._deferred import _id_prefix
from jumpqueue.backends.rq import RQBackend, _RQTransport

from ..conftest import RuntimeFactory
from . import backend_tasks
from .backend_tasks import REPORT_ENV
from .conftest import (
    BIN,
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

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def connection() -> Iterator[redis.Redis]:
    """The shared Redis, database 15; skipped (failed under CI) if unreachable."""
    require(6379, "Redis")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="module")
def queue(connection: redis.Redis) -> Iterator[str]:
    """The module's own RQ queue; every key it (and its jobs) left is deleted after."""
    name = unique_name()
    yield name
    # Jobs are keyed by our call ids, which all start with this process's prefix.
    for pattern in (f"*{name}*", f"*{_id_prefix}*"):
        keys = list(connection.scan_iter(match=pattern, count=1000))
        if keys:
            connection.delete(*keys)
    for registry in ("rq:queues", "rq:workers"):
        for member in connection.smembers(registry):
            if name in (member.decode() if isinstance(member, bytes) else member):
                connection.srem(registry, member)


@pytest.fixture(scope="module")
def worker(queue: str, reporter: Reporter) -> Iterator[Process]:
    """A plain `rq worker` (with its scheduler, for retries after a delay) on the queue."""
    process = Process(
        [str(BIN / "rq"), "worker", "--url", REDIS_URL, "--with-scheduler", "--name", queue, queue],
        env={REPORT_ENV: reporter.address},
    )
    yield process
    process.stop()


def tag() -> str:
    return f"rq-{uuid.uuid4().hex[:8]}"


def wait_for_job(job_id: str, connection: redis.Redis, status: JobStatus) -> Job:
    """The job once RQ gives it that status (RQ offers no event to wait on)."""
    deadline = time.monotonic() + 15
    while True:
        job = Job.fetch(job_id, connection=connection)
        if job.get_status() == status or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_rq_request_hands_off_to_a_real_worker(
    queue: str, worker: Process, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    use_runtime(backend=f"rq+{REDIS_URL}", backend_queue=queue)
    name = tag()

    def handler(path: str, query: dict[str, str]) -> int:
        backend_tasks.record.defer(name, {"items": [1, "two", None], "ü": 1.5}, note="kw")
        jumpqueue.defer(backend_tasks.plain_record, f"{name}-plain", [3, 4])
        jumpqueue.defer(backend_tasks.async_record, f"{name}-async")
        return 200

    with served(asgi_app(handler)) as url:
        response = httpx.get(
            f"{url}/order", headers={"X-Request-ID": "req-rq", "traceparent": TRACE}, timeout=10
        )
    assert response.status_code == 200
    [event] = reporter.wait(name)
    assert event["payload"] == {"items": [1, "two", None], "ü": 1.5}
    assert event["note"] == "kw"
    assert (event["request_id"], event["traceparent"]) == ("req-rq", TRACE)
    assert event["pid"] != os.getpid()
    assert reporter.wait(f"{name}-plain")[0]["payload"] == [3, 4]
    assert reporter.wait(f"{name}-async")[0]["request_id"] == "req-rq"
    stats = jumpqueue.stats()
    assert stats.handed_off == 3
    assert stats.backends["rq"]["handed_off"] == 3
    assert stats.succeeded == 0


def test_rq_trace_context_crosses_to_the_worker_with_the_hand_off(
    queue: str, connection: redis.Redis, use_runtime: RuntimeFactory
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from jumpqueue.contrib.opentelemetry import JumpQueueInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = JumpQueueInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    traced_queue = f"{queue}-traced"
    try:
        use_runtime(backend=f"rq+{REDIS_URL}", backend_queue=traced_queue)
        with provider.get_tracer("tests").start_as_current_span("request"):
            handle = jumpqueue.defer(backend_tasks.current_span)
        assert handle.wait(10)
        assert handle.status is Status.HANDED_OFF
        # A real RQ worker, in this process so that its spans reach the same exporter.
        rq_queue = rq.Queue(traced_queue, connection=connection)
        assert rq.SimpleWorker([rq_queue], connection=connection).work(burst=True)
    finally:
        instrumentor.uninstrument()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    producer, process = spans[f"send rq:{traced_queue}"], spans[f"process rq:{traced_queue}"]
    assert producer.parent is not None
    assert producer.parent.span_id == spans["request"].context.span_id
    assert process.parent is None
    assert [link.context.span_id for link in process.links] == [producer.context.span_id]
    assert (process.attributes or {})["messaging.message.id"] == handle.id
    # The call ran inside the process span.
    job = Job.fetch(handle.id, connection=connection)
    assert job.return_value() == [process.context.trace_id, process.context.span_id]


def test_rq_task_options_map_onto_the_job(
    queue: str,
    connection: redis.Redis,
    worker: Process,
    reporter: Reporter,
    use_runtime: RuntimeFactory,
) -> None:
    use_runtime(backend=RQBackend(REDIS_URL, queue=queue))
    name = tag()
    handle = backend_tasks.with_options.defer(name)
    assert handle.wait(10)
    assert handle.status is Status.HANDED_OFF
    job = Job.fetch(handle.id, connection=connection)  # our id is RQ's job id
    assert job.origin == queue
    assert job.func_name == "jumpqueue.backends.rq.run"
    assert job.description == f"{backend_tasks.__name__}.with_options"
    assert job.timeout == 7
    assert job.retries_left == 2
    assert job.retry_intervals == [2, 3]  # 1.5 s doubling, in RQ's whole seconds
    reporter.wait(name)

    flaky = backend_tasks.flaky.defer(f"{name}-flaky", 2)
    events = reporter.wait(f"{name}-flaky", 3)
    assert len({event["pid"] for event in events}) == 3  # a fresh work horse per attempt
    assert wait_for_job(flaky.id, connection, JobStatus.FINISHED).get_status() == "finished"

    wrong = backend_tasks.wrong_kind.defer(f"{name}-wrong")
    reporter.wait(f"{name}-wrong")
    job = wait_for_job(wrong.id, connection, JobStatus.FAILED)
    assert job.get_status() == JobStatus.FAILED
    assert len(reporter.events(f"{name}-wrong")) == 1  # KeyError is not in retry_on


def test_rq_a_second_hand_off_of_the_same_id_is_detected(
    queue: str, connection: redis.Redis
) -> None:
    transport = _RQTransport(rq.Queue(f"{queue}-idle", connection=connection), owned=False)
    message: dict[str, Any] = {
        "id": f"{_id_prefix}-dup-{uuid.uuid4().hex[:8]}",
        "name": "tests.backends.record",
        "retries": 0,
    }
    assert transport.send(message, timeout=None) is True
    assert transport.send(message, timeout=None) is False
    assert rq.Queue(f"{queue}-idle", connection=connection).count == 1


def test_rq_a_failed_request_hands_off_nothing(
    queue: str, connection: redis.Redis, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    use_runtime(backend=f"rq+{REDIS_URL}", backend_queue=queue)
    handles: list[Deferred[Any]] = []
    name = tag()

    def handler(path: str, query: dict[str, str]) -> int:
        handles.append(backend_tasks.record.defer(name, {}))
        always = backend_tasks.record.options(always=True)
        handles.append(jumpqueue.defer(always, f"{name}-always", {}))
        return 500

    with served(asgi_app(handler)) as url:
        assert httpx.get(f"{url}/fail", timeout=10).status_code == 500
    skipped, always = handles
    assert always.wait(10)
    assert skipped.status is Status.SKIPPED
    assert always.status is Status.HANDED_OFF
    assert not Job.exists(skipped.id, connection=connection)
    assert Job.exists(always.id, connection=connection)
    stats = jumpqueue.stats()
    assert (stats.skipped, stats.handed_off) == (1, 1)


def test_rq_broker_stopped_mid_test_falls_back_and_hand_off_resumes(
    private_redis: PrivateRedis, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    use_runtime(backend=f"rq+{private_redis.url}", handoff_timeout=4.0)
    outage = ride_out_broker_outage(private_redis, reporter, tag())
    with redis.Redis.from_url(private_redis.url) as restarted:
        assert Job.exists(outage.handles[-1].id, connection=restarted)
    counts = jumpqueue.stats().backends["rq"]
    assert counts["handed_off"] == 2
    assert counts["handoff_failures"] >= 1
    assert counts["handoff_fallbacks"] == len(outage.local) == outage.sent - 1


def test_rq_ping_answers_while_redis_does_and_fails_fast_when_nothing_listens(
    connection: redis.Redis,
) -> None:
    config = jumpqueue.Config(handoff_timeout=1.0)
    executor = RQBackend(REDIS_URL).open(config, host=None)  # type: ignore[arg-type]
    executor.ping()
    executor.close()
    dead = RQBackend(f"redis://127.0.0.1:{free_port()}/0").open(config, host=None)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        dead.ping()
    assert time.monotonic() - started < 3 * config.handoff_timeout
    dead.close()


def start_rq_worker(queue: str, reporter: Reporter, *options: str) -> Process:
    """An `rq worker` of its own on a queue, started as a project would start it."""
    name = f"{queue}-{uuid.uuid4().hex[:4]}"  # a name that a killed worker left is refused
    return Process(
        [str(BIN / "rq"), "worker", "--url", REDIS_URL, *options, "--name", name, queue],
        env={REPORT_ENV: reporter.address},
    )


def test_rq_django_worker_started_as_documented_runs_tasks_that_use_settings(
    queue: str,
    connection: redis.Redis,
    reporter: Reporter,
    use_runtime: RuntimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .startup import tasks as django_tasks

    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)  # as on a fresh worker machine
    django_queue = f"{queue}-django"
    use_runtime(backend=f"rq+{REDIS_URL}", backend_queue=django_queue)
    name = tag()

    # A plain `rq worker` knows nothing of Django: the task fails there.
    unready = django_tasks.greet.defer(f"{name}-plain")
    assert unready.wait(10)
    plain = start_rq_worker(django_queue, reporter)
    try:
        job = wait_for_job(unready.id, connection, JobStatus.FAILED)
    finally:
        plain.kill()
    assert job.get_status() == JobStatus.FAILED, "".join(plain.lines[-30:])
    result = job.latest_result()
    assert result is not None
    assert "settings are not configured" in (result.exc_string or "")

    # Started as docs/migration.md shows, on the same queue, it runs the same task.
    worker = start_rq_worker(
        django_queue,
        reporter,
        "--worker-class",
        "tests.backends.startup.django_rq_worker.DjangoWorker",
    )
    try:
        handle = django_tasks.greet.defer(name)
        assert handle.wait(10)
        assert handle.status is Status.HANDED_OFF
        [event] = reporter.wait(name)
    finally:
        worker.kill()  # its work is done: no need to wait for a warm shutdown
    assert event["greeting"] == "read from the Django settings"
    assert event["model"] == "auth.User"
    assert event["pid"] != os.getpid()


def test_rq_flask_worker_started_as_documented_runs_tasks_in_an_app_context(
    queue: str, connection: redis.Redis, reporter: Reporter, use_runtime: RuntimeFactory
) -> None:
    from .startup import flask_app

    flask_queue = f"{queue}-flask"
    use_runtime(backend=f"rq+{REDIS_URL}", backend_queue=flask_queue)
    name = tag()
    worker = start_rq_worker(
        flask_queue,
        reporter,
        "--worker-class",
        "tests.backends.startup.flask_rq_worker.FlaskWorker",
    )
    try:
        handle = flask_app.greet.defer(name)
        assert handle.wait(10)
        assert handle.status is Status.HANDED_OFF
        [event] = reporter.wait(name)
    finally:
        worker.kill()  # its work is done: no need to wait for a warm shutdown
    assert event["greeting"] == "read from the Flask app's config"
