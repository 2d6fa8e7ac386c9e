"""Cost of a journaled request: jumpqueue's group commit against SqliteHuey and RQ, in one run.

    python benchmarks/journal.py [--requests 1000] [--rounds 5] [--dir DIR] [--concurrency 16]

One request defers 1 or 10 no-op calls inside a request scope and seals it
(the group commit the middleware makes before the last byte), as a web
request does; the peers enqueue the same calls one by one (SqliteHuey) or
one by one and pipelined (RQ, on the local Redis, database 15, queue
`jumpqueue-bench`, cleaned up afterwards; skipped if Redis is unreachable).
Prints microseconds per request (median over rounds) and each row's ratio to
one RQ enqueue of the same calls. The journal and Huey's file live in DIR
(default: a temporary directory), which should be on the disk a server uses.

A second table shows the group commit under concurrency: CONCURRENCY threads
each make journaled requests (one call each, synchronous=FULL) at once, as
the server's threads do; it counts the journal's transactions (each one
fsync of the write-ahead log, the request commits and the marks of calls
done alike) per request, and the wall time per request against one raw
SQLite commit (one row, WAL, synchronous=FULL) made at concurrency 1.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

import jumpqueue
from jumpqueue.integration import RequestScope

REDIS_URL = "redis://127.0.0.1:6379/15"
QUEUE = "jumpqueue-bench"


@jumpqueue.task
def noop(user_id: int) -> None:
    """The work deferred: nothing, so that only the bookkeeping is measured."""


Request = Callable[[], None]


def measure(variants: dict[str, Request], requests: int, rounds: int) -> dict[str, float]:
    """Median microseconds per request of each variant; rounds interleave the variants."""
    for request in variants.values():  # warm up: threads, connections, caches
        for _ in range(min(requests, 100)):
            request()
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, request in variants.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(requests):
                request()
            samples[label].append((time.perf_counter() - start) / requests * 1e6)
    return {label: statistics.median(values) for label, values in samples.items()}


def jumpqueue_request(runtime: jumpqueue.Runtime, calls: int) -> Request:
    def request() -> None:
        scope = RequestScope()
        token = scope.activate()
        for _ in range(calls):
            runtime.defer(noop, 42)
        scope.deactivate(token)
        scope.seal()
        scope.release(succeeded=True)

    return request


def huey_request(
    directory: str, calls: int, *, fsync: bool | None
) -> tuple[Request, Callable[[], None]]:
    from huey import SqliteHuey  # type: ignore[import-untyped]

    huey = SqliteHuey(
        filename=os.path.join(directory, f"huey-{calls}-{fsync}.db"), fsync=fsync, immediate=False
    )
    task = huey.task()(_huey_noop)

    def request() -> None:
        for _ in range(calls):
            task(42)

    return request, huey.storage.close


def _huey_noop(user_id: int) -> None:
    """SqliteHuey's no-op task."""


def rq_request(calls: int, *, pipelined: bool) -> tuple[Request, Callable[[], None]] | None:
    try:
        from redis import Redis
        from rq import Queue
    except ImportError:
        return None
    connection = Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except Exception:  # noqa: BLE001 -- any failure means: no Redis to measure against
        return None
    queue = Queue(QUEUE, connection=connection)

    def request() -> None:
        if pipelined:
            queue.enqueue_many([Queue.prepare_data("os.getpid", (42,)) for _ in range(calls)])
        else:
            for _ in range(calls):
                queue.enqueue("os.getpid", 42)

    def clean() -> None:
        queue.empty()  # type: ignore[no-untyped-call]
        queue.delete(delete_jobs=True)
        connection.close()

    return request, clean


