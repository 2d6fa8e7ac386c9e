"""The backend's system checks: the middleware, and a journal where results or workers need one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from django.conf import settings
from django.core.checks import CheckMessage, Warning  # noqa: A004 -- Django's name

import jumpqueue

MIDDLEWARE = "jumpqueue.contrib.django.JumpQueueMiddleware"


def check_backend(alias: str, *, keep_results: bool) -> Iterator[CheckMessage]:
    """W001: no middleware; W002: results kept without a journal; W003: workers without one."""
    if MIDDLEWARE not in getattr(settings, "MIDDLEWARE", ()):
        yield Warning(
            f"{MIDDLEWARE} is not in MIDDLEWARE: tasks enqueued during a request start "
            "at once, before its response is sent, and run even if the request fails",
            hint=f"Add {MIDDLEWARE!r} first in MIDDLEWARE (or wrap the application in "
            "jumpqueue's WSGI or ASGI middleware and silence this check).",
            obj=f"TASKS[{alias!r}]",
            id="jumpqueue.W001",
        )
    if journal_configured():
        return
    if keep_results:
        yield Warning(
            "task results are kept, but there is no journal: get_result() finds only "
            "the results of the process that ran the task, and none survive a restart",
            hint="Set JUMPQUEUE = {'JOURNAL': '/var/lib/<app>/jumpqueue.db'} in the "
            "settings, or OPTIONS = {'KEEP_RESULTS': False} if no one reads results.",
            obj=f"TASKS[{alias!r}]",
            id="jumpqueue.W002",
        )
    workers = server_workers(os.environ, sys.argv)
    if workers > 1:
        yield Warning(
            f"the server runs {workers} worker processes and there is no journal: "
            "each keeps its tasks and results to itself, and a worker that dies "
            "loses the tasks it had not run",
            hint="Set JUMPQUEUE = {'JOURNAL': ...}: one file on local disk, shared by "
            "every worker.",
            obj=f"TASKS[{alias!r}]",
            id="jumpqueue.W003",
        )


def journal_configured() -> bool:
    """Whether the runtime writes a journal, or the settings or environment give one."""
    if jumpqueue.get_runtime().config.journal is not None:
        return True
    raw = getattr(settings, "JUMPQUEUE", None) or {}
    if any(str(name).lower() == "journal" and value for name, value in raw.items()):
        return True
    return bool(os.environ.get("JUMPQUEUE_JOURNAL"))


def server_workers(environ: dict[str, str] | os._Environ[str], argv: Sequence[str]) -> int:
    """How many worker processes the server was told to run: `--workers`/`-w`, `WEB_CONCURRENCY`."""
    count = environ.get("WEB_CONCURRENCY", "")
    for index, word in enumerate(argv):
        if word in {"--workers", "-w"} and index + 1 < len(argv):
            count = argv[index + 1]
        elif word.startswith("--workers="):
            count = word.partition("=")[2]
    return int(count) if count.isdigit() else 1
