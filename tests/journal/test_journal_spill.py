from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from jumpqueue import Config, ConfigurationError, Deferred, OverloadedError, Runtime, Status
from jumpqueue.integration import RequestScope

from .conftest import JournaledFactory
from .journal_helpers import RECORDER, records, remember, remember_after_gate, states


def test_journal_spill_keeps_the_backlog_bounded_and_runs_everything_oldest_first(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled(max_pending=5, max_workers=2, on_overload="spill")
    adopted: list[str] = []
    adopt = runtime._journaling.adopt

    def recording_adopt(deferred: Deferred[Any]) -> bool:
        adopted.append(deferred.id)
        return adopt(deferred)

    runtime._journaling.adopt = recording_adopt  # type: ignore[method-assign]
    RECORDER.gate.clear()
    handles = [runtime.defer(remember_after_gate, n) for n in range(100)]
    spilled = [handle for handle in handles if handle.status is Status.JOURNALED]
    assert len(spilled) == 95
    stats = runtime.stats()
    assert (stats.spilled, stats.journaled, stats.in_flight) == (95, 95, 5)
    assert states(journal_path) == {"pending": 95, "claimed": 5}
    widest = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal widest
        while not done.wait(0.001):
            widest = max(widest, runtime.stats().in_flight)

    watcher = threading.Thread(target=watch)
    watcher.start()
    RECORDER.gate.set()
    try:
        assert RECORDER.wait_for(100, timeout=20)
    finally:
        done.set()
        watcher.join()
    assert sorted(RECORDER.values) == list(range(100))
    assert widest <= 5
    assert adopted == [handle.id for handle in spilled]  # oldest first
    stats = runtime.stats()
    assert stats.recovered == 95  # each spilled call is taken up again here ...
    assert stats.submitted == stats.succeeded == 100  # ... and counted once
    assert (stats.spilled, stats.journaled) == (95, 0)
    assert stats.submitted == stats.finished + stats.in_flight


def test_journal_spill_during_a_request_runs_only_if_the_request_succeeds(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled(max_pending=1, max_workers=1)
    RECORDER.gate.clear()
    runtime.defer(remember_after_gate, "occupies the backlog")
    spill = remember.options(on_overload="spill")
    failed, succeeded = RequestScope(), RequestScope()
    token = failed.activate()
    doomed = runtime.defer(spill, "request failed")
    failed.deactivate(token)
    token = succeeded.activate()
    kept = runtime.defer(spill, "request succeeded")
    succeeded.deactivate(token)
    assert doomed.status is kept.status is Status.JOURNALED
    assert {records(journal_path)[d.id]["state"] for d in (doomed, kept)} == {"held"}
    failed.release(succeeded=False)
    succeeded.release(succeeded=True)
    RECORDER.gate.set()
    assert RECORDER.wait_for(2)
    journal = runtime._journaling.journal
    assert journal is not None
    assert journal.flush()
    assert records(journal_path)[doomed.id]["state"] == "skipped"
    assert records(journal_path)[kept.id]["state"] == "done"
    assert "request failed" not in RECORDER.values


def test_journal_spill_needs_a_journal() -> None:
    with pytest.raises(ConfigurationError, match="needs journal="):
        Config(on_overload="spill")
    runtime = Runtime(Config())
    try:
        with pytest.raises(ConfigurationError, match="spill"):
            runtime.defer(remember.options(on_overload="spill"), 1)
    finally:
        runtime.shutdown()


def test_journal_spill_that_cannot_be_written_is_rejected_and_counted(
    make_journaled: JournaledFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    runtime = make_journaled(journal=str(blocker / "journal.db"), max_pending=1)
    RECORDER.gate.clear()
    first = runtime.defer(remember_after_gate, "in memory")  # the journal cannot be opened
    with pytest.raises(OverloadedError, match="journal cannot be written"):
        runtime.defer(remember.options(on_overload="spill"), "nowhere to go")
    RECORDER.gate.set()
    assert first.result(5) == "in memory"
    stats = runtime.stats()
    assert stats.journal_fallbacks == 2
    assert stats.shed == {"reject": 1}
    assert stats.journal_degraded
