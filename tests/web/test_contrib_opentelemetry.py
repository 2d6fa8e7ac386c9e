"""Tracing with jumpqueue.contrib.opentelemetry: the SDK's in-memory exporter, on a real server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import jumpqueue
from jumpqueue import Deferred
from jumpqueue.backends import _message
from jumpqueue.backends import celery as celery_backend
from jumpqueue.contrib.opentelemetry import JumpQueueInstrumentor
from jumpqueue.contrib.starlette import JumpQueueMiddleware
from jumpqueue.testing import capture

from ..backends.conftest import served
from ..conftest import RuntimeFactory


class Traced:
    """A tracer provider that keeps every finished span, with jumpqueue instrumented on it."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> dict[str, ReadableSpan]:
        """The first finished span of each name."""
        return {span.name: span for span in self.exporter.get_finished_spans()[::-1]}

    def ancestors(self, span: ReadableSpan) -> list[ReadableSpan]:
        by_id = {s.context.span_id: s for s in self.exporter.get_finished_spans()}
        found = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            found.append(span)
        return found


@pytest.fixture
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    traced = Traced()
    options = getattr(request, "param", {})
    instrumentor = JumpQueueInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider, **options)
    yield traced
    instrumentor.uninstrument()
    traced.provider.shutdown()


def test_opentelemetry_real_server_process_spans_never_hang_under_the_ended_server_span(
    traced: Traced,
) -> None:
    tracer = traced.tracer
    background_done = threading.Event()
    handles: list[Deferred[Any]] = []

    def work(tag: str) -> None:
        with tracer.start_as_current_span(f"work {tag}"):
            pass
        if tag == "bg":
            background_done.set()

    async def async_work(tag: str) -> None:
        await asyncio.sleep(0)
        work(tag)

    app = FastAPI()
    app.add_middleware(JumpQueueMiddleware)

    @app.get("/bg")
    def background(background_tasks: BackgroundTasks) -> dict[str, bool]:
        background_tasks.add_task(work, "bg")
        return {"ok": True}

    @app.get("/jq")
    async def deferred() -> dict[str, bool]:
        handles.append(jumpqueue.defer(work, "jq-thread"))
        handles.append(jumpqueue.defer(async_work, "jq-async"))
        return {"ok": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=traced.provider)
    try:
        with served(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/bg").status_code == 200
            assert client.get("/jq").status_code == 200
            assert background_done.wait(10)
            for handle in handles:
                assert handle.wait(10)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    spans = traced.spans()

    # The known bug of plain BackgroundTasks: the task's span hangs under the request's
    # server span, which had ended before the task started.
    bg = spans["work bg"]
    [bg_server] = [s for s in traced.ancestors(bg) if s.kind is SpanKind.SERVER]
    assert bg_server.name == "GET /bg"
    assert bg_server.end_time is not None
    assert bg.start_time is not None
    assert bg_server.end_time <= bg.start_time

    server = spans["GET /jq"]
    for tag, destination, handle in (
        ("jq-thread", "thread", handles[0]),
        ("jq-async", "async", handles[1]),
    ):
        producer = spans[f"send {destination}"]
        process = next(
            s
            for s in traced.exporter.get_finished_spans()
            if s.name == f"process {destination}"
            and s.attributes is not None
            and s.attributes["messaging.message.id"] == handle.id
        )
        inner = spans[f"work {tag}"]
        # The producer span is the request's; the process span starts a trace of its
        # own, linked to it; what the call opens is the process span's child.
        assert producer.kind is SpanKind.PRODUCER
        assert server in traced.ancestors(producer)
        assert process.kind is SpanKind.CONSUMER
        assert process.parent is None
        assert [link.context.span_id for link in process.links] == [producer.context.span_id]
        assert inner.parent is not None
        assert inner.parent.span_id == process.context.span_id
        assert not [s for s in traced.ancestors(inner) if s.kind is SpanKind.SERVER]
        assert dict(process.attributes or {}) == {
            "messaging.system": "jumpqueue",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": destination,
            "messaging.message.id": handle.id,
            "messaging.jumpqueue.task": handle.name,
            "messaging.jumpqueue.attempt": 1,
            "messaging.jumpqueue.outcome": "succeeded",
        }
        assert (producer.attributes or {})["messaging.operation.type"] == "send"


def broken(tag: str) -> None:
    raise ValueError(tag)


@pytest.mark.parametrize("traced", [{"link_only": False}], indirect=True)
def test_opentelemetry_child_option_errors_shed_event_and_the_celery_worker_side(
    traced: Traced, make_runtime: RuntimeFactory
) -> None:
    runtime = make_runtime(max_pending=1)
    with traced.tracer.start_as_current_span("request"):
        failed = runtime.defer(broken, "boom")
        assert failed.wait(5)
        release = threading.Event()
        blocker = runtime.defer(release.wait, 5)
        runtime.defer(jumpqueue.task(int).options(on_overload="drop"), "1")
        release.set()
        assert blocker.wait(5)
    spans = traced.spans()
    producer, process = spans["send thread"], spans["process thread"]
    # As the producer's child, with the link kept: one trace from request to work.
    assert process.parent is not None
    assert process.parent.span_id == producer.context.span_id
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["error.type"] == "ValueError"
    assert (process.attributes or {})["messaging.jumpqueue.outcome"] == "failed"
    [shed] = spans["request"].events
    assert shed.name == "jumpqueue.shed"
    assert (shed.attributes or {})["messaging.jumpqueue.shed_policy"] == "drop"

    # A Celery worker runs the message with the producer's context it carries.
    with capture(runtime) as calls:
        runtime.defer(broken, "remote")
        message = _message.build(calls[0].deferred, serializer="json")
    sent = next(s for s in traced.exporter.get_finished_spans()[::-1] if s.name == "send thread")
    task = SimpleNamespace(
        request=SimpleNamespace(id=message["id"], retries=1, delivery_info={"routing_key": "q"})
    )
    with pytest.raises(ValueError, match="remote"):
        celery_backend._run(task, message, (__name__,), accept_pickle=False)
    worker = traced.spans()["process celery:q"]
    assert worker.parent is not None
    assert worker.parent.span_id == sent.context.span_id
    assert worker.context.trace_id == sent.context.trace_id
    assert (worker.attributes or {})["messaging.jumpqueue.attempt"] == 2
