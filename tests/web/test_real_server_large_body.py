"""Every server, over loopback: a large body's calls start once a slow client has its last byte.

A raw-socket client with a small receive buffer reads a 4 MB body at 8 MB/s and
notes when its last byte arrived; the deferred call notes when it started. Both
read CLOCK_MONOTONIC (`time.monotonic()`), one clock for every process on Linux.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import pytest

from .harness import SERVERS, Coordinator, RunningServer, running_installed

SIZE = 4_000_000
#: Bytes per second: slow enough that a call released once the server had handed the
#: body to its kernel (megabytes of send buffer) would start 350-500 ms early, seven
#: times EARLY_LIMIT; fast enough that each server's case reads for half a second only.
RATE = 8_000_000
#: The client's receive buffer (Linux doubles it): what its kernel acknowledges
#: ahead of the reader, 4 ms of reading at RATE.
RECEIVE_BUFFER = 16 * 1024
#: How early a call may start, before the client read the last byte.
EARLY_LIMIT = 0.050
#: How late it may start: the wait ends soon after the last byte, not at its limit.
LATE_LIMIT = 0.5
#: Servers that keep what jumpqueue would wait on to themselves (docs/servers.md).
UNCOVERED = {
    "waitress": "waitress hands the application neither the socket nor its output buffers",
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest,
    coordinator: Coordinator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp(request.param)
    with running_installed(request.param, coordinator, directory) as started:
        yield started


@dataclasses.dataclass(frozen=True)
class SlowRead:
    """What the slow client got: the body's length, and when its last byte arrived."""

    length: int
    last_byte_at: float


def read_slowly(port: int, path: str, *, rate: float = RATE) -> SlowRead:
    """GET `path` with a small receive buffer, reading the body at `rate` bytes per second."""
    with socket.socket() as sock:
        # Set before connect, so that the window the client announces is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            received = sock.recv(4096)
            if not received:
                raise AssertionError(f"the connection closed in the head: {head!r}")
            head += received
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split()[1] == "200", lines[0]
        headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        expected = int(headers["content-length"])
        length = len(body)
        started = time.monotonic()
        while length < expected:
            received = sock.recv(min(8192, expected - length))
            if not received:
                raise AssertionError(f"the connection closed after {length} of {expected} bytes")
            length += len(received)
            if length == expected:
                break
            # The reader is slow on purpose: this is its pace, not a wait for an event.
            lag = started + length / rate - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        return SlowRead(length, time.monotonic())


def test_real_server_large_body_call_starts_after_the_client_has_the_last_byte(
    server: RunningServer, coordinator: Coordinator, request: pytest.FixtureRequest
) -> None:
    if server.spec.name in UNCOVERED:
        request.applymarker(pytest.mark.xfail(strict=True, reason=UNCOVERED[server.spec.name]))
    tag = f"{server.spec.name}-large"
    read = read_slowly(server.port, f"/large?tag={tag}&size={SIZE}")
    assert read.length == SIZE
    started_at = coordinator.started_at(tag)
    early = read.last_byte_at - started_at
    print(f"{server.spec.name}: the call started {early * 1000:.0f} ms before the last byte")
    assert early <= EARLY_LIMIT, (
        f"the call started {early:.3f} s before the client had the last byte"
    )
    assert -early < LATE_LIMIT, f"the call started {-early:.3f} s after the last byte"
