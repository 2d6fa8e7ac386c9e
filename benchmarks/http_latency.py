"""Request overhead and client latency of work after the response, over real HTTP, in one run.

    python benchmarks/http_latency.py [--rounds 3] [--seconds 3] [--connections 16,64]

Each server runs endpoints side by side: the no-task baseline, jumpqueue's
middleware (or Flask extension) alone, the middleware with one `defer()` of a
no-op per request, and the framework's own way to run the same no-op after the
response (Starlette's `BackgroundTasks`, Werkzeug's `call_on_close`); then
200 ms of I/O-like work after each response, deferred (`await
asyncio.sleep(0.2)`) or in `BackgroundTasks` (the same), or `call_on_close`
(`time.sleep(0.2)`). Each endpoint has its
own server process (apps in `benchmarks/apps/`): uvicorn for Starlette,
gunicorn (sync, 2 workers) for Flask. The load is closed-loop keep-alive
HTTP/1.1 from `wrk` (or, when it is missing, a small asyncio client): N
connections, each sending its next request as soon as the previous answer has
arrived. Rounds are interleaved (round, connections, endpoint), so drift hits
every endpoint alike; figures are medians over rounds with their range, and
each ratio is the median of the per-round ratios to the same server's no-task
endpoint (or its peer) measured in the same round. The server's CPU time per
request comes from /proc (user + system of the server and its workers over the
measurement, divided by the requests answered).

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
import asyncio
import contextlib
import dataclasses
import gc
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from _load import (
    APPS,
    Endpoint,
    Generator,
    Load,
    callgrind,
    client,
    cpu_split,
    get_json,
    serve,
    spread,
    table_head,
    tree_cpu,
    uvicorn,
)

TASK_SECONDS = 0.2
PAUSE = 0.5  # between two measurements: lets the last tasks of the previous one finish
NO_TASK = "no task"
ALONE = "jumpqueue middleware alone"
DEFER_NOOP = "jumpqueue.defer, no-op"
DEFER_200 = "jumpqueue.defer, 200 ms"
#: Latency servers: no shedding, the 200 ms coroutines all run at once.
UNBOUNDED = {"JUMPQUEUE_MAX_ASYNC": "100000", "JUMPQUEUE_MAX_PENDING": "100000"}
#: Throughput server: pools far smaller than the load, so they are always full.
POOLS = {
    "JUMPQUEUE_MAX_WORKERS": "8",
    "JUMPQUEUE_MAX_ASYNC": "50",
    "JUMPQUEUE_MAX_PENDING": "64",
    "JUMPQUEUE_ON_OVERLOAD": "drop",
}
GUNICORN = "Flask, gunicorn sync -w 2"


def gunicorn(app: str, path: str, work: str, env: dict[str, str] | None = None) -> Endpoint:
    command = ("gunicorn", "--chdir", str(APPS), "-w", "2", "-k", "sync", app)
    return Endpoint(
        GUNICORN, work, (*command, "--log-level", "warning"), path, tuple((env or {}).items())
    )


STARLETTE_JUMPQUEUE = uvicorn(
    "bench_starlette:with_jumpqueue", "/jumpqueue-noop", DEFER_NOOP, UNBOUNDED
)
ENDPOINTS = (
    uvicorn("bench_starlette:plain", "/none", NO_TASK),
    uvicorn("bench_starlette:with_jumpqueue", "/none", ALONE, UNBOUNDED),
    STARLETTE_JUMPQUEUE,
    uvicorn("bench_starlette:plain", "/background-noop", "BackgroundTasks, no-op"),
    uvicorn("bench_starlette:with_jumpqueue", "/jumpqueue", DEFER_200, UNBOUNDED),
    uvicorn("bench_starlette:plain", "/background", "BackgroundTasks, 200 ms"),
    gunicorn("bench_flask:plain", "/none", NO_TASK),
    gunicorn("bench_flask:with_jumpqueue", "/none", ALONE, UNBOUNDED),
    gunicorn("bench_flask:with_jumpqueue", "/jumpqueue-noop", DEFER_NOOP, UNBOUNDED),
    gunicorn("bench_flask:plain", "/call_on_close-noop", "call_on_close, no-op"),
    gunicorn("bench_flask:with_jumpqueue", "/jumpqueue", DEFER_200, UNBOUNDED),
    gunicorn("bench_flask:plain", "/call_on_close", "call_on_close, 200 ms"),
)
#: Each jumpqueue endpoint and the peer that does the same work its framework's own way.
PEERS = {
    ("Starlette, uvicorn", DEFER_NOOP): "BackgroundTasks, no-op",
    ("Starlette, uvicorn", DEFER_200): "BackgroundTasks, 200 ms",
    (GUNICORN, DEFER_NOOP): "call_on_close, no-op",
    (GUNICORN, DEFER_200): "call_on_close, 200 ms",
}
THROUGHPUT = uvicorn("bench_starlette:with_jumpqueue", "/stats", "pools", POOLS)


@dataclasses.dataclass(frozen=True)
class Measured:
    """One measurement of an endpoint: what the client saw, and the server's CPU time."""

    load: Load
    cpu: float  # seconds of the server's CPU (all its processes) during the load

    @property
    def cpu_per_request(self) -> float:
        """Microseconds of the server's CPU per answered request."""
        return self.cpu / max(1, self.load.requests) * 1e6


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


