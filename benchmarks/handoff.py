"""The cost of a deferred call, end to end and at the hand-off, against its peers, in one run.

    python benchmarks/handoff.py [--calls 2000] [--rounds 7] [--instructions]

End to end, the way a busy server works: a producer hands off no-op calls while
the pool's workers run them, until every call has settled (its handle, or its
future, final). jumpqueue's thread executor (4 threads) against a
`ThreadPoolExecutor` of 4 (submit and run), its async executor inside a running
loop against `create_task`, and its process executor against a
`ProcessPoolExecutor` (2 workers each, forkserver). Each pair takes turns in
every round, in alternating order. Figures per call: wall time, and CPU time
(this process's and its children's, all threads: on a shared machine the CPU a
call costs is the honest figure, as wall time depends on the neighbours), as
medians over rounds with their range, and the ratio to the peer (median of the
per-round ratios, with their range). `--instructions` also counts the
instructions per call under `valgrind --tool=callgrind` (noise-free; the
process executor's children are not counted there).

Then the hand-off alone: the pool's one thread held busy, so that nothing runs
meanwhile; RQ and Celery against the local Redis (database 15, queue
`jumpqueue-bench`, cleaned up afterwards), skipped if it is unreachable.
Last, the peak memory of 100,000 pending deferred calls.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import gc
import multiprocessing
import os
import shutil
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from _load import callgrind, spread
from _load import tree_cpu as process_tree_cpu

import jumpqueue

REDIS_URL = "redis://127.0.0.1:6379/15"
QUEUE = "jumpqueue-bench"
THREADS = 4
PROCESSES = 2
BIG = 10**7  # bounds high enough that nothing is shed or waits for room


def noop() -> None:
    """The work handed off: nothing, so only the path of a call is measured."""


async def anoop() -> None:
    """The coroutine handed off."""


# -- end to end -----------------------------------------------------------------------------


def tree_cpu() -> float:
    """CPU seconds of this process and its live descendants (the process pools' workers)."""
    return process_tree_cpu(os.getpid())


#: The rows' names, by pair: jumpqueue's, then its peer's.
NAMES = {
    "thread": (
        f"`jumpqueue.defer`, {THREADS} threads",
        f"`ThreadPoolExecutor.submit`, {THREADS} threads",
    ),
    "async": ("`jumpqueue.defer`, coroutine, in a running loop", "`asyncio` `create_task`"),
    "process": (
        f'`jumpqueue.defer`, `executor="process"`, {PROCESSES} workers',
        f"`ProcessPoolExecutor`, {PROCESSES} workers",
    ),
}


@dataclasses.dataclass
class Peer:
    """One side of a comparison: `run(n)` hands off n no-op calls and waits for all of them."""

    run: Callable[[int], None]
    stop: Callable[[], None]
    cpu: Callable[[], float] = time.process_time


def defer_threads() -> Peer:
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_workers=THREADS, max_pending=BIG))

    def run(n: int) -> None:
        handles = [runtime.defer(noop) for _ in range(n)]
        for handle in handles:
            handle.wait()

    return Peer(run, runtime.shutdown)


def thread_pool() -> Peer:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=THREADS)

    def run(n: int) -> None:
        futures = [pool.submit(noop) for _ in range(n)]
        for future in futures:
            future.result()

    return Peer(run, pool.shutdown)


async def _settle(handles: list[jumpqueue.Deferred[None]] | list[asyncio.Task[None]]) -> None:
    # The same wait for both peers: yield to the loop until each is done.
    for handle in handles:
        while not handle.done():
            await asyncio.sleep(0)


def defer_async() -> Peer:
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_pending=BIG, max_async=BIG))
    loop = asyncio.new_event_loop()

    async def main(n: int) -> None:
        await _settle([runtime.defer(anoop) for _ in range(n)])

    def stop() -> None:
        runtime.shutdown()
        loop.close()

    return Peer(lambda n: loop.run_until_complete(main(n)), stop)


def create_task() -> Peer:
    loop = asyncio.new_event_loop()

    async def main(n: int) -> None:
        await _settle([loop.create_task(anoop()) for _ in range(n)])

    return Peer(lambda n: loop.run_until_complete(main(n)), loop.close)


class _Outcome:
    __slots__ = ("error", "result")

    def __init__(self) -> None:
        self.result: object = None
        self.error: BaseException | None = None


async def _kept(coroutine: Coroutine[Any, Any, object], outcome: _Outcome) -> None:
    try:
        outcome.result = await coroutine
    except Exception as error:  # noqa: BLE001 -- kept, as a handle keeps it
        outcome.error = error


def create_task_kept() -> Peer:
    """The least any handle in Python adds to `create_task`: an object the outcome is kept on."""
    loop = asyncio.new_event_loop()

    async def main(n: int) -> None:
        await _settle([loop.create_task(_kept(anoop(), _Outcome())) for _ in range(n)])

    return Peer(lambda n: loop.run_until_complete(main(n)), loop.close)


