"""The WSGI app of the kill loops: each request defers journaled calls that record their runs.

Every run of a call leaves a row in a separate SQLite file (by key, server
generation and pid), so that a test can count, per call, how often and where
it ran; a call that finished leaves a `done` row.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.wsgi import JumpQueueMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

EFFECTS = os.environ.get("CHAOS_EFFECTS", "")
WORK = float(os.environ.get("CHAOS_WORK", "0"))
GENERATION = int(os.environ.get("CHAOS_GENERATION", "0"))


def create_effects(path: str) -> None:
    """The side-effect file: one row per run of a call, one per call done."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE runs (key TEXT, generation INTEGER, pid INTEGER)")
        connection.execute("CREATE TABLE done (key TEXT PRIMARY KEY)")
    finally:
        connection.close()


@jumpqueue.task
def record(key: str) -> None:
    connection = sqlite3.connect(EFFECTS, timeout=30, isolation_level=None)
    try:
        # A commit survives a kill of the process without an fsync (not a power loss).
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute(
            "INSERT INTO runs (key, generation, pid) VALUES (?, ?, ?)",
            (key, GENERATION, os.getpid()),
        )
        time.sleep(WORK)  # the work the call stands for
        connection.execute("INSERT OR IGNORE INTO done (key) VALUES (?)", (key,))
    finally:
        connection.close()


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/defer":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        batch, count = query["batch"][0], int(query["n"][0])
        for index in range(count):
            jumpqueue.defer(record, f"{batch}-{index}")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


application = JumpQueueMiddleware(app)
