from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

from jumpqueue import OverloadedError, Task, task

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