Results = dict[tuple[Endpoint, int], list[Measured]]


def measure_latency(
    load: Generator,
    servers: dict[Endpoint, tuple[int, int]],
    connections: list[int],
    rounds: int,
    seconds: float,
) -> Results:
    for endpoint, (port, _) in servers.items():  # warm up: workers, imports, pools, connections
        load(port, endpoint.path, 16, 1.0)
    results: Results = {}
    for done in range(rounds):
        for count in connections:
            for endpoint, (port, pid) in servers.items():
                time.sleep(PAUSE)
                before = tree_cpu(pid)
                seen = load(port, endpoint.path, count, seconds)
                measured = Measured(seen, tree_cpu(pid) - before)
                results.setdefault((endpoint, count), []).append(measured)
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


def peer_of(endpoint: Endpoint, work: str) -> Endpoint:
    return next(e for e in ENDPOINTS if e.server == endpoint.server and e.work == work)


def ratios(
    results: Results, endpoint: Endpoint, peer: Endpoint, count: int, field: str
) -> list[float]:
    """Per round: the endpoint's `field` over the peer's."""
    pairs = zip(results[endpoint, count], results[peer, count], strict=True)
    return [_field(a, field) / _field(b, field) for a, b in pairs]


def _field(measured: Measured, field: str) -> float:
    return measured.cpu_per_request if field == "cpu" else float(getattr(measured.load, field))


def latency_table(results: Results, connections: list[int]) -> list[str]:
    lines = [
        *table_head(
            "server",
            "work after the response",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "req/s x no task",
            "p99 x no task",
            "server CPU µs/req",
            "CPU x no task",
            "errors",
            text=2,
        ),
    ]
    for endpoint in ENDPOINTS:
        base = peer_of(endpoint, NO_TASK)
        for count in connections:
            runs = results[endpoint, count]
            # Fewer answers than connections: some never got one, and the true tail is longer.
            bound = "≥ " if min(x.load.requests for x in runs) < count else ""
            lines.append(
                f"| {endpoint.server} | {endpoint.work} | {count} "
                f"| {spread([x.load.rate for x in runs], ',.0f')} "
                f"| {statistics.median(x.load.p50 for x in runs):,.1f} "
                f"| {bound}{spread([x.load.p99 for x in runs], ',.1f')} "
                f"| {spread(ratios(results, endpoint, base, count, 'rate'), ',.2f')} "
                f"| {bound}{spread(ratios(results, endpoint, base, count, 'p99'), ',.2f')} "
                f"| {spread([x.cpu_per_request for x in runs], ',.0f')} "
                f"| {spread(ratios(results, endpoint, base, count, 'cpu'), ',.2f')} "
                f"| {sum(x.load.errors for x in runs)} |"
            )
    return lines