def raw_commits(path: str, commits: int) -> float:
    """Microseconds per raw SQLite commit of one row (WAL, synchronous=FULL), one at a time."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, body BLOB)")
    body = os.urandom(300)  # about the size of a journaled call's record
    start = time.perf_counter()
    for _ in range(commits):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO calls (body) VALUES (?)", (body,))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed / commits * 1e6


def concurrent_requests(
    runtime: jumpqueue.Runtime, requests: int, concurrency: int
) -> tuple[float, float]:
    """Microseconds of wall time per request, and journal transactions per request."""
    request = jumpqueue_request(runtime, 1)
    writer = runtime._journaling.journal._writer  # type: ignore[union-attr]
    each = requests // concurrency
    ready = threading.Barrier(concurrency + 1)

    def client() -> None:
        ready.wait()
        for _ in range(each):
            request()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    before = writer.transactions
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    # The calls' done marks belong to these requests too: wait for them, then write them.
    while (stats := runtime.stats()).pending or stats.running:
        time.sleep(0.001)
    writer.flush(timeout=30)
    done = each * concurrency
    return elapsed / done * 1e6, (writer.transactions - before) / done


def group_commit(directory: str, requests: int, rounds: int, concurrency: int) -> None:
    """Print the group commit's table: concurrency 1 and `concurrency`, and a raw commit."""
    runtime = jumpqueue.Runtime(
        jumpqueue.Config(journal=os.path.join(directory, "group.db"), max_pending=1_000_000)
    )
    raw_path = os.path.join(directory, "raw.db")
    samples: dict[str, list[tuple[float, float]]] = {}
    try:
        concurrent_requests(runtime, 200, concurrency)  # warm up: file, threads, caches
        raw_commits(raw_path, 100)
        for _ in range(rounds):
            gc.collect()
            samples.setdefault("raw SQLite commit (1 row, WAL, FULL), concurrency 1", []).append(
                (raw_commits(raw_path, requests // 4), 1.0)
            )
            for threads in (1, concurrency):
                label = f"jumpqueue journaled request, concurrency {threads}"
                samples.setdefault(label, []).append(
                    concurrent_requests(runtime, requests, threads)
                )
    finally:
        runtime.shutdown()
    raw = statistics.median(cost for cost, _ in next(iter(samples.values())))
    print()
    print(f"Group commit, synchronous=FULL ({rounds} rounds of {requests} requests each)")
    print()
    print("| per request | µs (median, range) | ratio to a raw commit | fsyncs per request |")
    print("|---|---:|---:|---:|")
    for label, values in samples.items():
        costs = sorted(cost for cost, _ in values)
        syncs = statistics.median(sync for _, sync in values)
        cost = statistics.median(costs)
        print(
            f"| {label} | {cost:,.0f} ({costs[0]:,.0f} to {costs[-1]:,.0f}) "
            f"| {cost / raw:.2f} | {syncs:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the SQLite files go")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--group-only", action="store_true", help="only the group commit's table")
    args = parser.parse_args()
    if args.group_only:
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            group_commit(directory, args.requests, args.rounds, args.concurrency)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        where = subprocess.run(
            ["df", "--output=fstype", directory], capture_output=True, text=True, check=False
        ).stdout.split()[-1:]
        print(f"files in {directory} ({', '.join(where) or 'unknown file system'})")
        rows: dict[tuple[str, int], float] = {}
        for calls in (1, 10):
            variants: dict[str, Request] = {}
            closers: list[Callable[[], None]] = []
            for synchronous in ("FULL", "NORMAL"):
                runtime = jumpqueue.Runtime(
                    jumpqueue.Config(
                        journal=os.path.join(directory, f"journal-{synchronous}-{calls}.db"),
                        journal_synchronous=synchronous,
                        max_pending=1_000_000,
                    )
                )
                variants[f"jumpqueue journal, synchronous={synchronous}"] = jumpqueue_request(
                    runtime, calls
                )
                closers.append(runtime.shutdown)
            plain = jumpqueue.Runtime(jumpqueue.Config(max_pending=1_000_000))
            variants["jumpqueue, no journal"] = jumpqueue_request(plain, calls)
            closers.append(plain.shutdown)
            for fsync, name in ((None, "default: synchronous=FULL"), (False, "fsync=False: OFF")):
                request, close = huey_request(directory, calls, fsync=fsync)
                variants[f"SqliteHuey enqueue ({name})"] = request
                closers.append(close)
            for pipelined in (False, True):
                made = rq_request(calls, pipelined=pipelined)
                if made is not None:
                    label = "RQ enqueue_many (one pipeline)" if pipelined else "RQ enqueue"
                    variants[label], clean = made
                    closers.append(clean)
            try:
                for label, value in measure(variants, args.requests, args.rounds).items():
                    rows[label, calls] = value
            finally:
                for close in closers:
                    close()
    print()
    print("| per request | 1 call | ratio to RQ | 10 calls | ratio to RQ |")
    print("|---|---:|---:|---:|---:|")
    for label in dict.fromkeys(label for label, _ in rows):
        cells = []
        for calls in (1, 10):
            micros = rows.get((label, calls))
            reference = rows.get(("RQ enqueue", calls))
            cells.append("-" if micros is None else f"{micros:,.0f} µs")
            cells.append("-" if micros is None or not reference else f"{micros / reference:.2f}")
        print(f"| {label} | {' | '.join(cells)} |")
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        group_commit(directory, args.requests, args.rounds, args.concurrency)


if __name__ == "__main__":
    main()
