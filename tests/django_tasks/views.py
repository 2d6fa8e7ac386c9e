"""Views and tasks of the project test_real_server.py serves: enqueue, read a result."""

from __future__ import annotations

import json
import os
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.tasks import default_task_backend, task
from django.tasks.exceptions import TaskResultDoesNotExist
from django.urls import path

from jumpqueue.contrib.django import JumpQueueMiddleware
from tests.web.apps import common


@task
def report(tag: str) -> dict[str, Any]:
    """Tell the test it ran; return where."""
    common.report(tag)
    return {"tag": tag, "pid": os.getpid()}


def answer(code: int = 200, **body: Any) -> HttpResponse:
    """JSON, with the pid of the worker that answers."""
    return HttpResponse(
        json.dumps({**body, "pid": os.getpid()}), status=code, content_type="application/json"
    )


def enqueue(request: HttpRequest) -> HttpResponse:
    """Enqueue `report`; fail the request (500) if asked to."""
    result = report.enqueue(request.GET["tag"])
    return answer(500 if "fail" in request.GET else 200, id=result.id)


async def aenqueue(request: HttpRequest) -> HttpResponse:
    """Enqueue `report` from a coroutine view (under ASGI)."""
    result = await report.aenqueue(request.GET["tag"])
    return answer(id=result.id)


def result(request: HttpRequest) -> HttpResponse:
    """A result by id, as this worker reads it."""
    try:
        found = default_task_backend.get_result(request.GET["id"])
    except TaskResultDoesNotExist:
        return answer(404)
    return answer(
        status=str(found.status),
        return_value=found.return_value if found.status == "SUCCESSFUL" else None,
        worker_ids=found.worker_ids,
        errors=[error.exception_class_path for error in found.errors],
        times=[str(t) for t in (found.enqueued_at, found.started_at, found.finished_at)],
    )


def stats(request: HttpRequest) -> HttpResponse:
    """What the harness polls until the server serves."""
    return HttpResponse(common.stats_body(JumpQueueMiddleware.counters))


urlpatterns = [
    path("enqueue", enqueue),
    path("aenqueue", aenqueue),
    path("result", result),
    path("stats", stats),
]
