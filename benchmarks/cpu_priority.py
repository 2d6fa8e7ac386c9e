"""CPU-heavy deferred work next to requests: process children below the server, or threads.

    python benchmarks/cpu_priority.py [--rounds 3] [--seconds 6] [--ping-rate 200]
                                      [--loads paced,wrk] [--variants ...]

One uvicorn worker serves `/ping` and `/cpu`, which defers 50 ms of CPU (a
spin on the thread's CPU clock) to the process executor, its children at
`process_priority="idle"` (SCHED_IDLE on Linux) or "normal", or to the thread
pool (8 threads). For each, in one run, rounds interleaved, a fresh server:

- `/ping` alone over 16 connections: its p99 and req/s idle;
- then the same `/ping` traffic while `/cpu` is requested faster than the
  cores can run the tasks (their backlog never empties): its p99 and req/s
  under load, and how much CPU the tasks got.

Two kinds of `/ping` traffic, each a table: paced (PING_RATE a second, light
requests next to heavy tasks) and wrk's closed loop (requests that would take
a whole core, where the tasks compete with the server for CPU).

CPU accounting over the loaded window, from /proc: the machine's busy time
(`/proc/stat`), the server's own (its threads), its descendants' (the
children, which run the tasks), and this script's (the load generator). What
the requests leave free is cores x wall - the server - the load generator -
every other process on the machine (which may be busy: this machine is shared,
and what others used is printed). The tasks' CPU is the children's CPU for
the process executor, and 50 ms per finished task for the thread pool, whose
tasks run inside the server (so its "server CPU" is an estimate, and may come
out slightly below 0). Targets (issue 12): p99 under load within 2x of
idle, and the tasks getting at least 90% of the free CPU.

Paced latency is measured from each request's send on its keep-alive
connection (a slow answer delays that connection's next request, as with
wrk). A p99 of inf: the server answered no request in the window. Linux
only (it reads /proc). Traffic goes to 127.0.0.1 only; every run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from _load import (
    APPS,
    TICK,
    descendants,
    get_json,
    percentile,
    process_cpu,
    serve,
    spread,
    table_head,
    uvicorn,
    wrk,
)

TASK_CPU = 0.05
CONNECTIONS = 16
#: Requests for a task per second: more than the cores can run (2 cores: 40/s).
CPU_RATE_PER_CORE = 30
IDLE_SECONDS = 4.0  # of /ping alone
RAMP = 1.5  # seconds of load before the window: children started, backlog built
VARIANTS = {
    "process (idle)": {"BENCH_EXECUTOR": "process", "JUMPQUEUE_PROCESS_PRIORITY": "idle"},
    "process (normal)": {"BENCH_EXECUTOR": "process", "JUMPQUEUE_PROCESS_PRIORITY": "normal"},
    "thread pool": {"BENCH_EXECUTOR": "thread"},
}
COMMON_ENV = {
    "PYTHONPATH": str(APPS),  # the children import the task's module by name
    "JUMPQUEUE_MAX_PENDING": "100000",
    "JUMPQUEUE_MAX_QUEUE_WAIT": "none",
    "JUMPQUEUE_SHUTDOWN_TIMEOUT": "0.5",
}


@dataclasses.dataclass
class Round:
    """What one variant showed in one round."""

    idle: tuple[float, float]  # /ping alone: p99 ms, req/s
    loaded: tuple[float, float]  # /ping with the tasks: p99 ms, req/s
    task_cpu: float  # seconds of CPU the tasks got in the window
    free_cpu: float  # seconds of CPU the requests left free in the window
    others: float  # share of the machine other processes used in the window
    server: float  # seconds of CPU of the server (tasks excluded), in the window
    wall: float  # seconds the window lasted

    @property
    def ratio(self) -> float:
        return self.loaded[0] / self.idle[0]

    @property
    def rate_ratio(self) -> float:
        return self.loaded[1] / self.idle[1]

    @property
    def share(self) -> float:
        return self.task_cpu / self.free_cpu


# -- CPU accounting ---------------------------------------------------------------------------


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


@dataclasses.dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: float
    server: float
    children: dict[int, float]
    client: float
    finished: int


def snapshot(server: int, port: int) -> Snapshot:
    return Snapshot(
        time.monotonic(),
        machine_busy(),
        process_cpu(server),
        {pid: process_cpu(pid) for pid in descendants(server)},
        time.process_time() + sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]),
        get_json(port, "/stats")["succeeded"],
    )


# -- load -------------------------------------------------------------------------------------


async def paced(port: int, path: str, connections: int, rate: float, until: float) -> list[float]:
    """Requests at `rate` per second over keep-alive connections until `until`; latencies (ms)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    interval = connections / rate

    async def connection(offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        due = time.monotonic() + offset
        try:
            while due < until:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                sent = time.monotonic()
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                if not head.startswith("http/1.1 200"):
                    raise RuntimeError(f"{path} answered {head.splitlines()[0]}")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in head.splitlines()
                    if line.startswith("content-length:")
                )
                await reader.readexactly(length)
                latencies.append((time.monotonic() - sent) * 1000)
                due = max(due + interval, time.monotonic())
        finally:
            writer.close()

    await asyncio.gather(*(connection(i * interval / connections) for i in range(connections)))
    return latencies


Pinger = Callable[
    [int, float], Coroutine[Any, Any, tuple[float, float]]
]  # (port, s) -> p99 ms, req/s