def defer_processes() -> Peer:
    # At the server's own priority, as ProcessPoolExecutor's workers are: the path is measured.
    config = jumpqueue.Config(
        max_processes=PROCESSES,
        max_pending=BIG,
        start_method="forkserver",
        process_priority="normal",
    )
    runtime = jumpqueue.Runtime(config)
    task = jumpqueue.task(executor="process")(noop)

    def run(n: int) -> None:
        handles = [runtime.defer(task) for _ in range(n)]
        for handle in handles:
            handle.wait()

    return Peer(run, runtime.shutdown, tree_cpu)


def process_pool() -> Peer:
    context = multiprocessing.get_context("forkserver")
    pool = concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=context)

    def run(n: int) -> None:
        futures = [pool.submit(noop) for _ in range(n)]
        for future in futures:
            future.result()

    return Peer(run, pool.shutdown, tree_cpu)


PAIRS: dict[str, tuple[Callable[[], Peer], Callable[[], Peer]]] = {
    "thread": (defer_threads, thread_pool),
    "async": (defer_async, create_task),
    "process": (defer_processes, process_pool),
}


@dataclasses.dataclass
class Samples:
    """Per-call wall and CPU microseconds, one of each per round."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)


def measure(peer: Peer, calls: int, samples: Samples) -> None:
    gc.collect()
    cpu, wall = peer.cpu(), time.perf_counter()
    peer.run(calls)
    samples.wall.append((time.perf_counter() - wall) / calls * 1e6)
    samples.cpu.append((peer.cpu() - cpu) / calls * 1e6)


def compare(pair: str, calls: int, rounds: int) -> list[tuple[str, Samples, Samples | None]]:
    """Rows of (name, its samples, the peer's samples) for jumpqueue and its peer."""
    ours, theirs = (make() for make in PAIRS[pair])
    ours_samples, theirs_samples = Samples(), Samples()
    try:
        for peer in (ours, theirs):
            peer.run(min(calls, 200))  # warm up: threads, loops, processes
        for number in range(rounds):
            order = [(ours, ours_samples), (theirs, theirs_samples)]
            for peer, samples in order if number % 2 == 0 else reversed(order):
                measure(peer, calls, samples)
    finally:
        ours.stop()
        theirs.stop()
    ours_name, their_name = NAMES[pair]
    return [(ours_name, ours_samples, theirs_samples), (their_name, theirs_samples, None)]


def ratios(ours: list[float], theirs: list[float]) -> str:
    return spread([a / b for a, b in zip(ours, theirs, strict=True)], ".2f")


def end_to_end_table(calls: int, rounds: int) -> list[str]:
    lines = [
        f"| no-op call, end to end ({calls:,} a round) | wall µs/call | CPU µs/call "
        "| wall x peer | CPU x peer |",
        "|---|---:|---:|---:|---:|",
    ]
    for pair in PAIRS:
        for name, samples, peer in compare(pair, calls, rounds):
            wall = ratios(samples.wall, peer.wall) if peer else "1.00"
            cpu = ratios(samples.cpu, peer.cpu) if peer else "1.00"
            lines.append(
                f"| {name} | {spread(samples.wall)} | {spread(samples.cpu)} | {wall} | {cpu} |"
            )
    return lines


#: Under callgrind only, by pair: the least any Python bookkeeping adds to the peer.
FLOORS: dict[str, tuple[str, Callable[[], Peer]]] = {
    "async": ("`create_task` of a coroutine that keeps its outcome on an object", create_task_kept),
}


def run_alone(case: str, calls: int) -> None:
    """`--only`: one side of one pair, warmed up, then `calls` calls (for callgrind)."""
    pair, side = case.rsplit("-", 1)
    peer = FLOORS[pair][1]() if side == "floor" else PAIRS[pair][side == "peer"]()
    try:
        peer.run(200)
        peer.run(calls)
    finally:
        peer.stop()


def instructions(case: str, calls: int) -> float:
    """Instructions per call: the difference between runs of 2n and n calls, divided by n."""
    run = [callgrind([__file__, "--only", case, "--calls", str(n)]) for n in (calls, 2 * calls)]
    return (run[1] - run[0]) / calls


def instructions_table(calls: int) -> list[str]:
    """Each pair's instructions per call under callgrind, and the floor below a pair's target."""
    lines = [
        "| no-op call, end to end, under callgrind | instructions/call | x peer |",
        "|---|---:|---:|",
    ]
    for pair, names in NAMES.items():
        ours, peer = (instructions(f"{pair}-{side}", calls) for side in ("ours", "peer"))
        rows = [(names[0], ours), (names[1], peer)]
        if pair in FLOORS:
            rows.append((FLOORS[pair][0], instructions(f"{pair}-floor", calls)))
        lines += [f"| {name} | {count:,.0f} | {count / peer:.2f} |" for name, count in rows]
    return lines


# -- the hand-off alone ---------------------------------------------------------------------


def per_call(run: Callable[[int], None], calls: int, rounds: int) -> float:
    """Median microseconds per call of `run(calls)` over `rounds` rounds."""
    run(min(calls, 200))  # warm up: threads, loops, connections
    samples = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        run(calls)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def bench_defer_thread(calls: int, rounds: int) -> float:
    """defer() on the thread pool, its one thread held, so that only the hand-off counts."""
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_workers=1, max_pending=10 * calls))
    gate = threading.Event()
    runtime.defer(gate.wait)

    def run(n: int) -> None:
        for _ in range(n):
            runtime.defer(noop)

    try:
        return per_call(run, calls, rounds)
    finally:
        gate.set()
        runtime.shutdown()