def throughput_table(pools: list[PoolRun]) -> list[str]:
    return [
        *table_head(
            "jumpqueue pool",
            "ideal tasks/s",
            "completed tasks/s",
            "x ideal",
            "offered req/s",
            "shed",
        ),
        *(
            f"| {pool.name} | {pool.ideal:.0f} | {pool.done:.1f} | {pool.done / pool.ideal:.3f} "
            f"| {pool.offered:,.0f} | {pool.shed:,} |"
            for pool in pools
        ),
    ]


def verdicts(results: Results, connections: list[int], pools: list[PoolRun]) -> list[str]:
    """Each target, met or not, from the medians of the per-round ratios."""
    lines = ["\nTargets (medians of the per-round ratios):"]
    for endpoint in ENDPOINTS:
        peer_work = PEERS.get((endpoint.server, endpoint.work))
        if peer_work is None:
            continue
        base, peer = peer_of(endpoint, NO_TASK), peer_of(endpoint, peer_work)
        for count in connections:
            where = f"  {endpoint.server}, {endpoint.work}, {count} conns:"
            cost = 1 - statistics.median(ratios(results, endpoint, base, count, "rate"))
            p99 = statistics.median(ratios(results, endpoint, base, count, "p99"))
            rate_peer = statistics.median(ratios(results, endpoint, peer, count, "rate"))
            p99_peer = statistics.median(ratios(results, endpoint, peer, count, "p99"))
            checks = [
                (f"req/s cost {cost:.1%} of no task (<= 5%)", cost <= 0.05),
                (f"req/s x {peer.work} {rate_peer:.2f} (>= 1)", rate_peer >= 1),
                (f"p99 x {peer.work} {p99_peer:.2f} (<= 1)", p99_peer <= 1),
                (f"p99 x no task {p99:.2f} (<= 1.2)", p99 <= 1.2),
            ]
            lines.append(
                f"{where} " + "; ".join(f"{t}: {'met' if ok else 'NOT met'}" for t, ok in checks)
            )
    lines += budget(results, connections)
    for pool in pools:
        verdict = "met" if pool.done >= 0.9 * pool.ideal else "NOT met"
        if pool.offered < 1.5 * pool.ideal:  # each request defers one task
            verdict = "not measured: the server took too few requests to keep the pool full"
        lines.append(f"  {pool.name}: x {pool.done / pool.ideal:.3f} of ideal, {verdict}")
    return lines


def budget(results: Results, connections: list[int]) -> list[str]:
    """What the 5% req/s budget allows a deferred call on a server busy on its core.

    A server that uses its core whole answers 1 / (CPU per request) requests a
    second; a deferred call that adds c µs of CPU to each request costs
    c / (CPU per request + c) of that rate, so at most 5% needs c at most
    about 5.3% of a no-task request's CPU.
    """
    lines = ["\nCPU budget of one deferred no-op (medians over rounds):"]
    for endpoint in ENDPOINTS:
        if endpoint.work != DEFER_NOOP:
            continue
        base, alone = peer_of(endpoint, NO_TASK), peer_of(endpoint, ALONE)
        for count in connections:
            cpu_base = statistics.median(x.cpu_per_request for x in results[base, count])
            cpu_alone = statistics.median(x.cpu_per_request for x in results[alone, count])
            cpu_defer = statistics.median(x.cpu_per_request for x in results[endpoint, count])
            busy = statistics.median(x.cpu / x.load.seconds for x in results[base, count])
            rate = statistics.median(x.load.rate for x in results[base, count])
            allowed = cpu_base * (1 / 0.95 - 1)
            lines.append(
                f"  {endpoint.server}, {count} conns: no task {cpu_base:.0f} µs/req "
                f"(server busy {busy:.0%} of a core); middleware +{cpu_alone - cpu_base:.0f} µs, "
                f"one defer() +{cpu_defer - cpu_alone:.0f} µs more: "
                f"+{cpu_defer - cpu_base:.0f} µs x {rate:,.0f} req/s = "
                f"{(cpu_defer - cpu_base) * rate / 1e4:.1f}% of a core; "
                f"the 5% budget allows +{allowed:.0f} µs ({allowed * rate / 1e4:.1f}% of a core)"
            )
    return lines


