"""What every test application shares: the deferred tasks and their link to the test.

A task reports to the test over a TCP connection to `JQTEST_SYNC` (host:port):
`report` sends one line and leaves; `block` sends `ready <tag>`, waits until the
test answers `go`, then sends `done <tag>`. The test answers only once the
client has read the whole response, so no timing is guessed anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time

import jumpqueue
from jumpqueue.asgi import HttpCounters

if os.environ.get("JQTEST_SERVER"):
    # In a server process: the runtime's warnings (shed, abandoned at shutdown) go
    # to the server's log file, which the tests read.
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("jumpqueue").addHandler(_handler)
    logging.getLogger("jumpqueue").setLevel(logging.WARNING)

#: How long a task waits for the test's `go` before it gives up.
BLOCK_LIMIT = 60.0


def _address() -> tuple[str, int]:
    host, port = os.environ["JQTEST_SYNC"].rsplit(":", 1)
    return host, int(port)


def report(tag: str) -> None:
    """Tell the test that the task tagged `tag` ran."""
    with socket.create_connection(_address(), timeout=BLOCK_LIMIT) as sock:
        sock.sendall(f"ran {tag}\n".encode())


@jumpqueue.task(always=True)
def report_always(tag: str) -> None:
    """`report`, as a task that runs whatever happened to its request."""
    report(tag)


def block(tag: str) -> None:
    """Say `ready`, wait for the test's `go`, say `done`."""
    with (
        socket.create_connection(_address(), timeout=BLOCK_LIMIT) as sock,
        sock.makefile("rwb") as stream,
    ):
        stream.write(f"ready {tag}\n".encode())
        stream.flush()
        if stream.readline().strip() != b"go":
            raise RuntimeError(f"{tag}: the test hung up")
        stream.write(f"done {tag}\n".encode())
        stream.flush()


async def ablock(tag: str) -> None:
    """`block` for the event loop."""
    host, port = _address()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"ready {tag}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), BLOCK_LIMIT)
        if line.strip() != b"go":
            raise RuntimeError(f"{tag}: the test hung up")
        writer.write(f"done {tag}\n".encode())
        await writer.drain()
    finally:
        writer.close()


def report_start(tag: str) -> None:
    """Tell the test when the task tagged `tag` started, on the system-wide monotonic clock."""
    started = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process on Linux
    with socket.create_connection(_address(), timeout=BLOCK_LIMIT) as sock:
        sock.sendall(f"started {tag} {started!r}\n".encode())


def large_body(size: int) -> bytes:
    """The body of the /large route: `size` bytes."""
    return b"x" * size


def pause(milliseconds: int) -> None:
    """The work of the overload tests: hold a worker for a while."""
    time.sleep(milliseconds / 1000)


def defer_failing(tag: str) -> None:
    """What a request that is about to fail defers: one plain call, one `always` call."""
    jumpqueue.defer(report, f"{tag}-plain")
    jumpqueue.defer(report_always, f"{tag}-always")


def stats_body(counters: HttpCounters) -> bytes:
    """The `/stats` route's JSON: the runtime's stats, the web counters, the process's RSS."""
    stats = jumpqueue.stats()
    return json.dumps(
        {
            **stats.as_dict(),
            "finished": stats.finished,
            "in_flight": stats.in_flight,
            "counters": counters.as_dict(),
            "pid": os.getpid(),
            "rss_kib": _rss_kib(),
        }
    ).encode()


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