def bench_defer_async(calls: int, rounds: int) -> float:
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_pending=10 * calls, max_async=10 * calls))

    def run(n: int) -> None:
        async def main() -> None:
            for _ in range(n):
                runtime.defer(anoop)

        asyncio.run(main())

    try:
        return per_call(run, calls, rounds)
    finally:
        runtime.shutdown()


def bench_thread_pool(calls: int, rounds: int) -> float:
    """ThreadPoolExecutor.submit, its one thread held, as for defer()."""
    gate = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(gate.wait)

        def run(n: int) -> None:
            for _ in range(n):
                pool.submit(noop)

        try:
            return per_call(run, calls, rounds)
        finally:
            gate.set()


def bench_create_task(calls: int, rounds: int) -> float:
    def run(n: int) -> None:
        async def main() -> None:
            tasks = set()
            for _ in range(n):
                task = asyncio.get_running_loop().create_task(anoop())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        asyncio.run(main())

    return per_call(run, calls, rounds)


def bench_background_tasks(calls: int, rounds: int) -> float | None:
    try:
        from starlette.background import BackgroundTasks
    except ImportError:
        return None

    def run(n: int) -> None:
        async def main() -> None:
            for _ in range(n):
                tasks = BackgroundTasks()
                tasks.add_task(anoop)
                await tasks()

        asyncio.run(main())

    return per_call(run, calls, rounds)


def bench_rq(calls: int, rounds: int) -> float | None:
    try:
        import redis
        from rq import Queue
    except ImportError:
        return None
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError:
        return None
    queue = Queue(QUEUE, connection=connection)

    def run(n: int) -> None:
        for _ in range(n):
            queue.enqueue("os.getpid")  # by import path: __main__ functions are refused

    try:
        return per_call(run, max(1, calls // 10), rounds)
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)


def bench_celery(calls: int, rounds: int) -> float | None:
    try:
        import redis
        from celery import Celery
    except ImportError:
        return None
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        return None
    app = Celery("jumpqueue_bench", broker=REDIS_URL)
    app.conf.task_default_queue = QUEUE
    celery_noop = app.task(name="jumpqueue_bench.noop")(noop)

    def run(n: int) -> None:
        for _ in range(n):
            celery_noop.apply_async()

    try:
        return per_call(run, max(1, calls // 10), rounds)
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(QUEUE)
        app.close()


def pending_memory(count: int = 100_000) -> float:
    """MiB allocated by `count` pending deferred calls (the workers are held busy)."""
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_workers=1, max_pending=count + 1))
    gate = threading.Event()
    runtime.defer(gate.wait)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    handles = [runtime.defer(noop) for _ in range(count)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    gate.set()
    runtime.shutdown()
    del handles
    return used / 2**20


def handoff_table(calls: int, rounds: int) -> list[str]:
    rows: list[tuple[str, float | None]] = [
        ("`jumpqueue.defer` (thread)", bench_defer_thread(calls, rounds)),
        ("`ThreadPoolExecutor.submit`", bench_thread_pool(calls, rounds)),
        ("`jumpqueue.defer` (coroutine, in a running loop)", bench_defer_async(calls, rounds)),
        ("`asyncio` `create_task`", bench_create_task(calls, rounds)),
        ("Starlette `BackgroundTasks` add + run", bench_background_tasks(calls, rounds)),
        ("RQ `enqueue` (local Redis)", bench_rq(calls, rounds)),
        ("Celery `apply_async` (local Redis)", bench_celery(calls, rounds)),
    ]
    reference = rows[0][1]
    assert reference is not None
    lines = [
        f"| hand-off alone, one no-op call | µs per call (median of {rounds}) | x `defer` |",
        "|---|---:|---:|",
    ]
    for name, micros in rows:
        if micros is None:
            lines.append(f"| {name} | skipped (not installed or unreachable) | |")
        else:
            lines.append(f"| {name} | {micros:.2f} | {micros / reference:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="count them under callgrind")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one side of a pair, for callgrind
    parser.add_argument("--no-handoff", action="store_true", help="the end-to-end table only")
    args = parser.parse_args()
    if args.only:
        run_alone(args.only, args.calls)
        return
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; {args.rounds} rounds; medians (range)\n"
    )
    print("\n".join(end_to_end_table(args.calls, args.rounds)))
    if args.instructions and shutil.which("valgrind"):
        print()
        print("\n".join(instructions_table(max(100, args.calls // 4))))
    if not args.no_handoff:
        print()
        print("\n".join(handoff_table(args.calls, args.rounds)))
        print(f"\nPeak memory of 100,000 pending deferred calls: {pending_memory():.1f} MiB")


if __name__ == "__main__":
    main()
