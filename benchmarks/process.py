"""Per-call cost of `executor="process"` against ProcessPoolExecutor and pebble, in one run.

    python benchmarks/process.py [--workers 2] [--calls 2000] [--cpu-calls 100] [--rounds 7]

Each pool has the same number of worker processes, started by forkserver and
warmed up before measuring; jumpqueue's run at `process_priority="normal"`, as
the others' do. A round submits all its calls, then waits for all
of them; the figure is the median over rounds of wall time per call, in
microseconds. `no-op` measures the overhead of a call; `10 ms CPU` measures
throughput (ideal: 10,000 / workers µs per call). pebble is skipped if it is
not installed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable

import jumpqueue


def noop() -> None:
    """Nothing: only the round trip is measured."""


def spin(seconds: float = 0.01) -> None:
    """Burn `seconds` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


Runner = Callable[[Callable[[], None], int], None]


def per_call(
    peers: dict[str, Runner], fn: Callable[[], None], calls: int, rounds: int
) -> dict[str, float]:
    """Median microseconds per call of each peer's `run(fn, calls)` over `rounds` rounds.

    The peers take turns within each round, so a noisy neighbour slows them alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in peers}
    for run in peers.values():
        run(fn, min(calls, 100))  # warm up: every worker started and used
    for _ in range(rounds):
        for name, run in peers.items():
            gc.collect()
            start = time.perf_counter()
            run(fn, calls)
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def jumpqueue_runner(workers: int, calls: int) -> tuple[Runner, Callable[[], None]]:
    # At the server's own priority, as ProcessPoolExecutor's and pebble's workers are: a fair
    # comparison (the default, "idle", would give the children only what no one else wants).
    config = jumpqueue.Config(
        max_processes=workers,
        max_pending=calls + 100,
        start_method="forkserver",
        process_priority="normal",
    )
    runtime = jumpqueue.Runtime(config)
    tasks = {fn: jumpqueue.task(executor="process")(fn) for fn in (noop, spin)}

    def run(fn: Callable[[], None], n: int) -> None:
        task = tasks[fn]
        handles = [runtime.defer(task) for _ in range(n)]
        for handle in handles:
            handle.result()

    return run, runtime.shutdown


def executor_runner(pool: concurrent.futures.Executor) -> tuple[Runner, Callable[[], None]]:
    def run(fn: Callable[[], None], n: int) -> None:
        futures = [pool.submit(fn) for _ in range(n)]
        for future in futures:
            future.result()

    return run, pool.shutdown


def pebble_runner(workers: int) -> tuple[Runner, Callable[[], None]] | None:
    try:
        import pebble
    except ImportError:
        return None
    pool = pebble.ProcessPool(
        max_workers=workers, context=multiprocessing.get_context("forkserver")
    )

    def run(fn: Callable[[], None], n: int) -> None:
        futures = [pool.schedule(fn) for _ in range(n)]
        for future in futures:
            future.result()

    def stop() -> None:
        pool.close()  # type: ignore[no-untyped-call]
        pool.join()

    return run, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cpu-calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    context = multiprocessing.get_context("forkserver")
    peers: dict[str, tuple[Runner, Callable[[], None]] | None] = {
        "ProcessPoolExecutor": executor_runner(
            concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context)
        ),
        'jumpqueue executor="process"': jumpqueue_runner(args.workers, args.calls),
        "pebble ProcessPool": pebble_runner(args.workers),
    }
    available = {name: peer for name, peer in peers.items() if peer is not None}
    for name in peers.keys() - available.keys():
        print(f"{name}: not installed, skipped", file=sys.stderr)
    runners = {name: run for name, (run, _) in available.items()}
    cpu_rounds = args.rounds
    try:
        noops = per_call(runners, noop, args.calls, args.rounds)
        cpus = per_call(runners, spin, args.cpu_calls, cpu_rounds)
    finally:
        for _, stop in available.values():
            stop()
    results = {name: (noops[name], cpus[name]) for name in runners}
    base_noop, base_cpu = results["ProcessPoolExecutor"]
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.workers} workers, "
        f"forkserver; median of {args.rounds} rounds of {args.calls} no-op calls "
        f"and {cpu_rounds} rounds of {args.cpu_calls} 10 ms calls"
    )
    print()
    print("| pool | no-op µs/call | x PPE | 10 ms CPU µs/call | x PPE |")
    print("|---|---:|---:|---:|---:|")
    for name, (noop_us, cpu_us) in results.items():
        print(
            f"| {name} | {noop_us:.1f} | {noop_us / base_noop:.2f} "
            f"| {cpu_us:.0f} | {cpu_us / base_cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
