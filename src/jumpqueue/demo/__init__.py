"""`jumpqueue demo`: a real server taking a spike far past its capacity, and healing by itself.

Starts uvicorn with the demo application (`jumpqueue.demo.app`), offers it a
steady load, then ten times more, then the steady load again, from a real HTTP
client, and prints each second what the client saw (latency, 503s) and what
the runtime did (pending, running, done). The server's status page (see
`jumpqueue.status`) is mounted: open it in a browser while the spike runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

#: (name, seconds, requests offered per second)
PHASES = (("steady", 5.0, 20), ("spike x10", 10.0, 200), ("steady again", 10.0, 20))
MAX_IN_FLIGHT = 256
REQUEST_TIMEOUT = 10.0
#: Where the demo application mounts its status page.
STATUS_PATH = "/jumpqueue/status"


@dataclasses.dataclass
class Second:
    """What one second of the demo looked like."""

    t: float
    phase: str
    offered: int = 0
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    pending: int = 0
    running: int = 0
    done: int = 0

    def percentile(self, share: float) -> float:
        """Latency in milliseconds at `share` (0.5 for the median)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(*, seconds: float | None = None, plot: Path | None = None) -> int:
    """Run the demo; returns 0 when every call the server accepted is accounted for."""
    try:
        import httpx  # noqa: PLC0415 -- the demo extra
    except ImportError:  # pragma: no cover -- the demo extra is missing
        print("jumpqueue demo needs the demo extra: pip install 'jumpqueue[demo]'")
        return 2
    scale = 1.0 if seconds is None else seconds / sum(p[1] for p in PHASES)
    with _server() as base_url:
        print(
            f"status page, live while the demo runs: {base_url}{STATUS_PATH}?html "
            f"(text: {base_url}{STATUS_PATH}, or: jumpqueue top {base_url}{STATUS_PATH})\n",
            flush=True,
        )
        timeline = asyncio.run(_drive(httpx, base_url, scale))
        final = _drained_stats(httpx, base_url)
        page = httpx.get(f"{base_url}{STATUS_PATH}?json", timeout=REQUEST_TIMEOUT).json()
    _summary(timeline, final)
    print(
        f"status page: {page['accepted']} calls accepted, {page['backlog_full']} times the "
        f"backlog was full, max {page['max_pending']} in flight of {page['pending_limit']}"
    )
    if plot is not None:
        _plot(timeline, plot)
        print(f"timeline written to {plot}")
    accounted = final["submitted"] == (
        final["succeeded"]
        + final["failed"]
        + final["timed_out"]
        + sum(final["shed"].values())
        + final["skipped"]
        + final["abandoned"]
        + final["held"]
        + final["pending"]
        + final["running"]
    )
    return 0 if accounted else 1


@contextlib.contextmanager
def _server() -> Iterator[str]:
    # A port, not a passed file descriptor: uvicorn takes an inherited socket for a Unix
    # socket and leaves Nagle's algorithm on, which costs every response 40 ms.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "jumpqueue.demo.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command)  # noqa: S603
    try:
        _wait_until_ready(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover -- uvicorn ignored SIGTERM
            server.kill()
            server.wait()


def _drained_stats(httpx: Any, base_url: str) -> dict[str, Any]:
    """The server's stats once its last calls have finished (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        stats: dict[str, Any] = httpx.get(f"{base_url}/stats", timeout=REQUEST_TIMEOUT).json()
        if stats["pending"] + stats["running"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def _wait_until_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the demo server exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("the demo server did not start within 20 s")


async def _drive(httpx: Any, base_url: str, scale: float) -> list[Second]:
    client = httpx.AsyncClient(
        base_url=base_url,
        timeout=REQUEST_TIMEOUT,
        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT),
    )
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    timeline: list[Second] = []
    pending: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    print(
        f"{'t':>4}  {'phase':<13}{'offered':>8}{'ok':>6}{'503':>6}{'err':>5}"
        f"{'p50 ms':>8}{'p99 ms':>8}   {'pending':>7}{'running':>8}{'done':>7}"
    )

    async def request(second: Second) -> None:
        sent = time.monotonic()
        try:
            response = await client.post("/signup")
        except Exception:  # noqa: BLE001 -- counted, the demo goes on
            second.errors += 1
        else:
            second.latencies.append(time.monotonic() - sent)
            if response.status_code == HTTPStatus.OK:
                second.ok += 1
            elif response.status_code == HTTPStatus.SERVICE_UNAVAILABLE:
                second.rejected += 1
            else:
                second.errors += 1
        finally:
            slots.release()

    async with client:
        for phase, duration, rate in PHASES:
            phase_end = time.monotonic() + duration * scale
            while time.monotonic() < phase_end:
                second = Second(t=time.monotonic() - start, phase=phase)
                second_end = min(phase_end, time.monotonic() + 1.0)
                interval = 1.0 / rate
                next_send = time.monotonic()
                while time.monotonic() < second_end:
                    await slots.acquire()
                    second.offered += 1
                    task = asyncio.create_task(request(second))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    next_send += interval
                    await asyncio.sleep(max(0.0, next_send - time.monotonic()))
                stats = (await client.get("/stats")).json()
                second.pending, second.running = stats["pending"], stats["running"]
                second.done = stats["succeeded"]
                timeline.append(second)
                _print(second)
        await asyncio.gather(*pending)
    return timeline


def _print(second: Second) -> None:
    print(
        f"{second.t:4.0f}  {second.phase:<13}{second.offered:>8}{second.ok:>6}"
        f"{second.rejected:>6}{second.errors:>5}{second.percentile(0.5):>8.0f}"
        f"{second.percentile(0.99):>8.0f}   {second.pending:>7}{second.running:>8}"
        f"{second.done:>7}",
        flush=True,
    )


def _summary(timeline: list[Second], final: dict[str, Any]) -> None:
    by_phase: dict[str, list[Second]] = {}
    for second in timeline:
        by_phase.setdefault(second.phase, []).append(second)
    print()
    for phase, seconds in by_phase.items():
        latencies = [x for s in seconds for x in s.latencies]
        median = 1000 * statistics.median(latencies) if latencies else 0.0
        print(
            f"{phase:<13} {sum(s.offered for s in seconds):>5} requests, "
            f"{sum(s.rejected for s in seconds):>4} answered 503, "
            f"{sum(s.errors for s in seconds):>3} errors, median latency {median:.0f} ms"
        )
    print(
        f"\nserver: submitted {final['submitted']}, succeeded {final['succeeded']}, "
        f"shed {final['shed']}, pending {final['pending']}, running {final['running']} "
        "- the backlog drained by itself, with no restart."
    )


def _plot(timeline: list[Second], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 -- the demo extra

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    t = [s.t for s in timeline]
    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(t, [s.percentile(0.5) for s in timeline], label="p50 latency (ms)")
    top.plot(t, [s.percentile(0.99) for s in timeline], label="p99 latency (ms)")
    top.set_ylabel("client latency (ms)")
    top.legend()
    bottom.plot(t, [s.offered for s in timeline], label="requests offered / s")
    bottom.plot(t, [s.rejected for s in timeline], label="503 / s")
    bottom.plot(t, [s.pending for s in timeline], label="tasks pending")
    bottom.plot(t, [s.running for s in timeline], label="tasks running")
    bottom.set_xlabel("seconds")
    bottom.legend()
    figure.suptitle("jumpqueue demo: a spike x10 past capacity, absorbed, then healed")
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


__all__ = ["run"]