# -- in process: the CPU a request costs, without a server or a network ------------------------

IN_PROCESS_REQUESTS = 4000


def _asgi_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def _asgi_requests(app: Any, path: str) -> Callable[[int], None]:
    """n requests through an ASGI app on one loop, each followed by one turn of the loop."""
    loop = asyncio.new_event_loop()
    scope = _asgi_scope(path)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def serve(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)
            await asyncio.sleep(0)  # what runs after the response runs now

    return lambda n: loop.run_until_complete(serve(n))


def _wsgi_requests(app: Any, path: str) -> Callable[[int], None]:
    """n requests through a WSGI app, the body read and closed as a server does."""
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def start_response(*_: Any) -> None:
        pass

    def serve(n: int) -> None:
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
            time.sleep(0)  # lets a pool thread run what was deferred

    return serve


def in_process_cases() -> dict[tuple[str, str], Callable[[int], None]]:
    """Each in-process case: (framework, work) -> serve n requests."""
    sys.path.insert(0, str(APPS))
    os.environ.update(UNBOUNDED)
    import bench_flask  # the apps import their frameworks
    import bench_starlette

    return {
        ("Starlette", NO_TASK): _asgi_requests(bench_starlette.plain, "/none"),
        ("Starlette", ALONE): _asgi_requests(bench_starlette.with_jumpqueue, "/none"),
        ("Starlette", DEFER_NOOP): _asgi_requests(
            bench_starlette.with_jumpqueue, "/jumpqueue-noop"
        ),
        ("Starlette", "BackgroundTasks, no-op"): _asgi_requests(
            bench_starlette.plain, "/background-noop"
        ),
        ("Flask", NO_TASK): _wsgi_requests(bench_flask.plain, "/none"),
        ("Flask", ALONE): _wsgi_requests(bench_flask.with_jumpqueue, "/none"),
        ("Flask", DEFER_NOOP): _wsgi_requests(bench_flask.with_jumpqueue, "/jumpqueue-noop"),
        ("Flask", "call_on_close, no-op"): _wsgi_requests(bench_flask.plain, "/call_on_close-noop"),
    }


def in_process_table(rounds: int) -> list[str]:
    """CPU µs per request of each endpoint's app called in this process, peers in turn."""
    cases = in_process_cases()
    samples: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for requests in cases.values():
        requests(200)  # warm up
    for _ in range(rounds):
        for case, requests in cases.items():
            gc.collect()
            start = time.process_time()
            requests(IN_PROCESS_REQUESTS)
            samples[case].append((time.process_time() - start) / IN_PROCESS_REQUESTS * 1e6)
    lines = [
        *table_head(
            "app, in process",
            "work after the response",
            "CPU µs/req",
            "+ µs over no task",
            "CPU x no task",
            text=2,
        ),
    ]
    for (framework, work), values in samples.items():
        base = samples[framework, NO_TASK]
        extra = [a - b for a, b in zip(values, base, strict=True)]
        ratio = [a / b for a, b in zip(values, base, strict=True)]
        lines.append(
            f"| {framework} | {work} | {spread(values, ',.1f')} | {spread(extra, ',.1f')} "
            f"| {spread(ratio, ',.2f')} |"
        )
    return lines


