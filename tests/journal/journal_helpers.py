"""Tasks the journal tests defer, what they record, and ways to look into a journal file."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jumpqueue
from jumpqueue._journal import engine
from jumpqueue._journal.records import make_record
from jumpqueue._journal.store import Record


class Recorder:
    """What the tasks ran, with a way to wait for it, and a gate to hold them."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.values: list[Any] = []
        self.gate = threading.Event()

    def reset(self) -> None:
        with self._condition:
            self.values = []
        self.gate = threading.Event()
        self.gate.set()

    def add(self, value: object) -> None:
        with self._condition:
            self.values.append(value)
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: len(self.values) >= count, timeout)


RECORDER = Recorder()


@jumpqueue.task
def remember(value: Any) -> Any:
    RECORDER.add(value)
    return value


@jumpqueue.task
def remember_after_gate(value: Any) -> Any:
    RECORDER.gate.wait(20)
    RECORDER.add(value)
    return value


@jumpqueue.task(retries=2, retry_backoff=0)
def always_fails(value: Any) -> None:
    RECORDER.add(value)
    raise ValueError(f"no good: {value}")


@jumpqueue.task(serializer="pickle")
def remember_pickled(value: Any) -> Any:
    RECORDER.add(value)
    return value


def plain_remember(value: Any) -> Any:
    RECORDER.add(value)
    return value


def never_known(value: Any) -> Any:  # deferred only in tests that prove it is not run
    RECORDER.add(("never_known", value))
    return value


def known_record(call_id: str, value: object) -> Record:
    """A record of `remember(value)`, as the journal would write it."""
    deferred: jumpqueue.Deferred[object] = jumpqueue.Deferred(
        remember.name, remember.fn, (value,), {}, remember.task_options, "thread", None
    )
    record = make_record(deferred, "json")
    record.id = call_id
    return record


def connect(path: Path | str) -> engine.Connection:
    """A connection through the SQLite library the journal uses (two in one process
    would drop each other's locks on the file)."""
    return engine.connect(str(path), timeout=5)


def states(path: Path | str) -> dict[str, int]:
    with contextlib.closing(connect(path)) as connection:
        return dict(connection.execute("SELECT state, count(*) FROM calls GROUP BY state"))


def records(path: Path | str) -> dict[str, engine.Row]:
    with contextlib.closing(connect(path)) as connection:
        return {row["id"]: row for row in connection.execute("SELECT * FROM calls")}


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """For what only a clock makes happen (a lease, a retention): poll until true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
