"""What each overload policy does to the answer's latency and to the work under a spike.

    python benchmarks/overload.py [--rounds 3] [--rate 600] [--spike 1.5] [--plot PATH]

A "server" of 64 request threads receives requests at `--rate` per second
(open loop: each arrives at its own time, whether or not the server has a
free thread) for `--spike` seconds. Each request defers one 20 ms blocking
call (`time.sleep`) inside a request scope, as the middleware does, and is
answered once `defer()` has returned (503 on `OverloadedError`); its calls are
released when it is answered. jumpqueue has 4 threads (200 calls/s at most)
and a backlog of 50 calls (`max_pending`), so the spike brings three times
what the pool can run. The peer, measured in the same run, is an unbounded
`ThreadPoolExecutor` of 4 threads (what `BackgroundTasks` and a bare executor
do: take everything, run it late).

For each policy: the answer's latency (from the request's arrival to its
answer, p50 and p99), the calls lost (answered 503, or dropped), and how late
the work that ran started (p99, from the request's arrival). The figures are
medians over `--rounds` rounds (rounds interleaved), with their range;
`--plot` draws them (matplotlib, the `demo` extra), as
docs/img/overload-policies.png is drawn. About 40 s with the defaults.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _load import percentile

import jumpqueue
from jumpqueue.integration import RequestScope

POLICIES = ("wait", "reject", "drop", "inline", "spill")
PEER = "unbounded pool"
WORKERS = 4
TASK_SECONDS = 0.02
SERVER_THREADS = 64
MAX_PENDING = 50

_started: dict[int, float] = {}
_started_lock = threading.Lock()


@jumpqueue.task
def work(request: int) -> None:
    """The deferred call: note when it started, then 20 ms of blocking work."""
    with _started_lock:
        _started[request] = time.monotonic()
    time.sleep(TASK_SECONDS)


def _arrivals(rate: float, spike: float) -> list[float]:
    return [i / rate for i in range(int(rate * spike))]


def _serve(arrivals: list[float], handle: Callable[[int], None]) -> tuple[list[float], float]:
    """Run each request at its arrival time on the server's threads; latencies, and the start."""
    latencies = [0.0] * len(arrivals)
    start = time.monotonic() + 0.05

    def request(index: int) -> None:
        handle(index)
        latencies[index] = time.monotonic() - (start + arrivals[index])

    with concurrent.futures.ThreadPoolExecutor(SERVER_THREADS) as server:
        for index, offset in enumerate(arrivals):
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            server.submit(request, index)
    return latencies, start


def run_policy(policy: str, arrivals: list[float], journal: Path) -> dict[str, float]:
    """One round of the spike against one policy (or the peer); its figures."""
    _started.clear()
    refused = 0
    refused_lock = threading.Lock()
    if policy == PEER:
        pool = concurrent.futures.ThreadPoolExecutor(WORKERS)

        def handle(index: int) -> None:
            pool.submit(work.fn, index)

        latencies, start = _serve(arrivals, handle)
        pool.shutdown(wait=True)
        dropped = 0
    else:
        runtime = jumpqueue.configure(
            max_workers=WORKERS,
            max_pending=MAX_PENDING,
            max_queue_wait=None,
            on_overload=policy,  # type: ignore[arg-type]
            overload_wait=0.5,
            journal=str(journal) if policy == "spill" else None,
            shutdown_timeout=60,
        )
        if policy == "spill":
            runtime.open_journal()

        def handle(index: int) -> None:
            nonlocal refused
            scope = RequestScope()
            token = scope.activate()
            ok = True
            try:
                jumpqueue.defer(work, index)
            except jumpqueue.OverloadedError:
                ok = False
                with refused_lock:
                    refused += 1
            finally:
                scope.deactivate(token)
            scope.seal()
            scope.release(succeeded=ok)

        latencies, start = _serve(arrivals, handle)
        _wait_until_idle(runtime, timeout=60)
        stats = runtime.stats()
        dropped = stats.shed.get("drop", 0)
        runtime.shutdown(timeout=10)
    late = [_started[i] - (start + arrivals[i]) for i in _started]
    total = len(arrivals)
    return {
        "p50 ms": 1000 * percentile(latencies, 0.5),
        "p99 ms": 1000 * percentile(latencies, 0.99),
        "lost %": 100 * (refused + dropped) / total,
        "ran %": 100 * len(_started) / total,
        "start p99 s": percentile(late, 0.99),
    }


def _wait_until_idle(runtime: jumpqueue.Runtime, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = runtime.stats()
        if not (stats.held or stats.pending or stats.running or stats.journaled):
            return
        time.sleep(0.05)


COLUMNS = ("p50 ms", "p99 ms", "lost %", "ran %", "start p99 s")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cell(values: list[float]) -> str:
    median = _number(statistics.median(values))
    low, high = _number(min(values)), _number(max(values))
    return median if low == high else f"{median} ({low} to {high})"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """The Markdown table: medians over rounds, with their ranges, and p99 against the peer's."""
    peer_p99 = statistics.median(r["p99 ms"] for r in results[PEER])
    lines = [
        "| policy | answer p50 ms | answer p99 ms | p99 x peer | calls lost % "
        "| calls run % | work starts, p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        cells = [_cell([r[column] for r in rounds]) for column in COLUMNS]
        ratio = statistics.median(r["p99 ms"] for r in rounds) / peer_p99
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {ratio:.2f} | {cells[2]} | {cells[3]} "
            f"| {cells[4]} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Three panels per policy: the answer's p99, the calls lost, how late work started."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panels: list[tuple[str, str, bool]] = [
        ("p99 ms", "answer latency, p99 (ms, log)", True),
        ("lost %", "calls lost (%)", False),
        ("start p99 s", "work starts after arrival, p99 (s)", False),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for axis, (column, label, log) in zip(axes, panels, strict=True):
        medians = [statistics.median(r[column] for r in results[name]) for name in names]
        lows = [m - min(r[column] for r in results[n]) for m, n in zip(medians, names, strict=True)]
        highs = [
            max(r[column] for r in results[n]) - m for m, n in zip(medians, names, strict=True)
        ]
        colors = ["#9e9e9e" if name == PEER else "#3f51b5" for name in names]
        axis.bar(names, medians, yerr=[lows, highs], color=colors, capsize=3)
        axis.set_title(label, fontsize=10)
        if log:
            axis.set_yscale("log")
        axis.tick_params(axis="x", rotation=35, labelsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=600.0, help="requests per second")
    parser.add_argument("--spike", type=float, default=1.5, help="seconds of spike")
    parser.add_argument("--plot", type=Path, help="draw the figures to this PNG")
    args = parser.parse_args()
    arrivals = _arrivals(args.rate, args.spike)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in (*POLICIES, PEER)}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for name, rounds in results.items():
                journal = Path(directory) / f"spill-{round_}.db"
                rounds.append(run_policy(name, arrivals, journal))
    capacity = WORKERS / TASK_SECONDS
    title = (
        f"{len(arrivals)} requests at {args.rate:.0f}/s for {args.spike} s, each deferring "
        f"{TASK_SECONDS * 1000:.0f} ms of work; {WORKERS} threads ({capacity:.0f} calls/s), "
        f"max_pending={MAX_PENDING}; medians of {args.rounds} rounds, bars show the range"
    )
    print(f"{title}\n")
    print(table(results))
    if args.plot:
        plot(results, args.plot, title)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
