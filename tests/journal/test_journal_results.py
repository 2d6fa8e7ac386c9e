"""Delays, priorities and kept outcomes in the journal: across restarts, processes and versions."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jumpqueue
from jumpqueue import Status
from jumpqueue._journal.file import SCHEMA_VERSION

from .conftest import JournaledFactory
from .journal_helpers import RECORDER, always_fails, connect, eventually, records, remember


@jumpqueue.task(keep_result=True)
def kept(value: Any) -> Any:
    RECORDER.add(value)
    return {"value": value}


#: Columns schema version 2 added to version 1's table.
V2_COLUMNS = (
    "priority",
    "run_after",
    "keep_result",
    "status",
    "result",
    "errors",
    "started",
    "attempted",
    "finished",
    "workers",
)

READ_ELSEWHERE = """
import json, sys
from jumpqueue import Config, Runtime
runtime = Runtime(Config(journal=sys.argv[1]))
found = {}
for call_id in sys.argv[2:]:
    outcome = runtime.result(call_id)
    found[call_id] = None if outcome is None else {
        "status": outcome.status.value, "value": outcome.return_value,
        "errors": [f.exception_class_path for f in outcome.errors], "args": outcome.args,
        "attempts": outcome.attempts, "workers": outcome.worker_ids,
        "finished": outcome.finished_at.isoformat() if outcome.finished_at else None,
    }
runtime.shutdown()
print(json.dumps(found))
"""


def test_delayed_calls_survive_a_restart_by_priority_and_their_outcome_is_read_elsewhere(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    first = make_journaled()
    failing = first.defer(
        always_fails.options(keep_result=True, retries=1, retry_backoff=0), "boom"
    )
    assert failing.wait(10)
    before = len(RECORDER.values)
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    handles = [
        first.defer(kept.options(run_after=at, priority=priority), value)
        for value, priority in enumerate([0, 5, 1])
    ]
    assert {handle.status for handle in handles} == {Status.SCHEDULED}
    first.shutdown(timeout=5)  # not waited for: they stay in the journal
    assert {handle.status for handle in handles} == {Status.JOURNALED}
    left = first.result(handles[0].id)  # read from the journal, which holds it now
    assert left is not None
    assert left.status is Status.SCHEDULED
    stored = records(journal_path)
    assert [stored[h.id]["priority"] for h in handles] == [0, 5, 1]
    assert all(stored[h.id]["state"] == "pending" for h in handles)
    assert {stored[h.id]["not_before"] for h in handles} == {at.timestamp()}
    # Their time comes (a clock cannot be waited for): all at once, so priority decides.
    due(journal_path, time.time())

    # A new runtime on the same file takes them up when due, one at a time, by priority.
    second = make_journaled(max_pending=1)
    assert second.open_journal()
    assert RECORDER.wait_for(before + 3, timeout=15)
    assert RECORDER.values[-3:] == [1, 2, 0]
    journal = second._journaling.journal
    assert journal is not None
    assert eventually(lambda: journal.flush() and states_done(journal_path, handles))
    outcome = second.result(handles[1].id)
    assert outcome is not None
    assert (outcome.status, outcome.return_value, outcome.args) == (
        Status.SUCCEEDED,
        {"value": 1},
        (1,),
    )
    assert outcome.worker_ids == (outcome.worker_ids[0],)
    assert outcome.worker_ids[0].endswith(f":{os.getpid()}")
    assert outcome.enqueued_at is not None
    assert outcome.started_at is not None
    assert outcome.enqueued_at < outcome.started_at <= outcome.finished_at  # type: ignore[operator]

    # Another process (another server worker) reads the same outcomes from the file.
    ids = [handles[1].id, failing.id, "no-such-call"]
    run = subprocess.run(
        [sys.executable, "-c", READ_ELSEWHERE, str(journal_path), *ids],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(run.stdout)
    assert found[handles[1].id]["status"] == "succeeded"
    assert found[handles[1].id]["value"] == {"value": 1}
    assert found[handles[1].id]["args"] == [1]
    assert found[failing.id]["status"] == "failed"
    assert found[failing.id]["attempts"] == 2
    assert found[failing.id]["errors"] == ["builtins.ValueError"] * 2
    assert found[failing.id]["finished"] is not None
    assert found["no-such-call"] is None


def due(path: Path, when: float | None) -> None:
    with contextlib.closing(connect(path)) as connection:
        connection.execute("UPDATE calls SET not_before = ?", (when,))


def states_done(path: Path, handles: list[jumpqueue.Deferred[Any]]) -> bool:
    stored = records(path)
    return all(stored[h.id]["state"] == "done" for h in handles)


def test_a_version_1_journal_is_migrated_and_its_calls_run(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    first = make_journaled()
    handle = first.defer(remember.options(delay=600), "old")
    first.shutdown(timeout=5)
    assert handle.status is Status.JOURNALED
    due(journal_path, None)
    # Back to the table version 1 made (the same statements, less what version 2 added).
    with contextlib.closing(connect(journal_path)) as connection:
        for column in V2_COLUMNS:
            connection.execute(f"ALTER TABLE calls DROP COLUMN {column}")
        connection.execute("PRAGMA user_version = 1")
    with contextlib.closing(connect(journal_path)) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(calls)")]
    assert "priority" not in columns

    second = make_journaled()
    assert second.open_journal()
    assert RECORDER.wait_for(1, timeout=15)
    assert RECORDER.values == ["old"]
    with contextlib.closing(connect(journal_path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    journal = second._journaling.journal
    assert journal is not None
    assert eventually(lambda: journal.flush() and states_done(journal_path, [handle]))
    outcome = second.result(handle.id)
    assert outcome is not None
    assert (outcome.status, outcome.attempts, outcome.return_value) == (Status.SUCCEEDED, 1, None)
