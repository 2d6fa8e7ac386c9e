"""A WSGI application whose requests defer journaled calls that record each of their runs.

The SIGKILL test serves it with gunicorn; every run of a call leaves a row in a
separate SQLite file, so the test can count runs per call and per server run.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.integration import current_scope
from jumpqueue.wsgi import JumpQueueMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

EFFECTS = os.environ.get("JQ_EFFECTS", "")
DELAY = float(os.environ.get("JQ_DELAY", "0"))
RUN = int(os.environ.get("JQ_RUN", "0"))
#: A time.time() until which each call waits for a call of another worker of its run.
SHARE_UNTIL = float(os.environ.get("JQ_SHARE_UNTIL", "0"))


def create_effects(path: str) -> None:
    """The side-effect file: one row per run of a call, one per call done."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE attempts (key TEXT, run INTEGER, pid INTEGER)")
        connection.execute("CREATE TABLE done (key TEXT PRIMARY KEY)")
    finally:
        connection.close()


@jumpqueue.task
def record(key: str) -> None:
    connection = sqlite3.connect(EFFECTS, timeout=30, isolation_level=None)
    try:
        connection.execute(
            "INSERT INTO attempts (key, run, pid) VALUES (?, ?, ?)", (key, RUN, os.getpid())
        )
        _wait_for_another_worker(connection)
        time.sleep(DELAY)  # the work the call stands for
        connection.execute("INSERT OR IGNORE INTO done (key) VALUES (?)", (key,))
    finally:
        connection.close()


def _wait_for_another_worker(connection: sqlite3.Connection) -> None:
    # Holds the calls a worker took until another worker has taken some too: if
    # one process took every record, this waits until SHARE_UNTIL, and the test
    # sees one process in the run.
    while time.time() < SHARE_UNTIL:
        workers = connection.execute(
            "SELECT count(DISTINCT pid) FROM attempts WHERE run = ?", (RUN,)
        ).fetchone()[0]
        if workers > 1:
            return
        time.sleep(0.02)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/defer":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        batch, count = query["batch"][0], int(query["n"][0])
        for index in range(count):
            jumpqueue.defer(record, f"{batch}-{index}")
        scope = current_scope()
        if scope is not None:
            scope.seal()  # the group commit, before the response (the middleware may, too)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


application = JumpQueueMiddleware(app)
# Made at import, in gunicorn's master (--preload): each worker starts it over after fork.
jumpqueue.get_runtime()