def paced_pinger(rate: float) -> Pinger:
    async def ping(port: int, seconds: float) -> tuple[float, float]:
        latencies = await paced(port, "/ping", CONNECTIONS, rate, time.monotonic() + seconds)
        return percentile(latencies, 0.99), len(latencies) / seconds

    return ping


def wrk_pinger(folder: Path) -> Pinger:
    load = wrk([], folder)

    async def ping(port: int, seconds: float) -> tuple[float, float]:
        result = await asyncio.to_thread(load, port, "/ping", CONNECTIONS, seconds)
        if not result.requests:  # the server answered none (wrk then reports no latency)
            return math.inf, 0.0
        return result.p99, result.rate

    return ping


async def loaded(
    port: int, server: int, ping: Pinger, seconds: float
) -> tuple[tuple[float, float], Snapshot, Snapshot]:
    """/ping while /cpu comes faster than the cores run it; the window's snapshots."""
    until = time.monotonic() + RAMP + seconds + 1.0
    cpu_rate = CPU_RATE_PER_CORE * (os.cpu_count() or 1)
    feeding = asyncio.ensure_future(paced(port, "/cpu", 4, cpu_rate, until))
    await asyncio.sleep(RAMP)
    before = await asyncio.to_thread(snapshot, server, port)
    pings = await ping(port, seconds)
    after = await asyncio.to_thread(snapshot, server, port)
    await feeding
    return pings, before, after


def measure(env: dict[str, str], ping: Pinger, seconds: float, log: Path) -> Round:
    endpoint = uvicorn("bench_cpu:app", "/ping", "CPU", {**COMMON_ENV, **env})
    with serve(endpoint, [], log, grace=10) as server:
        get_json(server.port, "/stats")
        asyncio.run(ping(server.port, 1.0))  # warm up
        idle = asyncio.run(ping(server.port, IDLE_SECONDS))
        pings, before, after = asyncio.run(loaded(server.port, server.pid, ping, seconds))
    wall = after.wall - before.wall
    children = sum(cpu - before.children.get(pid, 0.0) for pid, cpu in after.children.items())
    server_cpu = after.server - before.server
    client = after.client - before.client
    others = (after.busy - before.busy) - server_cpu - children - client
    if env["BENCH_EXECUTOR"] == "thread":
        task_cpu = (after.finished - before.finished) * TASK_CPU
        server_cpu -= task_cpu  # the tasks ran in the server's threads
    else:
        task_cpu = children
    cores = os.cpu_count() or 1
    free = cores * wall - server_cpu - client - max(others, 0.0)
    return Round(idle, pings, task_cpu, free, others / (cores * wall), server_cpu, wall)


def table(results: dict[str, list[Round]]) -> list[str]:
    lines = [
        *table_head(
            "tasks run in",
            "/ping p99 idle",
            "/ping p99 loaded",
            "p99 ratio (target ≤ 2)",
            "/ping req/s, loaded / idle",
            "tasks' CPU / free CPU (target ≥ 0.9)",
            "tasks' CPU, in cores",
            "server CPU, in cores",
            "other processes, of the machine",
        ),
    ]
    for name, rounds in results.items():
        lines.append(
            f"| {name} | {spread([r.idle[0] for r in rounds], '.1f', ' to ')} ms "
            f"| {spread([r.loaded[0] for r in rounds], '.1f', ' to ')} ms "
            f"| {spread([r.ratio for r in rounds], '.2f', ' to ')} "
            f"| {spread([r.rate_ratio for r in rounds], '.2f', ' to ')} "
            f"| {spread([r.share for r in rounds], '.2f', ' to ')} "
            f"| {spread([r.task_cpu / r.wall for r in rounds], '.2f', ' to ')} "
            f"| {spread([r.server / r.wall for r in rounds], '.2f', ' to ')} "
            f"| {spread([100 * r.others for r in rounds], '.0f', ' to ')} % |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="of load per measurement")
    parser.add_argument("--ping-rate", type=float, default=200.0, help="paced /ping per second")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--loads", default="paced,wrk", help="/ping traffic: paced, wrk or both")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    if sys.platform != "linux":
        print("cpu_priority.py reads /proc: Linux only")
        return 0
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        pingers = {
            "paced": (f"/ping paced at {args.ping_rate:g}/s", paced_pinger(args.ping_rate)),
            "wrk": (
                "/ping as fast as it is answered (wrk -t1, closed loop)",
                wrk_pinger(Path(tmp)),
            ),
        }
        loads = {name: pingers[name] for name in args.loads.split(",")}
        results = {load: {name: list[Round]() for name in variants} for load in loads}
        for number in range(args.rounds):
            for load, (_, ping) in loads.items():
                for name, env in variants.items():
                    log = Path(tmp) / f"{number}-{load}-{len(results[load][name])}.log"
                    results[load][name].append(measure(env, ping, args.seconds, log))
    cores = os.cpu_count() or 1
    print(
        f"\n{cores} cores, shared with other work (its share is measured, and not counted as "
        f"free); one uvicorn worker; /ping over {CONNECTIONS} keep-alive connections; /cpu at "
        f"{CPU_RATE_PER_CORE * cores}/s of 50 ms CPU tasks (more than the cores run); "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s, medians (range); Python "
        f"{sys.version.split()[0]}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after."
    )
    for load, (title, _) in loads.items():
        print(f"\n{title}:\n")
        print("\n".join(table(results[load])))
    print(f"\nruntime {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
