"""The journal's thread under errors nobody planned for: it logs, falls back, and starts over."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from jumpqueue._journal import Journal
from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Store

from .conftest import JournaledFactory
from .journal_helpers import RECORDER, known_record, remember, states


def _journal(runtime: Any) -> Journal:
    journal = runtime._journaling.journal
    assert isinstance(journal, Journal)
    return journal


def test_journal_thread_that_fails_logs_falls_back_and_starts_over(
    make_journaled: JournaledFactory,
    journal_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store.open(str(journal_path))
    with store.transaction():
        store.insert([known_record("left", "left")], PENDING, None, None)
    store.close()
    failures: list[bool] = []
    reclaim = Store.reclaim

    def broken_twice(self: Store, *args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(True)
            raise TypeError("a bug in the journal's thread")
        return reclaim(self, *args, **kwargs)

    monkeypatch.setattr(Store, "reclaim", broken_twice)
    runtime = make_journaled()
    started = time.monotonic()
    assert not runtime.open_journal(timeout=10)  # failed at once: it does not wait 10 s
    assert time.monotonic() - started < 2
    assert runtime.stats().journal_degraded
    assert runtime.defer(remember, "meanwhile").result(5) == "meanwhile"  # without it
    assert runtime.stats().journal_fallbacks >= 1
    # It starts over, with a growing pause, until its work succeeds.
    assert _journal(runtime).wait_degraded(False, timeout=10)
    assert RECORDER.wait_for(2)
    assert "left" in RECORDER.values
    assert runtime.defer(remember, "journaled").result(5) == "journaled"
    assert _journal(runtime).flush()
    assert states(journal_path) == {"done": 2}
    failed = [r for r in caplog.records if "the journal's thread failed" in r.getMessage()]
    assert len(failed) == 2
    assert all(record.exc_info and record.levelno == logging.ERROR for record in failed)


def test_journal_defer_never_waits_for_a_journal_that_is_not_coming_back(
    make_journaled: JournaledFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_open(*args: Any, **kwargs: Any) -> Store:
        raise RuntimeError("not a failure anyone planned for")

    monkeypatch.setattr(Store, "open", cannot_open)
    runtime = make_journaled()
    for value in range(3):
        started = time.monotonic()
        assert runtime.defer(remember, value).result(5) == value
        assert time.monotonic() - started < 1
    assert runtime.stats().journal_degraded
    assert runtime.stats().journal_fallbacks == 3
