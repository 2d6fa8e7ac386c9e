"""jumpqueue with its defaults beside Starlette's `BackgroundTasks`, at ordinary load and overload.

    python benchmarks/defaults.py [--rounds 3] [--seconds 3] [--connections 16,64]
                                  [--spike 15] [--after 30]

No `JUMPQUEUE_*` variable reaches the servers, so jumpqueue runs with its
defaults; Starlette runs as it comes. Each server is one uvicorn worker of
its own (apps in `benchmarks/apps/bench_waits_*.py`); each task records how
long it waited to start, from the moment its call was deferred, and the apps
answer these waits on `/stats`. Peak memory is the server's VmHWM.

With defaults: each endpoint defers a 200 ms coroutine (`await
asyncio.sleep(0.2)`), under closed-loop keep-alive load (`wrk`, or a small
asyncio client when it is missing) from 16 and 64 connections, a server per
endpoint and connection count. Rounds are interleaved (round, connections,
endpoint); figures are medians over rounds, ratios to `BackgroundTasks` are
medians of the ratios measured in the same round, and peak memory is the peak
over every round. Targets: no answer other than 2xx where `BackgroundTasks`
has none, and peak memory within 1.2x of it.

Overloaded: each endpoint defers a blocking 200 ms task (`time.sleep(0.2)`)
to 8 threads (jumpqueue's default pool; Starlette's thread limiter is set to
8 too), so at most 40 calls/s can start, while 64 connections send requests
as fast as they are answered (a multiple of that, shown) for `--spike`
seconds. Then, for up to `--after` seconds without load, one request every
half second asks whether the service takes calls again, and whether the call
it took runs. jumpqueue is measured with its defaults, and with `max_pending`
sized to 25 s of the pool's work (1,000 calls) for comparison.

With two or more CPUs, the load generator is pinned to the first CPU and the
servers to the others. Traffic goes to 127.0.0.1 only; every phase has a time
limit, about three minutes in all with the default arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from _load import (
    Endpoint,
    Generator,
    Load,
    Server,
    client,
    cpu_split,
    get,
    get_json,
    memory,
    serve,
    table_head,
    uvicorn,
)

PAUSE = 0.5  # between two measurements: lets the last tasks of the previous one finish
TICK = 0.5  # seconds between two looks at an overloaded server
MIB = 1 << 20
CAPACITY = 8 / 0.2  # calls/s the 8 threads can start with a 200 ms task
MAX_QUEUE_WAIT = 30.0  # jumpqueue's default, the bound on how late a call starts
SIZED_PENDING = 1000  # 25 s of the pool's work

BACKGROUND = uvicorn("bench_waits_background:defaults", "/io", "BackgroundTasks")
JUMPQUEUE = uvicorn("bench_waits_jumpqueue:app", "/io", "jumpqueue.defer, defaults")
OVERLOADED = (
    uvicorn("bench_waits_jumpqueue:app", "/blocking", "jumpqueue.defer, defaults"),
    uvicorn(
        "bench_waits_jumpqueue:app",
        "/blocking",
        f"jumpqueue.defer, max_pending={SIZED_PENDING}",
        {"JUMPQUEUE_MAX_PENDING": str(SIZED_PENDING)},
    ),
    uvicorn("bench_waits_background:pool_of_8", "/blocking", "BackgroundTasks, 8 threads"),
)


@dataclasses.dataclass(frozen=True)
class Served:
    """What one server of the ordinary-load run did: loads per round, memory, waits."""

    loads: list[Load]
    idle_rss: int  # bytes, before any request
    peak_rss: int  # bytes, VmHWM at the end
    waits: dict[str, Any]  # its /stats at the end

    def median(self, field: str) -> float:
        return statistics.median(float(getattr(x, field)) for x in self.loads)


Results = dict[tuple[Endpoint, int], Served]


def ordinary_load(
    load: Generator,
    *,
    cpu: list[str],
    logs: Path,
    connections: list[int],
    rounds: int,
    seconds: float,
) -> Results:
    keys = [(endpoint, count) for count in connections for endpoint in (BACKGROUND, JUMPQUEUE)]
    with contextlib.ExitStack() as stack:
        servers = {
            key: stack.enter_context(serve(key[0], cpu, logs / f"ordinary-{i}.log"))
            for i, key in enumerate(keys)
        }
        idle = {key: memory(server.pid)[0] for key, server in servers.items()}
        for (endpoint, _), server in servers.items():  # warm up: imports, pools, connections
            load(server.port, endpoint.path, 16, 1.0)
        loads: dict[tuple[Endpoint, int], list[Load]] = {key: [] for key in keys}
        for done in range(rounds):
            for key in keys:
                time.sleep(PAUSE)
                loads[key].append(load(servers[key].port, key[0].path, key[1], seconds))
            print(f"round {done + 1}/{rounds} done", file=sys.stderr, flush=True)
        time.sleep(1.0)  # the last tasks finish, and count in the waits
        return {
            key: Served(
                loads[key],
                idle[key],
                memory(server.pid)[1],
                get_json(server.port, "/stats"),
            )
            for key, server in servers.items()
        }


def ratio(results: Results, count: int, field: str) -> float:
    """Median over rounds of jumpqueue's figure over BackgroundTasks' in the same round."""
    pairs = zip(results[JUMPQUEUE, count].loads, results[BACKGROUND, count].loads, strict=True)
    return statistics.median(float(getattr(a, field) / getattr(b, field)) for a, b in pairs)


def ordinary_table(results: Results, connections: list[int]) -> list[str]:
    lines = [
        *table_head(
            "work after the response",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "peak RSS MiB",
            "max wait to start ms",
            "req/s x BT",
            "p99 x BT",
            "peak RSS x BT",
        ),
    ]
    for count in connections:
        for endpoint in (BACKGROUND, JUMPQUEUE):
            served = results[endpoint, count]
            ours = endpoint is JUMPQUEUE
            background = results[BACKGROUND, count]
            lines.append(
                f"| {endpoint.work} | {count} | {served.median('rate'):,.0f} "
                f"| {served.median('p50'):,.1f} | {served.median('p99'):,.1f} "
                f"| {sum(x.non_2xx for x in served.loads)} | {served.peak_rss / MIB:.1f} "
                f"| {1000 * served.waits['max_wait']:,.1f} "
                f"| {ratio(results, count, 'rate') if ours else 1.0:.2f} "
                f"| {ratio(results, count, 'p99') if ours else 1.0:.2f} "
                f"| {served.peak_rss / background.peak_rss:.2f} |"
            )
    return lines


def ordinary_verdicts(results: Results, connections: list[int]) -> list[str]:
    lines = [
        "\nTargets (0 non-2xx where BackgroundTasks has 0; peak RSS <= 1.2 x BackgroundTasks):"
    ]
    for count in connections:
        ours, theirs = results[JUMPQUEUE, count], results[BACKGROUND, count]
        refused = sum(x.non_2xx for x in ours.loads)
        if sum(x.non_2xx for x in theirs.loads):
            verdict = "not applicable: BackgroundTasks had non-2xx too"
        else:
            verdict = "met" if refused == 0 else "NOT met"
        memory_ratio = ours.peak_rss / theirs.peak_rss
        lines.append(
            f"  {count} connections: {refused} non-2xx, {verdict}; peak RSS x {memory_ratio:.2f}, "
            f"{'met' if memory_ratio <= 1.2 else 'NOT met'} (idle: {ours.idle_rss / MIB:.1f} "
            f"against {theirs.idle_rss / MIB:.1f} MiB)"
        )
    return lines


@dataclasses.dataclass(frozen=True)
class Recovery:
    """How the service answered once the spike stopped: a probe request every TICK."""

    taken: float | None  # seconds after the spike until a probe got 2xx
    ran: float | None  # seconds after the spike until that probe's call started
    probes: int
    refused: list[float]  # seconds after the spike of each probe answered other than 2xx


@dataclasses.dataclass(frozen=True)
class Overload:
    """What one server did under a spike of blocking calls, and after it."""

    work: str
    spike: Load
    first_503: float | None  # seconds into the spike when a probe first got 503
    retry_after: str | None  # that answer's Retry-After
    bounds: list[str]  # the bounds jumpqueue logged it shed by
    rss_half: int  # bytes, at half the spike
    rss_shedding: int  # bytes, when the first 503 came (0: none came)
    rss_end: int  # bytes, at its end
    peak_rss: int  # bytes, VmHWM at the end
    last: dict[str, Any]  # its /stats at the end
    watched: float  # seconds from the spike's start to the end
    after: Recovery


def overloaded(
    load: Generator, endpoint: Endpoint, *, cpu: list[str], log: Path, spike: float, after: float
) -> Overload:
    # A server full of waiting calls is killed after a short grace: their fate is measured.
    with serve(endpoint, cpu, log, grace=1.0) as server:
        for _ in range(8):  # warm up (imports, the threads) within the pool's capacity
            get(server.port, endpoint.path)
        time.sleep(1.0)
        start = time.monotonic()
        loads: list[Load] = []
        loader = threading.Thread(
            target=lambda: loads.append(load(server.port, endpoint.path, 64, spike))
        )
        loader.start()
        first_503 = retry_after = None
        rss_shedding = 0
        rss: list[tuple[float, int]] = []
        while loader.is_alive():
            time.sleep(TICK)
            rss.append((time.monotonic() - start, memory(server.pid)[0]))
            if first_503 is None:
                answer = get(server.port, endpoint.path)
                if answer.status == 503:
                    first_503 = time.monotonic() - start
                    retry_after = answer.fields.get("retry-after", "missing")
                    rss_shedding = memory(server.pid)[0]
        loader.join()
        after_spike = recovery(server, endpoint.path, after)
        last = get_json(server.port, "/stats")
        watched = time.monotonic() - start
        peak_rss = memory(server.pid)[1]
    text = log.read_text(errors="replace")
    bounds = [
        bound
        for bound, phrase in (
            ("max_pending", "backlog full"),
            ("max_queue_wait", "wait too long to start"),
        )
        if phrase in text
    ]
    return Overload(
        endpoint.work,
        loads[0],
        first_503,
        retry_after,
        bounds,
        min(rss, key=lambda sample: abs(sample[0] - spike / 2))[1],
        rss_shedding,
        rss[-1][1],
        peak_rss,
        last,
        watched,
        after_spike,
    )


def recovery(server: Server, path: str, limit: float) -> Recovery:
    """Probe until a probe gets 2xx once the first call taken after the spike has started.

    For `limit` s at most.
    """
    stopped = time.monotonic()
    taken = ran = None
    call, probes, refused = "", 0, []
    while (now := time.monotonic()) < stopped + limit:
        answer = get(server.port, path)
        probes += 1
        if answer.status // 100 != 2:
            refused.append(now - stopped)
        elif ran is not None:
            break  # taken again, after a call taken since the spike has run
        elif taken is None:
            taken, call = now - stopped, answer.body.decode()
        if taken is not None and ran is None and started(server, call):
            ran = time.monotonic() - stopped
        else:
            time.sleep(TICK)
    return Recovery(taken, ran, probes, refused)


def started(server: Server, call: str) -> bool:
    return bool(get_json(server.port, f"/stats?call={call}")["call_started"])


def seconds(value: float | None) -> str:
    return "no" if value is None else f"{value:.1f} s"


def overload_tables(runs: list[Overload], spike: float, after: float) -> list[str]:
    lines = [
        f"During the spike ({spike:g} s):\n",
        *table_head(
            "server, 8 threads x 200 ms",
            "req/s",
            "x 40/s",
            "non-2xx",
            "first 503 at",
            "Retry-After",
            "RSS MiB at half the spike",
            "at its end",
            "peak RSS MiB",
        ),
    ]
    lines.extend(
        f"| {run.work} | {run.spike.rate:,.0f} | {run.spike.rate / CAPACITY:.0f} "
        f"| {run.spike.non_2xx:,} | {seconds(run.first_503)} | {run.retry_after or '-'} "
        f"| {run.rss_half / MIB:.1f} | {run.rss_end / MIB:.1f} | {run.peak_rss / MIB:.1f} |"
        for run in runs
    )
    lines += [
        f"\nAfter it (a probe request every {TICK:g} s, for up to {after:g} s, until the call "
        "of the first one answered 2xx has started and a probe is answered 2xx); waits as of "
        "the end:\n",
        *table_head(
            "server",
            "calls started",
            "max / p99 wait to start, s",
            "oldest still waiting, s",
            "still waiting",
            "≈ s to start them",
            "first 2xx",
            "its call started",
            "probes refused (last at)",
        ),
    ]
    for run in runs:
        last, probed = run.last, run.after
        rate = last["started"] / run.watched
        drain = f"{last['waiting'] / rate:,.0f}" if rate else "-"
        lines.append(
            f"| {run.work} | {last['started']:,} | {last['max_wait']:.1f} / {last['p99_wait']:.1f} "
            f"| {last['oldest_waiting']:.1f} | {last['waiting']:,} | {drain} "
            f"| {seconds(probed.taken)} | {seconds(probed.ran)} "
            f"| {len(probed.refused)} of {probed.probes}"
            f"{f' ({probed.refused[-1]:.1f} s)' if probed.refused else ''} |"
        )
    return lines


def overload_verdicts(runs: list[Overload]) -> list[str]:
    lines = [
        "\nTargets (sheds with 503 + Retry-After; from then on RSS grows by 10% at most, to "
        f"the end of the spike; no call waits more than max_queue_wait = {MAX_QUEUE_WAIT:g} s "
        "to start; after the spike a request gets 2xx and its call starts):"
    ]
    for run in runs:
        if not run.work.startswith("jumpqueue"):
            continue
        last = run.last
        worst = max(last["max_wait"], last["oldest_waiting"])
        bounds = ", ".join(run.bounds) or "none"
        checks = [
            (
                f"sheds with 503 + Retry-After (bounds that shed: {bounds})",
                run.retry_after not in (None, "missing"),
            ),
            (
                f"RSS {run.rss_shedding / MIB:.1f} MiB when it began to shed, "
                f"{run.rss_end / MIB:.1f} MiB at the spike's end",
                0 < run.rss_end <= 1.1 * run.rss_shedding,
            ),
            (f"longest wait to start so far {worst:.1f} s", worst <= MAX_QUEUE_WAIT),
            (
                "recovers: a call taken after the spike started, and calls are taken",
                run.after.ran is not None and run.after.probes > len(run.after.refused),
            ),
        ]
        lines.append(f"  {run.work}:")
        lines += [f"    {what}: {'met' if ok else 'NOT met'}" for what, ok in checks]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--spike", type=float, default=15.0, help="seconds of overload")
    parser.add_argument("--after", type=float, default=30.0, help="seconds to wait for recovery")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    connections = [int(x) for x in args.connections.split(",")]
    pinned, client_cpu, server_cpu = cpu_split()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        load, generator = client(args.client, client_cpu, logs)
        results = ordinary_load(
            load,
            cpu=server_cpu,
            logs=logs,
            connections=connections,
            rounds=args.rounds,
            seconds=args.seconds,
        )
        runs = []
        for i, endpoint in enumerate(OVERLOADED):
            log = logs / f"overload-{i}.log"
            run = overloaded(
                load, endpoint, cpu=server_cpu, log=log, spike=args.spike, after=args.after
            )
            runs.append(run)
            print(f"overload {i + 1}/{len(OVERLOADED)} done", file=sys.stderr, flush=True)
    runtime, load_after = time.monotonic() - started, os.getloadavg()[0]

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("starlette", "uvicorn"))
    print(
        f"\n{os.cpu_count()} cores; load from {generator}, servers pinned apart: {pinned}; "
        f"closed loop, keep-alive; one uvicorn worker per server; Python "
        f"{sys.version.split()[0]}, {versions}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after.\n"
    )
    print(
        f"With defaults: a 200 ms coroutine after each response; {args.rounds} interleaved "
        f"rounds of {args.seconds:g} s, medians over rounds; peak RSS over all rounds.\n"
    )
    print("\n".join(ordinary_table(results, connections)))
    print("\n".join(ordinary_verdicts(results, connections)))
    print("\nOverloaded: a blocking 200 ms task after each response, 64 connections.\n")
    print("\n".join(overload_tables(runs, args.spike, args.after)))
    print("\n".join(overload_verdicts(runs)))
    print(f"\nruntime {runtime:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