def _serve_alone(case: str, requests: int) -> None:
    """`--only`: one in-process case, warmed up, then `requests` requests (for callgrind)."""
    framework, work = case.split(":", 1)
    serve = in_process_cases()[framework, work]
    serve(200)
    serve(requests)


def instructions_table(requests: int) -> list[str]:
    """Instructions per request of each in-process case under callgrind: 2n minus n, over n."""
    lines = table_head(
        "app, in process", "work after the response", "instructions/req", "x no task", text=2
    )
    counts: dict[tuple[str, str], float] = {}
    for framework, work in in_process_cases():
        run = [
            callgrind([__file__, "--only", f"{framework}:{work}", "--requests", str(n)])
            for n in (requests, 2 * requests)
        ]
        counts[framework, work] = count = (run[1] - run[0]) / requests
        lines.append(
            f"| {framework} | {work} | {count:,.0f} | {count / counts[framework, NO_TASK]:.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--window", type=float, default=10.0, help="per throughput measurement")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-throughput", action="store_true", help="latency only")
    parser.add_argument(
        "--in-process-only", action="store_true", help="the CPU per request in process only"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="also count them in process, under callgrind"
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one in-process case, for callgrind
    parser.add_argument("--requests", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        _serve_alone(args.only, args.requests)
        return 0
    in_process = in_process_table(max(args.rounds, 5))
    print("\n".join(in_process))
    if args.instructions and shutil.which("valgrind"):
        print()
        print("\n".join(instructions_table(args.requests)))
    if args.in_process_only:
        return 0
    connections = [int(x) for x in args.connections.split(",")]
    pinned, client_cpu, server_cpu = cpu_split()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        load, generator = client(args.client, client_cpu, Path(tmp))
        servers = {
            endpoint: stack.enter_context(serve(endpoint, server_cpu, Path(tmp) / f"{i}.log"))
            for i, endpoint in enumerate((*ENDPOINTS, THROUGHPUT))
        }
        pools_port = servers.pop(THROUGHPUT).port
        results = measure_latency(
            load,
            {e: (s.port, s.pid) for e, s in servers.items()},
            connections,
            args.rounds,
            args.seconds,
        )
        accounted = get_json(servers[STARLETTE_JUMPQUEUE].port, "/stats")
        pools = [
            ("thread pool, 8 workers, `time.sleep(0.2)`", "/jumpqueue-thread", 8),
            ("async executor, 50 at once, `asyncio.sleep(0.2)`", "/jumpqueue", 50),
        ]
        throughput = (
            []
            if args.no_throughput
            else [measure_throughput(load, pools_port, pool, args.window) for pool in pools]
        )
    runtime, load_after = time.monotonic() - started, os.getloadavg()[0]

    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("starlette", "uvicorn", "flask", "gunicorn")
    )
    print(
        f"\n{os.cpu_count()} cores; load from {generator}, servers pinned apart: {pinned}; "
        f"closed loop, keep-alive; {args.rounds} interleaved rounds of {args.seconds:g} s per "
        f"endpoint and connection count, medians (range) over rounds; Python "
        f"{sys.version.split()[0]}, {versions}; load average "
        f"{load_before:.1f} before, {load_after:.1f} after.\n"
    )
    print("\n".join(latency_table(results, connections)))
    print(
        f"\njumpqueue under uvicorn (no-op endpoint), whole run: {accounted['submitted']} "
        f"deferred, {accounted['succeeded']} succeeded, {sum(accounted['shed'].values())} shed."
    )
    if throughput:
        print(f"\nDeferred-task throughput, {args.window:g} s under 16 connections, drop policy:\n")
        print("\n".join(throughput_table(throughput)))
    print("\n".join(verdicts(results, connections, throughput)))
    print(f"\nruntime {runtime:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
