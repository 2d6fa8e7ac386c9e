"""An event loop never waits for the journal's disk: defer() outside a request, and spill."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jumpqueue import Status
from jumpqueue._journal.store import Store
from jumpqueue.integration import RequestScope

from .conftest import JournaledFactory
from .journal_helpers import RECORDER, eventually, remember, remember_after_gate, states


class SlowDisk:
    """Store.insert held until `release`, noting whether it ran on an event loop's thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
        self.release = threading.Event()
        self.on_loop: list[bool] = []
        insert = Store.insert

        def held_insert(store: Store, *args: Any, **kwargs: Any) -> None:
            self.on_loop.append(_on_event_loop())
            assert self.release.wait(10)
            if fail:
                raise sqlite3.OperationalError("disk I/O error")
            insert(store, *args, **kwargs)

        monkeypatch.setattr(Store, "insert", held_insert)


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDisk]:
    disk = SlowDisk(monkeypatch)
    yield disk
    disk.release.set()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_journal_defer_outside_a_request_on_an_event_loop_does_not_wait_for_the_disk(
    make_journaled: JournaledFactory, journal_path: Path, slow_disk: SlowDisk
) -> None:
    runtime = make_journaled()
    assert runtime.open_journal()

    async def background_job() -> Status:
        started = time.monotonic()
        handle = runtime.defer(remember, "from the loop")
        assert time.monotonic() - started < 1  # the write is held: the loop went on
        status = handle.status
        slow_disk.release.set()
        assert await asyncio.to_thread(handle.wait, 5)
        return status

    assert asyncio.run(background_job()) is Status.PENDING  # it starts once written
    assert RECORDER.values == ["from the loop"]
    assert slow_disk.on_loop == [False]
    assert runtime._journaling.journal is not None
    assert runtime._journaling.journal.flush()
    assert states(journal_path) == {"done": 1}


def test_journal_spill_on_an_event_loop_does_not_wait_for_the_disk(
    make_journaled: JournaledFactory, journal_path: Path, slow_disk: SlowDisk
) -> None:
    runtime = make_journaled(max_pending=1, on_overload="spill")
    RECORDER.gate.clear()
    slow_disk.release.set()  # for the call that fills the backlog
    runtime.submit(remember_after_gate, "fills the backlog")
    assert states(journal_path) == {"claimed": 1}
    slow_disk.release.clear()

    async def spill() -> Status:
        started = time.monotonic()
        handle = runtime.defer(remember, "spilled")
        assert time.monotonic() - started < 1
        return handle.status

    assert asyncio.run(spill()) is Status.JOURNALED
    slow_disk.release.set()
    RECORDER.gate.set()
    assert RECORDER.wait_for(2)
    assert sorted(RECORDER.values) == ["fills the backlog", "spilled"]
    assert slow_disk.on_loop == [False, False]


@pytest.mark.parametrize("succeeded", [True, False])
def test_journal_spill_on_an_event_loop_that_cannot_be_written_runs_in_memory_if_it_may(
    make_journaled: JournaledFactory, monkeypatch: pytest.MonkeyPatch, succeeded: bool
) -> None:
    runtime = make_journaled(max_pending=1, on_overload="spill")
    RECORDER.gate.clear()
    assert runtime.open_journal()
    runtime.submit(remember_after_gate, "fills the backlog")
    disk = SlowDisk(monkeypatch, fail=True)

    async def request() -> None:
        scope = RequestScope()
        token = scope.activate()
        handle = runtime.defer(remember, "spilled")
        scope.deactivate(token)
        assert handle.status is Status.JOURNALED
        disk.release.set()  # the write fails while the request is still on
        assert await asyncio.to_thread(eventually, _fell_back)
        scope.release(succeeded=succeeded)

    def _fell_back() -> bool:
        return runtime.stats().journal_fallbacks >= 1

    asyncio.run(request())
    RECORDER.gate.set()
    expected = ["fills the backlog", "spilled"] if succeeded else ["fills the backlog"]
    assert RECORDER.wait_for(len(expected))
    assert eventually(lambda: runtime.stats().in_flight == 0)
    assert sorted(RECORDER.values) == expected
