"""Client latency of work after the response, over real HTTP, against its peers, in one run.

    python benchmarks/http_latency.py [--rounds 3] [--seconds 3] [--connections 16,64]

Every endpoint answers "ok" and leaves 200 ms of I/O-like work behind it (or
none, for the baseline): `jumpqueue.defer` of `await asyncio.sleep(0.2)`,
Starlette's `BackgroundTasks` of the same coroutine, and Werkzeug's
`call_on_close` of `time.sleep(0.2)`. Each endpoint has its own server process
(apps in `benchmarks/apps/`): uvicorn for Starlette, gunicorn (sync, and
gthread) for Flask. The load is closed-loop keep-alive HTTP/1.1 from `wrk`
(or, when it is missing, a small asyncio client): N connections, each sending
its next request as soon as the previous answer has arrived. Rounds are
interleaved (round, connections, endpoint), so drift hits every endpoint alike;
figures are medians over rounds, and the p99 ratio is the median of the ratios
to the no-task endpoint of the same server measured in the same round.

Then the deferred-task throughput: jumpqueue's thread pool (8 workers) and its
async executor (50 at once) running the 200 ms task under load far above their
capacity (`on_overload="drop"`), in tasks completed per second (from the
server's `/stats`) against the ideal, size / 0.2 s.

Needs the bench extra (`make bench` installs it); `wrk` (Debian's package) is
optional. With two or more CPUs, the load generator is pinned to the first and the
servers to the others. Traffic goes to 127.0.0.1 only, and every run stops by
itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from _load import (
    APPS,
    WRK_SCRIPT,
    Endpoint,
    Generator,
    Load,
    cpu_split,
    get_json,
    python_client,
    serve,
    uvicorn,
    wrk,
)

TASK_SECONDS = 0.2
PAUSE = 0.5  # between two measurements: lets the last tasks of the previous one finish
NO_TASK = "no task"
#: Latency servers: no shedding, the 200 ms coroutines all run at once.
UNBOUNDED = {"JUMPQUEUE_MAX_ASYNC": "100000", "JUMPQUEUE_MAX_PENDING": "100000"}
#: Throughput server: pools far smaller than the load, so they are always full.
POOLS = {
    "JUMPQUEUE_MAX_WORKERS": "8",
    "JUMPQUEUE_MAX_ASYNC": "50",
    "JUMPQUEUE_MAX_PENDING": "64",
    "JUMPQUEUE_ON_OVERLOAD": "drop",
}


def gunicorn(
    kind: str, app: str, path: str, work: str, env: dict[str, str] | None = None
) -> Endpoint:
    threads = ("--threads", "8") if kind == "gthread" else ()
    command = ("gunicorn", "--chdir", str(APPS), "-w", "2", "-k", kind, *threads, app)
    server = f"Flask, gunicorn {kind} -w 2" + (" --threads 8" if threads else "")
    return Endpoint(
        server, work, (*command, "--log-level", "warning"), path, tuple((env or {}).items())
    )


STARLETTE_JUMPQUEUE = uvicorn(
    "bench_starlette:with_jumpqueue", "/jumpqueue", "jumpqueue.defer", UNBOUNDED
)
ENDPOINTS = (
    uvicorn("bench_starlette:plain", "/none", NO_TASK),
    STARLETTE_JUMPQUEUE,
    uvicorn("bench_starlette:plain", "/background", "BackgroundTasks"),
    *(
        endpoint
        for kind in ("sync", "gthread")
        for endpoint in (
            gunicorn(kind, "bench_flask:plain", "/none", NO_TASK),
            gunicorn(
                kind, "bench_flask:with_jumpqueue", "/jumpqueue", "jumpqueue.defer", UNBOUNDED
            ),
            gunicorn(kind, "bench_flask:plain", "/call_on_close", "call_on_close"),
        )
    ),
)
THROUGHPUT = uvicorn("bench_starlette:with_jumpqueue", "/stats", "pools", POOLS)


@dataclasses.dataclass(frozen=True)
class PoolRun:
    """One throughput measurement of a jumpqueue pool."""

    name: str
    size: int
    done: float  # tasks completed per second
    offered: float  # requests per second, each deferring one task
    shed: int

    @property
    def ideal(self) -> float:
        return self.size / TASK_SECONDS


Results = dict[tuple[Endpoint, int], list[Load]]


def measure_latency(
    load: Generator, ports: dict[Endpoint, int], connections: list[int], rounds: int, seconds: float
) -> Results:
    for endpoint, port in ports.items():  # warm up: workers, imports, pools, connections
        load(port, endpoint.path, 16, 1.0)
    results: Results = {}
    for done in range(rounds):
        for count in connections:
            for endpoint, port in ports.items():
                time.sleep(PAUSE)
                results.setdefault((endpoint, count), []).append(
                    load(port, endpoint.path, count, seconds)
                )
        print(f"round {done + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def measure_throughput(
    load: Generator, port: int, pool: tuple[str, str, int], window: float
) -> PoolRun:
    """Tasks completed per second during `window`, under load far above the pool's size."""
    name, path, size = pool
    warm = 1.5
    run: list[Load] = []
    loader = threading.Thread(target=lambda: run.append(load(port, path, 16, warm + window + 0.5)))
    loader.start()
    time.sleep(warm)
    before = get_json(port, "/stats")
    time.sleep(window)
    after = get_json(port, "/stats")
    loader.join()
    deadline = time.monotonic() + 10  # let the pools drain before the next measurement
    while get_json(port, "/stats")["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    shed = sum(after["shed"].values()) - sum(before["shed"].values())
    rate = (after["succeeded"] - before["succeeded"]) / (after["time"] - before["time"])
    return PoolRun(name, size, rate, run[0].rate, shed)


def p99_ratio(results: Results, endpoint: Endpoint, count: int) -> float:
    """Median over rounds of the p99 over that of the same server's no-task endpoint."""
    peer = next(e for e in ENDPOINTS if e.server == endpoint.server and e.work == NO_TASK)
    pairs = zip(results[endpoint, count], results[peer, count], strict=True)
    return statistics.median(a.p99 / b.p99 for a, b in pairs)


def latency_table(results: Results, connections: list[int]) -> list[str]:
    lines = [
        "| server | work after the response | conns | req/s | p50 ms | p99 ms "
        "| p99 x no task | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint in ENDPOINTS:
        for count in connections:
            loads = results[endpoint, count]
            # Fewer answers than connections: some never got one, and the true tail is longer.
            bound = "≥ " if min(x.requests for x in loads) < count else ""
            lines.append(
                f"| {endpoint.server} | {endpoint.work} | {count} "
                f"| {statistics.median(x.rate for x in loads):,.0f} "
                f"| {statistics.median(x.p50 for x in loads):,.1f} "
                f"| {bound}{statistics.median(x.p99 for x in loads):,.1f} "
                f"| {bound}{p99_ratio(results, endpoint, count):.2f} "
                f"| {sum(x.errors for x in loads)} |"
            )
    return lines


def throughput_table(pools: list[PoolRun]) -> list[str]:
    return [
        "| jumpqueue pool | ideal tasks/s | completed tasks/s | x ideal | offered req/s | shed |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {pool.name} | {pool.ideal:.0f} | {pool.done:.1f} | {pool.done / pool.ideal:.3f} "
            f"| {pool.offered:,.0f} | {pool.shed:,} |"
            for pool in pools
        ),
    ]


def verdicts(results: Results, connections: list[int], pools: list[PoolRun]) -> list[str]:
    lines = ["\nTargets (jumpqueue.defer p99 <= 1.2 x no task; throughput >= 0.9 x ideal):"]
    for endpoint in ENDPOINTS:
        for count in connections:
            if endpoint.work == "jumpqueue.defer":
                ratio = p99_ratio(results, endpoint, count)
                verdict = "met" if ratio <= 1.2 else "NOT met"
                lines.append(
                    f"  {endpoint.server}, {count} connections: p99 x {ratio:.2f}, {verdict}"
                )
    for pool in pools:
        verdict = "met" if pool.done >= 0.9 * pool.ideal else "NOT met"
        if pool.offered < 1.5 * pool.ideal:  # each request defers one task
            verdict = "not measured: the server took too few requests to keep the pool full"
        lines.append(f"  {pool.name}: x {pool.done / pool.ideal:.3f} of ideal, {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--window", type=float, default=10.0, help="per throughput measurement")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    connections = [int(x) for x in args.connections.split(",")]
    pinned, client_cpu, server_cpu = cpu_split()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        if use_wrk:
            script = Path(tmp) / "summary.lua"
            script.write_text(WRK_SCRIPT)
            load, client = wrk(client_cpu, script), "wrk -t1"
        else:
            if pinned:
                os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            load, client = python_client, "the asyncio client of this script"
        ports = {
            endpoint: servers.enter_context(
                serve(endpoint, server_cpu, Path(tmp) / f"{i}.log")
            ).port
            for i, endpoint in enumerate((*ENDPOINTS, THROUGHPUT))
        }
        pools_port = ports.pop(THROUGHPUT)
        results = measure_latency(load, ports, connections, args.rounds, args.seconds)
        accounted = get_json(ports[STARLETTE_JUMPQUEUE], "/stats")
        pools = [
            ("thread pool, 8 workers, `time.sleep(0.2)`", "/jumpqueue-thread", 8),
            ("async executor, 50 at once, `asyncio.sleep(0.2)`", "/jumpqueue", 50),
        ]
        throughput = [measure_throughput(load, pools_port, pool, args.window) for pool in pools]
    runtime, load_after = time.monotonic() - started, os.getloadavg()[0]

    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("starlette", "uvicorn", "flask", "gunicorn")
    )
    print(
        f"\n{os.cpu_count()} cores; load from {client}, servers pinned apart: {pinned}; "
        f"closed loop, keep-alive; {args.rounds} interleaved rounds of {args.seconds:g} s per "
        f"endpoint and connection count, medians over rounds; Python {sys.version.split()[0]}, "
        f"{versions}; deferred task: 200 ms of waiting; load average "
        f"{load_before:.1f} before, {load_after:.1f} after.\n"
    )
    print("\n".join(latency_table(results, connections)))
    print(
        f"\njumpqueue under uvicorn, whole run: {accounted['submitted']} deferred, "
        f"{accounted['succeeded']} succeeded, {sum(accounted['shed'].values())} shed."
    )
    print(f"\nDeferred-task throughput, {args.window:g} s under 16 connections, drop policy:\n")
    print("\n".join(throughput_table(throughput)))
    print("\n".join(verdicts(results, connections, throughput)))
    print(f"\nruntime {runtime:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
