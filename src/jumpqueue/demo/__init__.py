"""`jumpqueue demo`: a spike far past capacity, absorbed by the overload policy, then healed."""

from __future__ import annotations

import threading
import time

from .._config import Config
from .._exceptions import OverloadedError
from .._runtime import Runtime

#: Each phase: (name, share of the demo's duration, calls offered per second).
PHASES = (("normal", 0.3, 40), ("spike x10", 0.35, 400), ("back to normal", 0.35, 40))


def slow_task() -> None:
    """The work deferred by every "request": 100 ms of I/O-like waiting."""
    time.sleep(0.1)


def run(*, seconds: float = 12.0) -> int:
    """Drive a small runtime through a spike and print what happened, second by second."""
    config = Config(max_workers=8, max_pending=64, on_overload="reject")
    print(
        f"jumpqueue demo: {config.max_workers} workers x 100 ms tasks = capacity "
        f"{config.max_workers * 10}/s, backlog bound {config.max_pending}, policy "
        f"{config.on_overload!r}\n"
    )
    print(
        f"{'t':>5}  {'phase':<15}{'offered':>8}{'accepted':>9}{'503s':>6}"
        f"{'pending':>8}{'running':>8}{'done':>7}"
    )
    with Runtime(config) as runtime:
        start = time.monotonic()
        accepted = rejected = offered = 0
        next_report = start + 0.5
        for name, share, rate in PHASES:
            phase_end = time.monotonic() + share * seconds
            while (now := time.monotonic()) < phase_end:
                try:
                    runtime.defer(slow_task)
                    accepted += 1
                except OverloadedError:
                    rejected += 1
                offered += 1
                if now >= next_report:
                    stats = runtime.stats()
                    print(
                        f"{now - start:5.1f}  {name:<15}{offered:>8}{accepted:>9}{rejected:>6}"
                        f"{stats.pending:>8}{stats.running:>8}{stats.succeeded:>7}"
                    )
                    next_report += 0.5
                threading.Event().wait(1 / rate)
        runtime.shutdown()
        stats = runtime.stats()
    print(
        f"\nEvery call accounted for: submitted {stats.submitted} = succeeded "
        f"{stats.succeeded} + shed {sum(stats.shed.values())} + abandoned {stats.abandoned}. "
        "The backlog drained by itself, with no restart."
    )
    return 0 if stats.submitted == stats.finished else 1
