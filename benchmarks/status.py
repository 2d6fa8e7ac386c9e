"""What the status page costs: defer() with reporting off and on, the snapshot writer, the page.

    python benchmarks/status.py [--rounds 7] [--calls 20000] [--workers 3,16]

1. defer() of a no-op, run by the thread pool, per call: reporting off (no
   `status_dir`, no page: the default), beside reporting on (`status_dir` set:
   the metrics observer sees every call, the writer writes once a second).
   Rounds alternate off/on; medians with [min-max], and the ratio on/off
   measured in the same round.
2. One snapshot written (the writer's work once a second): beside `stats()`
   alone, in the same run, and as a share of one core at one per second.
3. One status report read (the page's JSON) with N workers' files beside
   the same report of this process alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import jumpqueue
from jumpqueue import Config, Runtime
from jumpqueue._snapshots import path_for, write
from jumpqueue.status import StatusPage


def noop() -> None:
    pass


def per_defer(runtime: Runtime, calls: int) -> float:
    """Seconds per defer() of a no-op, until the pool has run them all."""
    start = time.perf_counter()
    handles = [runtime.defer(noop) for _ in range(calls)]
    handles[-1].result(timeout=60)
    for handle in handles:
        handle.result(timeout=60)
    return (time.perf_counter() - start) / calls


def timed(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def spread(values: list[float], scale: float, unit: str) -> str:
    return (
        f"{statistics.median(values) * scale:.2f} {unit} "
        f"[{min(values) * scale:.2f}-{max(values) * scale:.2f}]"
    )


def measure_defer(rounds: int, calls: int, directory: str) -> None:
    base = Config(max_pending=calls + 10, max_queue_wait=None)
    off: list[float] = []
    on: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):
        with Runtime(base) as runtime:
            per_defer(runtime, 1000)  # the pool's threads, started
            off.append(per_defer(runtime, calls))
        with Runtime(base.replace(status_dir=os.path.join(directory, "on"))) as runtime:
            per_defer(runtime, 1000)
            on.append(per_defer(runtime, calls))
        ratios.append(on[-1] / off[-1])
    print("| defer() of a no-op, run by the pool | per call | ratio to off |")
    print("|---|---|---|")
    print(f"| reporting off (the default) | {spread(off, 1e6, 'µs')} | 1.00 |")
    ratio = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
    print(f"| reporting on (`status_dir`, metrics observer) | {spread(on, 1e6, 'µs')} | {ratio} |")


def measure_writer(rounds: int, directory: str) -> None:
    folder = os.path.join(directory, "writer")
    with Runtime(Config(status_dir=folder)) as runtime:
        runtime.defer(noop).result(timeout=10)
        reporter = runtime._reporter
        path = path_for(folder, os.getpid())
        stats_cost = [timed(runtime.stats, 2000) for _ in range(rounds)]
        snapshot_cost = [
            timed(lambda: write(path, reporter.snapshot()), 500) for _ in range(rounds)
        ]
    share = statistics.median(snapshot_cost) * 100  # one per second
    ratio = statistics.median(s / t for s, t in zip(snapshot_cost, stats_cost, strict=True))
    print("\n| once a second | cost | ratio to `stats()` | share of one core |")
    print("|---|---|---|---|")
    print(f"| `stats()` alone | {spread(stats_cost, 1e6, 'µs')} | 1.0 | - |")
    print(
        f"| snapshot written (temp + rename) | {spread(snapshot_cost, 1e6, 'µs')} "
        f"| {ratio:.1f} | {share:.3f} % |"
    )


def measure_page(rounds: int, workers: list[int], directory: str) -> None:
    print("\n| status report read (`?json&full`) | cost | ratio to one process |")
    print("|---|---|---|")
    with Runtime(Config()) as alone:
        page = StatusPage(runtime=alone)
        alone_cost = [
            timed(lambda: page.respond("127.0.0.1", None, "json&full"), 100) for _ in range(rounds)
        ]
    print(f"| this process alone | {spread(alone_cost, 1e3, 'ms')} | 1.0 |")
    for count in workers:
        folder = os.path.join(directory, f"workers-{count}")
        with Runtime(Config(status_dir=folder)) as runtime:
            runtime.defer(noop).result(timeout=10)
            snapshot = runtime.status_snapshot()
            for pid in range(1, count):  # the others, as live workers write them
                write(path_for(folder, 10_000_000 + pid), json.loads(json.dumps(snapshot)))
            shared = StatusPage(runtime=runtime)
            costs = [
                timed(lambda: shared.respond("127.0.0.1", None, "json&full"), 100)  # noqa: B023
                for _ in range(rounds)
            ]
        ratio = statistics.median(costs) / statistics.median(alone_cost)
        print(f"| {count} workers' files | {spread(costs, 1e3, 'ms')} | {ratio:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--workers", default="3,16")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="jq-status-bench-")
    version = sys.version.split()[0]
    print(f"python {version}, jumpqueue {jumpqueue.__version__}, {args.rounds} rounds\n")
    measure_defer(args.rounds, args.calls, directory)
    measure_writer(args.rounds, directory)
    measure_page(args.rounds, [int(n) for n in args.workers.split(",")], directory)


if __name__ == "__main__":
    main()
