"""A WSGI application whose requests defer a process-executor call that reports where it ran.

`test_process_gunicorn.py` serves it with a real gunicorn. The call writes
`<JQTEST_OUT>/<tag>.json` (its pid, start time and ancestors, and the pid of the
process that deferred it), then says `ran <tag>` to the test's coordinator (see
`tests/web/apps/common.py`); with `hold=1` it then waits for the test's `go`.

With `JQTEST_WARM_UP` set, the module uses the process pool as it is imported:
under `--preload` that is in gunicorn's master, before it forks its workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.wsgi import HttpCounters, JumpQueueMiddleware

from ..web.apps import common
from .process_tasks import write_file

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

COUNTERS = HttpCounters()


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says of a process."""

    state: str
    ppid: int
    pgrp: int
    #: Clock ticks after boot: with the pid, it names one process even once the pid is reused.
    start: int


def proc_stat(pid: int) -> ProcStat | None:
    """The process's state, parent, group and start time; None once it is gone (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (FileNotFoundError), or going while we read (ProcessLookupError)
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def ancestors(pid: int) -> list[int]:
    """The parent of pid, its parent, and so on up to (not including) init."""
    chain: list[int] = []
    stat = proc_stat(pid)
    while stat is not None and stat.ppid > 1:
        chain.append(stat.ppid)
        stat = proc_stat(stat.ppid)
    return chain


@jumpqueue.task(executor="process")
def where(tag: str, deferred_by: int, hold: bool) -> None:
    """Say which process runs this call, and who its ancestors are; hold it if asked."""
    pid = os.getpid()
    stat = proc_stat(pid)
    report = {
        "tag": tag,
        "pid": pid,
        "start": stat.start if stat is not None else -1,
        "ppid": os.getppid(),
        "ancestors": ancestors(pid),
        "deferred_by": deferred_by,
    }
    write_file(Path(os.environ["JQTEST_OUT"], f"{tag}.json"), json.dumps(report))
    common.report(tag)
    if hold:
        common.block(f"{tag}-task")


def routes(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """`/defer?tag=T[&gate=1][&hold=1]` defers `where`; `/stats` is what the harness polls."""
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/defer":
        tag = query["tag"]
        if query.get("gate") == "1":
            # Holds this (sync) worker until the test lets go: requests held at once are
            # in as many different workers.
            common.block(f"{tag}-handler")
        jumpqueue.defer(where, tag, os.getpid(), query.get("hold") == "1")
        body = json.dumps({"worker": os.getpid(), "master": os.getppid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [common.stats_body(COUNTERS)]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


app = JumpQueueMiddleware(routes, counters=COUNTERS)

if os.environ.get("JQTEST_WARM_UP") and multiprocessing.parent_process() is None:
    # A pool in use, with its fork server, in the gunicorn process that imports the
    # application (not in the children, which import this module to find `where`).
    jumpqueue.defer(where, f"warm-up-{os.getpid()}", os.getpid(), False).result(timeout=30)
