"""What the status page costs: defer() with reporting off and on, the snapshot writer, the page.

    python benchmarks/status.py [--rounds 7] [--calls 20000] [--workers 3,16]

1. defer() of a no-op, run by the thread pool, per call: reporting off (no
   `status_dir`, no page: the default), beside a no-op call observer (what
   the observer hooks cost by themselves), and reporting on (`status_dir` set:
   the metrics observer sees every call, the writer writes once a second).
   Rounds interleave the three; medians with [min-max], and the ratio to off
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
from jumpqueue.integration import CallObserver, add_observer, remove_observer
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
    kinds = {
        "reporting off (the default)": None,
        "a no-op `CallObserver` registered (the hooks alone)": "hooks",
        "reporting on (`status_dir`: metrics observer, writer)": "on",
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, kind in kinds.items():
            config = (
                base.replace(status_dir=os.path.join(directory, "on")) if kind == "on" else base
            )
            observer = CallObserver() if kind == "hooks" else None
            if observer is not None:
                add_observer(observer)
            with Runtime(config) as runtime:
                per_defer(runtime, 1000)  # the pool's threads, started
                times[name].append(per_defer(runtime, calls))
            if observer is not None:
                remove_observer(observer)
    off = times["reporting off (the default)"]
    print("| defer() of a no-op, run by the pool | per call | ratio to off |")
    print("|---|---|---|")
    for name, values in times.items():
        ratios = [value / base_value for value, base_value in zip(values, off, strict=True)]
        ratio = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        print(f"| {name} | {spread(values, 1e6, 'µs')} | {ratio} |")


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
