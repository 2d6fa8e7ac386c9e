"""The tasks and `/stats` of the `bench_waits_*` apps: how long each call waited to start."""

from __future__ import annotations

import array
import asyncio
import itertools
import threading
import time
from typing import Any

TASK_SECONDS = 0.2


class Waits:
    """Calls deferred and not started yet, and how long each started one had waited."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        # Insertion order is defer order: the first entry is the longest-waiting call.
        self._waiting: dict[int, float] = {}
        self._waited = array.array("d")  # seconds, one per started call: 8 bytes each

    def deferring(self) -> tuple[int, float]:
        """A number and a timestamp for a call about to be deferred, counted as waiting."""
        at = time.monotonic()
        with self._lock:
            number = next(self._numbers)
            self._waiting[number] = at
        return number, at

    def refused(self, number: int) -> None:
        """The call was shed at defer time: it will never start."""
        with self._lock:
            self._waiting.pop(number, None)

    def starting(self, number: int, at: float) -> None:
        """The call starts now; it was deferred `at`."""
        now = time.monotonic()
        with self._lock:
            self._waiting.pop(number, None)
            self._waited.append(now - at)

    def snapshot(self, call: int | None = None) -> dict[str, Any]:
        """The figures `/stats` answers; `call`: also whether that call has started."""
        now = time.monotonic()
        with self._lock:
            waited = sorted(self._waited)
            oldest = next(iter(self._waiting.values()), now)
            figures: dict[str, Any] = {
                "time": now,
                "started": len(waited),
                "waiting": len(self._waiting),
                "oldest_waiting": now - oldest,
                "max_wait": waited[-1] if waited else 0.0,
                "p99_wait": waited[int(0.99 * (len(waited) - 1))] if waited else 0.0,
            }
            if call is not None:
                figures["call_started"] = call not in self._waiting
        return figures


WAITS = Waits()


async def io_task(number: int, at: float) -> None:
    """200 ms of I/O-like waiting, on the event loop."""
    WAITS.starting(number, at)
    await asyncio.sleep(TASK_SECONDS)


def blocking_task(number: int, at: float) -> None:
    """200 ms of blocking I/O-like waiting, on a thread."""
    WAITS.starting(number, at)
    time.sleep(TASK_SECONDS)
