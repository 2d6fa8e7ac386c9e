"""CPU-heavy deferred work next to requests: process children below the server, or threads.

    python benchmarks/cpu_priority.py [--rounds 3] [--seconds 6] [--ping-rate 200]

One uvicorn worker serves `/ping` and `/cpu`, which defers 50 ms of CPU (a
spin on the thread's CPU clock) to the process executor, its children at
`process_priority="idle"` (SCHED_IDLE on Linux) or "normal", or to the thread
pool (8 threads). For each, in one run, rounds interleaved, a fresh server:

- `/ping` alone at a steady rate over 16 connections: its p99 idle;
- then the same `/ping` traffic while `/cpu` is requested faster than the
  cores can run the tasks (their backlog never empties): its p99 under load,
  and how much CPU the tasks got.

CPU accounting over the loaded window, from /proc: the machine's busy time
(`/proc/stat`), the server's own (its threads), its descendants' (the
children, which run the tasks), and this script's (the load generator). What
the requests leave free is cores x wall - the server - the load generator -
every other process on the machine (which may be busy: this machine is shared,
and what others used is printed). The tasks' CPU is the children's CPU for
the process executor, and 50 ms per finished task for the thread pool, whose
tasks run inside the server. Targets (issue 12): p99 under load within 2x of
idle, and the tasks getting at least 90% of the free CPU.

Latency is measured from each request's send on a paced keep-alive connection
(a slow answer delays that connection's next request, as with wrk). Linux
only (it reads /proc). Traffic goes to 127.0.0.1 only; every run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _load import APPS, get_json, serve, uvicorn

TASK_CPU = 0.05
CONNECTIONS = 16
#: Requests for a task per second: more than the cores can run (2 cores: 40/s).
CPU_RATE_PER_CORE = 30
RAMP = 1.5  # seconds of load before the window: children started, backlog built
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
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

    idle_p99: float  # ms
    load_p99: float  # ms
    task_cpu: float  # seconds of CPU the tasks got in the window
    free_cpu: float  # seconds of CPU the requests left free in the window
    others: float  # share of the machine other processes used in the window
    server: float  # seconds of CPU of the server (tasks excluded), in the window
    wall: float  # seconds the window lasted

    @property
    def ratio(self) -> float:
        return self.load_p99 / self.idle_p99

    @property
    def share(self) -> float:
        return self.task_cpu / self.free_cpu


# -- CPU accounting ---------------------------------------------------------------------------


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def process_cpu(pid: int) -> float:
    """Seconds of CPU a process's threads have used (its children not counted); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(root: int) -> list[int]:
    """Every live process below root."""
    below: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            below.setdefault(ppid, []).append(int(entry.name))
    found, parents = [], [root]
    while parents:
        for pid in below.get(parents.pop(), []):
            found.append(pid)
            parents.append(pid)
    return found


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
        time.process_time(),
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


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def loaded(
    port: int, server: int, rate: float, seconds: float
) -> tuple[list[float], Snapshot, Snapshot]:
    """/ping at `rate` while /cpu comes faster than the cores run it; the window's snapshots."""
    start = time.monotonic()
    until = start + RAMP + seconds
    cpu_rate = CPU_RATE_PER_CORE * (os.cpu_count() or 1)
    feeding = asyncio.ensure_future(paced(port, "/cpu", 4, cpu_rate, until + 0.5))
    await asyncio.sleep(RAMP)
    before = await asyncio.to_thread(snapshot, server, port)
    pings = await paced(port, "/ping", CONNECTIONS, rate, until)
    after = await asyncio.to_thread(snapshot, server, port)
    await feeding
    return pings, before, after


def measure(env: dict[str, str], rate: float, seconds: float, log: Path) -> Round:
    endpoint = uvicorn("bench_cpu:app", "/ping", "CPU", {**COMMON_ENV, **env})
    with serve(endpoint, [], log, grace=10) as server:
        get_json(server.port, "/stats")
        idle = asyncio.run(paced(server.port, "/ping", CONNECTIONS, rate, time.monotonic() + 4))
        pings, before, after = asyncio.run(loaded(server.port, server.pid, rate, seconds))
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
    return Round(p99(idle), p99(pings), task_cpu, free, others / (cores * wall), server_cpu, wall)


def spread(values: list[float], form: str) -> str:
    ordered = sorted(values)
    middle = statistics.median(ordered)
    return f"{middle:{form}} ({ordered[0]:{form}} to {ordered[-1]:{form}})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="of load per measurement")
    parser.add_argument("--ping-rate", type=float, default=200.0, help="/ping requests per second")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    if sys.platform != "linux":
        print("cpu_priority.py reads /proc: Linux only")
        return 0
    started, load_before = time.monotonic(), os.getloadavg()[0]
    results: dict[str, list[Round]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            for name, env in variants.items():
                log = Path(tmp) / f"{number}-{len(results[name])}.log"
                results[name].append(measure(env, args.ping_rate, args.seconds, log))
    cores = os.cpu_count() or 1
    print(
        f"\n{cores} cores, shared with other work (its share is measured, and not counted as "
        f"free); one uvicorn worker; /ping at {args.ping_rate:g}/s over {CONNECTIONS} "
        f"connections; /cpu at {CPU_RATE_PER_CORE * cores}/s of 50 ms CPU tasks (more than the "
        f"cores run); {args.rounds} interleaved rounds of {args.seconds:g} s, medians "
        f"(range); Python {sys.version.split()[0]}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.\n"
    )
    print(
        "| tasks run in | /ping p99 idle | /ping p99 loaded | ratio (target ≤ 2) "
        "| tasks' CPU / free CPU (target ≥ 0.9) | tasks' CPU, in cores | server CPU, in cores "
        "| other processes, of the machine |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rounds in results.items():
        print(
            f"| {name} | {spread([r.idle_p99 for r in rounds], '.1f')} ms "
            f"| {spread([r.load_p99 for r in rounds], '.1f')} ms "
            f"| {spread([r.ratio for r in rounds], '.2f')} "
            f"| {spread([r.share for r in rounds], '.2f')} "
            f"| {spread([r.task_cpu / r.wall for r in rounds], '.2f')} "
            f"| {spread([r.server / r.wall for r in rounds], '.2f')} "
            f"| {spread([100 * r.others for r in rounds], '.0f')} % |"
        )
    print(f"\nruntime {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
