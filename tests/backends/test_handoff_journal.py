"""The "journal" hand-off fallback: what the broker cannot take waits in the journal, then goes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq.job import Job

import jumpqueue
from jumpqueue import Config, Deferred, Status, TaskNotRunError
from jumpqueue._journal import journal as journal_module
from jumpqueue._journal.records import make_record
from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Store
from jumpqueue.backends import _handoff
from jumpqueue.backends._handoff import HandOffExecutor
from jumpqueue.cli import main

from ..conftest import RuntimeFactory
from ..journal.journal_helpers import eventually, records
from . import backend_tasks
from .conftest import PrivateRedis, asgi_app, served, unique_name

ran: list[int] = []


@jumpqueue.task(name="tests.backends.handoff_journal.notify")
def notify(user: int) -> None:
    ran.append(user)


class FlakyTransport:
    """Fails while `down` is set; records what it sent, with a way to wait for it."""

    def __init__(self) -> None:
        self.down = True
        self.tries: list[float] = []
        self.sent: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def send(self, message: dict[str, Any], *, timeout: float | None) -> bool:
        with self._changed:
            self.tries.append(time.time())
            if self.down:
                raise ConnectionError("broker gone")
            self.sent.append(message)
            self._changed.notify_all()
        return True

    def wait_sent(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.sent) >= count, timeout)

    def ping(self) -> None:
        if self.down:
            raise ConnectionError("broker gone")

    def close(self) -> None:
        pass


class FlakyBackend:
    name = "fake"

    def __init__(self) -> None:
        self.transport = FlakyTransport()

    def open(self, config: Config, host: Any) -> HandOffExecutor:
        return HandOffExecutor(self.name, self.transport, config, host)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Short back-offs, and a broker tried again at once: each take-up really sends.
    monkeypatch.setattr(journal_module, "HANDOFF_BACKOFF_FIRST", 0.4)
    monkeypatch.setattr(_handoff, "RECONNECT_FIRST", 0.01)
    monkeypatch.setattr(_handoff, "RECONNECT_MAX", 0.02)
    ran.clear()
    yield
    ran.clear()


def test_handoff_journal_backoff_doubles_with_jitter_up_to_its_bound() -> None:
    first, most = journal_module.HANDOFF_BACKOFF_FIRST, journal_module.HANDOFF_BACKOFF_MAX
    for fallbacks in range(1, 40):
        bound = min(first * 2 ** (fallbacks - 1), most)
        assert bound / 2 <= journal_module.handoff_backoff(fallbacks) <= bound


def test_handoff_journal_fallback_waits_out_its_backoff_then_forwards_the_same_call(
    make_runtime: RuntimeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.db"
    backend = FlakyBackend()
    runtime = make_runtime(backend=backend, journal=str(path), on_handoff_error="journal")
    journal = runtime._journaling.journal
    assert journal is not None
    taken_up: list[tuple[float, Deferred[Any]]] = []
    took_up = threading.Semaphore(0)
    adopt = runtime._journaling.adopt

    def recording_adopt(deferred: Deferred[Any]) -> bool:
        taken_up.append((time.time(), deferred))
        took_up.release()
        return adopt(deferred)

    runtime._journaling.adopt = recording_adopt  # type: ignore[method-assign]

    handle = runtime.defer(notify, 7)
    assert handle.wait(5)
    assert handle.status is Status.JOURNALED
    with pytest.raises(TaskNotRunError, match="journaled"):
        handle.result()
    assert "journaled it, to try again in" in caplog.text
    assert journal.flush()
    first = records(path)[handle.id]
    assert (first["state"], first["owner"], first["handoff_fallbacks"]) == ("pending", None, 1)
    assert first["not_before"] >= backend.transport.tries[0] + 0.2  # half the first back-off

    # Taken up once its time has come (not before), tried, and back with a longer back-off.
    assert took_up.acquire(timeout=5)
    again_at, again = taken_up[0]
    assert again_at >= first["not_before"]
    assert again.id == handle.id
    assert again.wait(5)
    assert again.status is Status.JOURNALED
    assert journal.flush()
    second = records(path)[handle.id]
    assert (second["state"], second["handoff_fallbacks"]) == ("pending", 2)
    assert second["not_before"] >= again_at + 0.4  # half the second back-off

    backend.transport.down = False
    assert backend.transport.wait_sent(1, timeout=5)
    assert len(taken_up) == 2
    last_at, last = taken_up[-1]
    assert last_at >= second["not_before"]
    assert last.wait(5)
    assert last.status is Status.HANDED_OFF
    assert backend.transport.sent[0]["id"] == handle.id
    assert journal.flush()
    done = records(path)[handle.id]
    assert (done["state"], done["attempts"], done["handoff_fallbacks"]) == ("done", 0, 2)
    assert ran == []
    assert len(backend.transport.tries) == 3  # one per take-up: no loop while it was down
    stats = runtime.stats()
    # Journaled twice and taken up twice, one call: it ends handed off, counted once.
    assert (stats.submitted, stats.journaled, stats.recovered, stats.handed_off) == (1, 0, 2, 1)
    assert stats.backends["fake"] == {
        "handed_off": 1,
        "handoff_failures": 2,
        "handoff_fallbacks": 2,
    }
    assert stats.submitted == stats.finished
    assert stats.in_flight == 0


def test_handoff_journal_fallback_runs_locally_while_the_journal_cannot_be_written(
    make_runtime: RuntimeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    backend = FlakyBackend()
    runtime = make_runtime(
        backend=backend, journal=str(blocker / "journal.db"), on_handoff_error="journal"
    )
    handle = runtime.defer(notify, 8)
    assert handle.wait(5)
    assert handle.status is Status.SUCCEEDED
    assert ran == [8]
    assert "the journal cannot be written" in caplog.text
    assert runtime.stats().backends["fake"]["handoff_fallbacks"] == 1


def test_handoff_journal_fallback_keeps_calls_while_redis_is_down_and_forwards_them(
    private_redis: PrivateRedis, make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    journal_file = tmp_path / "journal.db"
    runtime = make_runtime(
        backend=f"rq+{private_redis.url}",
        handoff_timeout=1.0,
        journal=str(journal_file),
        on_handoff_error="journal",
    )
    handles: list[Deferred[Any]] = []
    name = unique_name()

    def handler(path: str, query: dict[str, str]) -> int:
        handles.append(runtime.defer(backend_tasks.record, name, {"n": int(query["n"])}))
        return 200

    def request(client: httpx.Client, n: int) -> Deferred[Any]:
        started = time.monotonic()
        assert client.get(f"/order?n={n}").status_code == 200
        assert time.monotonic() - started < 1.0  # the request never waits on the broker
        handle = handles[-1]
        assert handle.wait(10)
        return handle

    with served(asgi_app(handler)) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert request(client, 0).status is Status.HANDED_OFF
        private_redis.down()
        journaled = [request(client, n) for n in range(1, 4)]
        assert all(handle.status is Status.JOURNALED for handle in journaled)
        private_redis.up()
        assert eventually(lambda: runtime.stats().handed_off == 4, timeout=10)
    journal = runtime._journaling.journal
    assert journal is not None
    assert journal.flush()
    stored = records(journal_file)
    assert all(stored[handle.id]["state"] == "done" for handle in handles)
    with redis.Redis.from_url(private_redis.url) as restarted:
        assert all(Job.exists(handle.id, connection=restarted) for handle in journaled)
    stats = runtime.stats()
    assert stats.backends["rq"]["handoff_fallbacks"] >= 3
    assert stats.recovered == stats.backends["rq"]["handoff_fallbacks"]
    assert (stats.submitted, stats.handed_off, stats.journaled) == (4, 4, 0)
    assert stats.succeeded == stats.failed == 0


def test_handoff_journal_cli_shows_calls_backing_off_and_retry_makes_them_due(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    deferred: Deferred[None] = Deferred(
        notify.name, notify.fn, (9,), {}, notify.task_options, "thread", None
    )
    record = make_record(deferred, "json")
    record.not_before, record.handoff_fallbacks = time.time() + 600, 3
    store = Store.open(str(path))

    def runnable(*, waiting: bool) -> int:
        return store.count_runnable(waiting=waiting)

    try:
        with store.transaction():
            store.insert([record], PENDING, None, None)
        assert (runnable(waiting=False), runnable(waiting=True)) == (0, 1)
        assert main(["status", "--journal", str(path)]) == 0
        assert re.search(
            r"pending after a failed hand-off: 1, the first due in \d+s", capsys.readouterr().out
        )
        assert main(["retry", "--journal", str(path), record.id]) == 0
        row = records(path)[record.id]
        assert (row["not_before"], row["handoff_fallbacks"]) == (None, 0)
        assert runnable(waiting=False) == 1
    finally:
        store.close()
