"""Cost of handing off one no-op call: jumpqueue.defer against its peers, in one run.

    python benchmarks/handoff.py [--calls 2000] [--rounds 7]

Prints microseconds per call (median over rounds) and each peer's ratio to
`jumpqueue.defer`, then the peak memory of 100,000 pending deferred calls.
The first rows hold the pool's one thread busy, so that they measure the hand-off
alone; the "calls running meanwhile" rows let 8 threads run the calls while the
producer hands them off, and so also measure how the threads share the
interpreter, which swings widely from run to run on a 2-core machine.
RQ and Celery are measured against the local Redis (database 15, queue
`jumpqueue-bench`, cleaned up afterwards) and skipped if it is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable

import jumpqueue

REDIS_URL = "redis://127.0.0.1:6379/15"
QUEUE = "jumpqueue-bench"


def noop() -> None:
    """The work handed off: nothing, so only the hand-off is measured."""


async def anoop() -> None:
    """The coroutine handed off."""


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


def bench_defer_thread(calls: int, rounds: int, *, busy: bool) -> float:
    """defer() on the thread pool; with `busy`, its one thread is held, so only hand-off counts."""
    size = 1 if busy else 8
    runtime = jumpqueue.Runtime(jumpqueue.Config(max_workers=size, max_pending=10 * calls))
    gate = threading.Event()
    if busy:
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


def bench_thread_pool(calls: int, rounds: int, *, busy: bool) -> float:
    """ThreadPoolExecutor.submit; with `busy`, its one thread is held, as for defer()."""
    gate = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1 if busy else 8) as pool:
        if busy:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows: list[tuple[str, float | None]] = [
        ("jumpqueue.defer (thread)", bench_defer_thread(args.calls, args.rounds, busy=True)),
        ("ThreadPoolExecutor.submit", bench_thread_pool(args.calls, args.rounds, busy=True)),
        (
            "jumpqueue.defer (thread), calls running meanwhile",
            bench_defer_thread(args.calls, args.rounds, busy=False),
        ),
        (
            "ThreadPoolExecutor.submit, calls running meanwhile",
            bench_thread_pool(args.calls, args.rounds, busy=False),
        ),
        ("jumpqueue.defer (async, in a loop)", bench_defer_async(args.calls, args.rounds)),
        ("asyncio create_task", bench_create_task(args.calls, args.rounds)),
        ("Starlette BackgroundTasks add+run", bench_background_tasks(args.calls, args.rounds)),
        ("RQ enqueue (local Redis)", bench_rq(args.calls, args.rounds)),
        ("Celery apply_async (local Redis)", bench_celery(args.calls, args.rounds)),
    ]
    reference = rows[0][1]
    assert reference is not None
    print(f"| hand-off of one no-op call | µs per call (median of {args.rounds}) | x defer |")
    print("|---|---:|---:|")
    for name, micros in rows:
        if micros is None:
            print(f"| {name} | skipped (not installed or unreachable) | |")
        else:
            print(f"| {name} | {micros:.2f} | {micros / reference:.2f} |")
    print(f"\nPeak memory of 100,000 pending deferred calls: {pending_memory():.1f} MiB")


if __name__ == "__main__":
    main()
