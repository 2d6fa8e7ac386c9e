from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from jumpqueue import Deferred, OverloadedError, Status, Task, task
from jumpqueue._runtime import ledger as ledger_module
from jumpqueue._runtime.ledger import Ledger
from jumpqueue._tasks import DEFAULT_OPTIONS

from .conftest import RuntimeFactory


def test_stats_every_call_ends_in_exactly_one_final_state(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=3, max_async=2, max_pending=20, on_overload="reject")
    rng = random.Random(7)
    release = threading.Event()

    def fails() -> None:
        raise ValueError("x")

    async def nap() -> None:
        await asyncio.sleep(0.001)

    kinds: list[Task[..., Any]] = [
        task(int),
        task(fails),
        task(fails).options(retries=1, retry_backoff=0),
        task(release.wait).options(timeout=0.02),
        task(nap),
    ]
    rejected = 0
    for _ in range(300):
        try:
            runtime.defer(rng.choice(kinds))
        except OverloadedError:
            rejected += 1
    release.set()
    runtime.shutdown(timeout=10)
    stats = runtime.stats()
    assert stats.in_flight == 0
    assert stats.submitted == 300
    assert stats.submitted == stats.finished
    assert stats.shed.get("reject", 0) == rejected
    assert stats.started >= stats.succeeded + stats.failed
    assert stats.as_dict()["submitted"] == 300


def test_stats_a_call_taken_up_again_counts_once_and_one_forgotten_counts_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_module, "REMEMBERED_JOURNALED", 2)
    ledger = Ledger(max_pending=10, max_queue_wait=None)
    calls: list[Deferred[Any]] = [
        Deferred(f"c{n}", print, (), {}, DEFAULT_OPTIONS, "thread", None) for n in range(3)
    ]
    for call in calls:
        ledger.spilled(call, written=True)
    for call in calls:  # as the journal decodes a record: a new handle, the same id
        assert ledger.adopt(
            Deferred(call.name, print, (), {}, DEFAULT_OPTIONS, "thread", None, call_id=call.id)
        )
    counters = ledger.counters
    # The first spill was forgotten past the bound: counted as a new call when taken up.
    assert (counters.submitted, counters.recovered, counters.spilled) == (4, 3, 3)
    assert counters.finished[Status.JOURNALED] == 1
    assert counters.submitted == sum(counters.finished.values()) + len(ledger.in_flight)
