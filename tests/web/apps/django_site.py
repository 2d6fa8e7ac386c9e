"""A Django project in one module: settings, views and URLs, with jumpqueue's MIDDLEWARE entry.

`JQTEST_DJANGO_DB` names an SQLite file to use as the database (the in-process
tests of the connection hygiene need one); without it there is none.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.urls import path

import jumpqueue
from jumpqueue.contrib.django import JumpQueueMiddleware

from . import common

SECRET_KEY = "jumpqueue tests only"  # noqa: S105 -- a test project
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["jumpqueue.contrib.django.JumpQueueMiddleware"]
DATABASES = (
    {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["JQTEST_DJANGO_DB"]}}
    if "JQTEST_DJANGO_DB" in os.environ
    else {}
)
JUMPQUEUE = {"OVERLOAD_RESPONSE": True}


def ordering(request: HttpRequest) -> HttpResponse:
    """Defer a call that blocks until the test has read the response."""
    jumpqueue.defer(common.block, request.GET["tag"])
    return HttpResponse("ok", content_type="text/plain")


def fail(request: HttpRequest) -> HttpResponse:
    """A request that fails."""
    common.defer_failing(request.GET["tag"])
    if request.GET["how"] == "raise":
        raise RuntimeError("the handler failed")
    return HttpResponse("failed", status=500)


def finish(request: HttpRequest) -> HttpResponse:
    """Answer with finish_request, then go on working."""
    tag = request.GET["tag"]
    jumpqueue.defer(common.report, f"{tag}-before")
    jumpqueue.finish_request(HttpResponse("early", content_type="text/plain"))
    common.block(f"{tag}-handler")
    jumpqueue.defer(common.report, f"{tag}-after")
    return HttpResponse("late")


def work(request: HttpRequest) -> HttpResponse:
    """Defer a call that holds a worker for `ms` milliseconds."""
    jumpqueue.defer(common.pause, int(request.GET["ms"]))
    return HttpResponse("ok")


def large(request: HttpRequest) -> HttpResponse:
    """A large body: its call starts once the client has the last byte."""
    jumpqueue.defer(common.report_start, request.GET["tag"])
    body = common.large_body(int(request.GET["size"]))
    response = HttpResponse(body, content_type="application/octet-stream")
    response["Content-Length"] = str(len(body))
    return response


def stats(request: HttpRequest) -> HttpResponse:
    """The runtime's stats and the glue's counters."""
    return HttpResponse(
        common.stats_body(JumpQueueMiddleware.counters), content_type="application/json"
    )


urlpatterns = [
    path("ordering", ordering),
    path("fail", fail),
    path("finish", finish),
    path("work", work),
    path("large", large),
    path("stats", stats),
]
