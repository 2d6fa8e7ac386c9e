"""What the benchmarks share: closed-loop HTTP load (wrk or an asyncio client), local servers,
CPU time and memory from /proc, callgrind's instruction counts, and medians with their range."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().parent / "apps"

_WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "us": %d, "errors": %d, "p50": %d, "p99": %d, "non_2xx": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), e.status))
end
"""


@dataclasses.dataclass(frozen=True)
class Load:
    """What the client saw during one measurement."""

    requests: int
    seconds: float
    errors: int  # failed connections and requests, and answers other than 2xx
    p50: float  # ms
    p99: float  # ms
    non_2xx: int  # answers other than 2xx (wrk counts those of 400 and up)

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


def wrk(cpu: list[str], folder: Path) -> Generator:
    """wrk -t1 behind the `taskset` prefix `cpu`; its summary script is written into `folder`."""
    script = folder / "summary.lua"
    script.write_text(_WRK_SCRIPT)

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
            summary["non_2xx"],
        )

    return run


def client(choice: str, cpu: list[str], folder: Path) -> tuple[Generator, str]:
    """The generator `choice` names ("wrk", "python", or "auto": wrk where installed), and its name.

    `cpu` is the client's `taskset` prefix; the asyncio client runs in this process, which is
    then pinned to the first CPU instead.
    """
    if choice == "wrk" or (choice == "auto" and shutil.which("wrk") is not None):
        return wrk(cpu, folder), "wrk -t1"
    if cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return python_client, "the asyncio client of this script"


def python_client(port: int, path: str, connections: int, seconds: float) -> Load:
    """The fallback generator: closed-loop keep-alive HTTP/1.1 from asyncio streams."""
    return asyncio.run(_python_load(port, path, connections, seconds))


async def _python_load(port: int, path: str, connections: int, seconds: float) -> Load:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    errors = non_2xx = 0
    start = time.perf_counter()
    end = start + seconds

    async def connection() -> None:
        nonlocal errors, non_2xx
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
                    non_2xx += 1
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
    ordered = latencies or [0.0]
    elapsed = time.perf_counter() - start
    median, p99 = 1000 * statistics.median(ordered), 1000 * percentile(ordered, 0.99)
    return Load(len(latencies), elapsed, errors, median, p99, non_2xx)


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status, header fields (names in lower case) and body."""

    status: int
    fields: dict[str, str]
    body: bytes


def get(port: int, path: str, timeout: float = 10.0) -> Answer:
    """One GET on a connection of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return Answer(
        int(status.split()[1]), {k.strip().lower(): v.strip() for k, v in fields.items()}, body
    )


def get_json(port: int, path: str) -> dict[str, Any]:
    answer = get(port, path)
    if answer.status != 200:
        raise RuntimeError(f"GET {path} answered {answer.status}: {answer.body[:1000]!r}")
    result: dict[str, Any] = json.loads(answer.body)
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


@dataclasses.dataclass(frozen=True)
class Endpoint:
    server: str  # the server, as shown in the table
    work: str  # what the endpoint leaves behind, as shown in the table
    command: tuple[str, ...]  # without the address
    path: str
    env: tuple[tuple[str, str], ...] = ()


def uvicorn(app: str, path: str, work: str, env: dict[str, str] | None = None) -> Endpoint:
    command = ("uvicorn", app, "--app-dir", str(APPS), "--log-level", "warning", "--no-access-log")
    return Endpoint("Starlette, uvicorn", work, command, path, tuple((env or {}).items()))


@dataclasses.dataclass(frozen=True)
class Server:
    """A server process serving on 127.0.0.1."""

    port: int
    pid: int


@contextlib.contextmanager
def serve(endpoint: Endpoint, cpu: list[str], log: Path, grace: float = 30.0) -> Iterator[Server]:
    """Run the endpoint's server until the block exits, then stop it (killed after `grace` s).

    It gets this environment without its `JUMPQUEUE_*` variables, plus the endpoint's own:
    what a run measures does not depend on the shell it was started from.
    """
    # A port, never an inherited file descriptor: uvicorn takes an inherited socket for a
    # Unix socket and leaves Nagle's algorithm on, which costs every response 40 ms.
    port = free_port()
    name, *options = endpoint.command
    address = (
        ["--host", "127.0.0.1", "--port", str(port)]
        if name == "uvicorn"
        else ["-b", f"127.0.0.1:{port}"]
    )
    command = [*cpu, sys.executable, "-m", name, *options, *address]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUMPQUEUE_")}
    env.update(endpoint.env)
    with log.open("wb") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port, server)
        except RuntimeError as error:
            raise RuntimeError(f"{' '.join(command)} did not start:\n{log.read_text()}") from error
        yield Server(port, server.pid)  # `taskset` execs the server: the same process
    finally:
        server.terminate()
        try:
            server.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- /proc (Linux) ------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process's threads have used, its children not counted.

    0 once it is gone.
    """
    try:
        # The command name, in parentheses, may hold spaces and parentheses of its own.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(root: int) -> list[int]:
    """Every live process below root, from the `children` file of each thread.

    Cheap (no scan of /proc): the CPU it costs counts in the figures of a caller that
    measures its own process.
    """
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            children = [
                int(child)
                for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except OSError:  # ended meanwhile
            continue
        found += children
        todo += children
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants so far."""
    return process_cpu(pid) + sum(process_cpu(child) for child in descendants(pid))


def memory(pid: int) -> tuple[int, int]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in bytes; 0 if unknown."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    now, peak = (1024 * int(fields.get(name, "0 kB").split()[0]) for name in ("VmRSS", "VmHWM"))
    return now, peak


# -- instructions -------------------------------------------------------------------------------


def callgrind(arguments: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions valgrind's callgrind counts for this interpreter run with `arguments`."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                *arguments,
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=900,
        )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no instruction count in callgrind's output")


# -- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The value a share `q` of `values` lies below (nearest rank); nan if there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_range(values: list[float]) -> tuple[float, float, float]:
    """The median, lowest and highest of `values`."""
    return statistics.median(values), min(values), max(values)


def spread(values: list[float], form: str = ".1f", between: str = "-", unit: str = "") -> str:
    """The median and (range) of `values`, as `form` writes numbers: "2.5 (2.1-3.0)"."""
    middle, low, high = median_range(values)
    return f"{middle:{form}}{unit} ({low:{form}}{between}{high:{form}})"


def table_head(*columns: str, text: int = 1) -> list[str]:
    """A Markdown table's first two lines: its first `text` columns left-aligned, the rest right."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * text + "---:|" * (len(columns) - text),
    ]
