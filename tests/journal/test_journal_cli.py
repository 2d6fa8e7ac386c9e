from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Store
from jumpqueue.cli import main

from .conftest import JournaledFactory
from .journal_helpers import (
    RECORDER,
    always_fails,
    eventually,
    known_record,
    records,
    remember,
    remember_after_gate,
    states,
)


def _journal_with_history(make_journaled: JournaledFactory, journal_path: Path) -> list[str]:
    # Two done, one failed, two left pending by a shutdown; returns the failed call's id.
    runtime = make_journaled(max_workers=1)
    runtime.defer(remember, 1).wait(5)
    runtime.defer(remember, 2).wait(5)
    failed = runtime.defer(always_fails.options(retries=0), "bad")
    failed.wait(5)
    RECORDER.gate.clear()
    runtime.defer(remember_after_gate, "blocks the only worker")
    assert eventually(lambda: runtime.stats().running == 1)
    left = [runtime.defer(remember, 3), runtime.defer(remember, 4)]
    runtime.shutdown(timeout=0)
    RECORDER.gate.set()
    assert RECORDER.wait_for(4)  # 1, 2, "bad", and the blocked one, which finishes late
    return [failed.id, *(handle.id for handle in left)]


def test_journal_cli_status_shows_counts_oldest_and_failures(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_id, *_ = _journal_with_history(make_journaled, journal_path)
    assert main(["status", "--journal", str(journal_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"done +2\n", out)
    assert re.search(r"pending +2\n", out)
    assert re.search(r"failed +1\n", out)
    assert "oldest waiting:" in out
    assert failed_id in out
    assert "ValueError: no good: bad" in out
    assert "(alive)" in out  # the call still running in this process holds its record


def test_journal_cli_reports_a_missing_or_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert main(["status", "--journal", str(missing)]) == 3
    assert "no journal at" in capsys.readouterr().err
    assert not missing.exists()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["purge", "--done", "--journal", str(text)]) == 3
    assert "is not a jumpqueue journal" in capsys.readouterr().err
    assert text.read_text() == "hello"


def test_journal_cli_drain_runs_what_is_pending_and_exits(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _journal_with_history(make_journaled, journal_path)
    RECORDER.reset()
    app = "tests.journal.journal_helpers:remember"
    assert main(["drain", "--journal", str(journal_path), "--app", app]) == 0
    assert sorted(RECORDER.values, key=str) == [3, 4]
    out = capsys.readouterr().out
    assert "drained 2 call(s): 2 succeeded, 0 failed; 0 still runnable, 1 held" in out
    assert states(journal_path)["done"] == 4


def test_journal_cli_drain_exits_non_zero_when_calls_fail(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_id, *_ = _journal_with_history(make_journaled, journal_path)
    assert main(["retry", "--journal", str(journal_path), "--failed"]) == 0
    assert records(journal_path)[failed_id]["state"] == PENDING
    app = "tests.journal.journal_helpers"
    assert main(["drain", "--journal", str(journal_path), "--app", app]) == 1
    assert "1 failed" in capsys.readouterr().out
    assert main(["drain", "--journal", str(journal_path), "--app", "no.such.module"]) == 2


def test_journal_cli_retry_refuses_a_record_a_live_process_holds(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = make_journaled()
    RECORDER.gate.clear()
    running = runtime.defer(remember_after_gate, "busy")
    assert main(["retry", "--journal", str(journal_path), running.id]) == 4
    assert "in the hands of pid" in capsys.readouterr().err
    assert main(["retry", "--journal", str(journal_path), "no-such-id"]) == 1
    RECORDER.gate.set()


def test_journal_cli_purge_deletes_by_state_and_age(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_id, *_ = _journal_with_history(make_journaled, journal_path)
    assert main(["purge", "--journal", str(journal_path), "--failed", "--older-than", "7d"]) == 0
    assert "purged 0 record(s)" in capsys.readouterr().out
    assert main(["purge", "--journal", str(journal_path), "--done", "--older-than", "0s"]) == 0
    assert states(journal_path) == {"failed": 1, "pending": 2, "claimed": 1}
    store = Store.open(str(journal_path), create=False)
    with store.transaction() as connection:
        connection.execute("UPDATE calls SET updated = ?", (time.time() - 8 * 86400,))
    store.close()
    assert main(["purge", "--journal", str(journal_path), "--failed", "--older-than", "7d"]) == 0
    assert failed_id not in records(journal_path)
    assert main(["purge", "--journal", str(journal_path)]) == 2


def test_journal_cli_reads_the_journal_from_the_environment(
    make_journaled: JournaledFactory, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_journaled().open_journal()
    monkeypatch.setenv("JUMPQUEUE_JOURNAL", str(journal_path))
    assert main(["status"]) == 0
    monkeypatch.delenv("JUMPQUEUE_JOURNAL")
    with pytest.raises(SystemExit):
        main(["status"])


def test_journal_cli_never_tracebacks_and_fails_when_it_could_not_do_its_job(
    make_journaled: JournaledFactory,
    journal_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_journaled().open_journal()
    store = Store.open(str(journal_path))
    with store.transaction() as connection:
        store.insert([known_record("fine", 1), known_record("edited", 2)], PENDING, None, None)
        connection.execute("UPDATE calls SET payload = 'edited as text' WHERE id = 'edited'")
    store.close()
    # A drain that ran the good record but had to set the edited one aside did not do its job.
    app = "tests.journal.journal_helpers"
    assert main(["drain", "--journal", str(journal_path), "--app", app]) == 1
    captured = capsys.readouterr()
    assert "1 record(s) quarantined, not run" in captured.err
    assert RECORDER.values == [1]
    # Such a record cannot be retried: nothing vouches for what it holds.
    assert main(["retry", "--journal", str(journal_path), "edited"]) == 1
    assert "was changed outside jumpqueue (payload holds str" in capsys.readouterr().err
    assert records(journal_path)["edited"]["state"] == "quarantined"
    # An application that fails as it is imported is reported, without a traceback.
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('no database configured')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["drain", "--journal", str(journal_path), "--app", "broken_app"]) == 2
    assert "RuntimeError: no database configured" in capsys.readouterr().err
    # A failure nobody planned for is one line and a non-zero status.
    monkeypatch.setattr(Store, "counts", lambda self: 1 / 0)
    assert main(["status", "--journal", str(journal_path)]) == 1
    assert "status failed on" in capsys.readouterr().err
