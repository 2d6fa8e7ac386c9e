"""Closed-loop HTTP load (wrk or an asyncio client) and local-server helpers for the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "us": %d, "errors": %d, "p50": %d, "p99": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclasses.dataclass(frozen=True)
class Load:
    """What the client saw during one measurement."""

    requests: int
    seconds: float
    errors: int
    p50: float  # ms
    p99: float  # ms

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


Generator = Callable[[int, str, int, float], Load]  # (port, path, connections, seconds)


def cpu_split() -> tuple[bool, list[str], list[str]]:
    """Whether to pin, and the `taskset` prefixes of the client (first CPU) and servers (rest)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = len(cpus) >= 2 and shutil.which("taskset") is not None
    client_cpu = ["taskset", "-c", str(cpus[0])] if pinned else []
    server_cpu = ["taskset", "-c", ",".join(map(str, cpus[1:]))] if pinned else []
    return pinned, client_cpu, server_cpu


def wrk(cpu: list[str], script: Path) -> Generator:
    def run(port: int, path: str, connections: int, seconds: float) -> Load:
        command = [*cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
        command += ["-s", str(script), f"http://127.0.0.1:{port}{path}"]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=seconds + 30
        )
        summary = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
        return Load(
            summary["requests"],
            summary["us"] / 1e6,
            summary["errors"],
            summary["p50"] / 1000,
            summary["p99"] / 1000,
        )

    return run


def python_client(port: int, path: str, connections: int, seconds: float) -> Load:
    """The fallback generator: closed-loop keep-alive HTTP/1.1 from asyncio streams."""
    return asyncio.run(_python_load(port, path, connections, seconds))


async def _python_load(port: int, path: str, connections: int, seconds: float) -> Load:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds

    async def connection() -> None:
        nonlocal errors
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.perf_counter() < end:
            try:
                if streams is None:
                    streams = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = streams
                sent = time.perf_counter()
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                fields = dict(line.split(":", 1) for line in head.splitlines()[1:] if ":" in line)
                await reader.readexactly(int(fields["content-length"]))
                latencies.append(time.perf_counter() - sent)
                if not head.startswith("http/1.1 2"):
                    errors += 1
                if fields.get("connection", "").strip() == "close":
                    writer.close()
                    streams = None
            except (OSError, EOFError, KeyError, ValueError):  # noqa: PERF203 -- counted, go on
                errors += 1
                if streams is not None:
                    streams[1].close()
                    streams = None

    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(connection() for _ in range(connections))), seconds + 10
        )
    ordered = sorted(latencies) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    elapsed = time.perf_counter() - start
    return Load(len(latencies), elapsed, errors, 1000 * statistics.median(ordered), 1000 * p99)


def get_json(port: int, path: str) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path} answered {data[:1000]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {limit} s")
