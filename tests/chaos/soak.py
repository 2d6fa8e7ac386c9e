"""The soak (`make soak`): a million mixed calls with flat memory, then kill loops for ten minutes.

    python -m tests.chaos.soak [--calls 1000000] [--kill-seconds 600] [--seed 1]

Part one defers a seeded random mix of calls (success, failure, retry,
timeout, shedding, requests that succeed or fail) through a small backlog and
samples the resident memory as it goes: flat means the largest sample of the
last quarter is within `--rss-margin` of the largest of the first quarter.
Part two runs the kill loop of `kill_loop.py` for `--kill-seconds`. Each part
prints its figures; the exit status is 0 only if both held.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jumpqueue
from jumpqueue import Config, OverloadedError, Runtime, Task
from jumpqueue.integration import RequestScope

from .kill_loop import run_kill_loop
from .watch import rss_bytes

_MIB = 1024 * 1024


@jumpqueue.task
def soak_succeed(number: int) -> int:
    return number


@jumpqueue.task
def soak_fail(number: int) -> None:
    raise ValueError(number)


_tries: dict[int, int] = {}
_tries_lock = threading.Lock()


@jumpqueue.task(retries=1, retry_backoff=0)
def soak_fail_once(number: int) -> int:
    with _tries_lock:
        first = _tries.pop(number, None) is None
        if first:
            _tries[number] = 1
    if first:
        raise ValueError(number)
    return number


@jumpqueue.task(timeout=0.005)
def soak_time_out(number: int) -> None:
    time.sleep(0.02)


@jumpqueue.task
async def soak_coroutine(number: int) -> int:
    await asyncio.sleep(0)
    return number


#: The mix, by weight: (task, weight). Shedding comes from the tasks' own "reject" and "drop".
_MIX: list[tuple[Task[..., Any], float]] = [
    (soak_succeed, 60),
    (soak_fail, 8),
    (soak_fail_once, 8),
    (soak_coroutine, 15),
    (soak_succeed.options(on_overload="reject"), 4),
    (soak_succeed.options(on_overload="drop"), 4),
    (soak_time_out, 0.2),
]


@dataclasses.dataclass
class CallsReport:
    """What a run of mixed calls did, and how the resident memory went."""

    calls: int
    seconds: float
    samples: list[tuple[int, int]]  # (calls deferred so far, RSS bytes)
    margin: float
    stats: jumpqueue.Stats
    rejected: int

    @property
    def first_quarter_max(self) -> int:
        return max(rss for _, rss in self.samples[: max(1, len(self.samples) // 4)])

    @property
    def last_quarter_max(self) -> int:
        return max(rss for _, rss in self.samples[-max(1, len(self.samples) // 4) :])

    @property
    def flat(self) -> bool:
        return self.last_quarter_max <= self.first_quarter_max * (1 + self.margin)

    @property
    def adds_up(self) -> bool:
        stats = self.stats
        return (
            stats.in_flight == 0
            and stats.submitted == stats.finished == self.calls
            and sum(stats.shed.values()) >= self.rejected
        )

    def lines(self) -> list[str]:
        """The figures, one per line, for people."""
        stats = self.stats
        return [
            f"calls: {self.calls:,} in {self.seconds:.0f} s ({self.calls / self.seconds:,.0f}/s)",
            f"RSS: first quarter max {self.first_quarter_max / _MIB:.1f} MiB, last quarter max "
            f"{self.last_quarter_max / _MIB:.1f} MiB "
            f"({'flat' if self.flat else 'GREW'}, margin {self.margin:.0%}); "
            f"min {min(r for _, r in self.samples) / _MIB:.1f}, max "
            f"{max(r for _, r in self.samples) / _MIB:.1f} MiB over {len(self.samples)} samples",
            f"outcomes: succeeded {stats.succeeded:,}, failed {stats.failed:,}, timed out "
            f"{stats.timed_out:,}, shed {dict(stats.shed)}, skipped {stats.skipped:,}, "
            f"retried {stats.retried:,}",
            f"submitted {stats.submitted:,} == finished {stats.finished:,} + in flight "
            f"{stats.in_flight}: {'yes' if self.adds_up else 'NO'}",
        ]


def run_calls(calls: int, *, seed: int, margin: float = 0.05, samples: int = 100) -> CallsReport:
    """Defer `calls` calls of the mix, through a small backlog, sampling RSS `samples` times."""
    rng = random.Random(seed)
    tasks, weights = zip(*_MIX, strict=True)
    runtime = Runtime(
        Config(max_workers=4, max_async=64, max_pending=256, overload_wait=5.0, shutdown_timeout=30)
    )
    every = max(1, calls // samples)
    points: list[tuple[int, int]] = []
    rejected = 0
    started = time.monotonic()
    deferred = 0
    while deferred < calls:
        batch = min(5, calls - deferred)
        chosen = rng.choices(tasks, weights, k=batch)
        scope = RequestScope() if rng.random() < 0.3 else None
        token = scope.activate() if scope is not None else None
        for task in chosen:
            try:
                runtime.defer(task, deferred)
            except OverloadedError:
                rejected += 1
            deferred += 1
            if deferred % every == 0:
                points.append((deferred, rss_bytes()))
        if scope is not None and token is not None:
            scope.deactivate(token)
            scope.release(succeeded=rng.random() < 0.9)
    runtime.shutdown()
    return CallsReport(
        calls=calls,
        seconds=time.monotonic() - started,
        samples=points,
        margin=margin,
        stats=runtime.stats(),
        rejected=rejected,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 if memory stayed flat, the stats added up and no call was lost."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--kill-seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-margin", type=float, default=0.05)
    args = parser.parse_args(argv)
    # A stop (Ctrl-C, or a TERM from `timeout`) still kills the servers the loop started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # A tenth of the mix fails on purpose: its tracebacks would only bury the figures.
    logging.getLogger("jumpqueue").setLevel(logging.CRITICAL)
    ok = True
    if args.calls:
        print(f"== {args.calls:,} mixed calls, RSS sampled as they go", flush=True)
        report = run_calls(args.calls, seed=args.seed, margin=args.rss_margin)
        print("\n".join(report.lines()), flush=True)
        ok = ok and report.flat and report.adds_up
    if args.kill_seconds:
        print(f"== kill -9 loop under load for {args.kill_seconds:.0f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="jumpqueue-soak-") as directory:
            kills = run_kill_loop(
                Path(directory), seed=args.seed, seconds=args.kill_seconds, final_timeout=300
            )
        print("\n".join(kills.lines()), flush=True)
        ok = ok and not kills.lost and kills.twice_in_one_life == 0
    print("soak:", "passed" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
