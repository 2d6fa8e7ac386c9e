"""Waiting until a client has a large body: the send queue of a real loopback connection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from jumpqueue._web.sent import (
    LARGE_BODY,
    await_until_received,
    connection_queue,
    socket_queue,
    wait_sent,
    wait_until_received,
)

from .fakes import Connection, loopback_connection


@pytest.fixture
def connection() -> Iterator[Connection]:
    with loopback_connection() as opened:
        yield opened


def test_sent_queues_count_the_bytes_the_client_has_not_acknowledged(
    connection: Connection,
) -> None:
    queued = connection.fill()
    by_socket = socket_queue(connection.server)
    by_addresses = connection_queue(
        connection.server.getsockname(), connection.server.getpeername()
    )
    assert by_socket is not None
    assert by_addresses is not None
    unacknowledged = by_socket.unacknowledged()
    assert unacknowledged is not None
    assert LARGE_BODY < unacknowledged <= queued
    assert by_addresses.unacknowledged() == by_socket.unacknowledged()
    by_addresses.close()


def test_sent_wait_returns_once_the_client_has_every_byte(connection: Connection) -> None:
    queued = connection.fill()
    connection.read_slowly()
    assert wait_until_received({"gunicorn.socket": connection.server}, body_size=queued)
    assert connection.arrived() >= queued


def test_sent_await_finds_the_connection_by_the_scope_addresses(connection: Connection) -> None:
    queued = connection.fill()
    connection.read_slowly()
    scope = {"server": connection.server.getsockname(), "client": connection.server.getpeername()}
    assert asyncio.run(await_until_received(scope, body_size=queued))
    assert connection.arrived() >= queued


def test_sent_wait_gives_up_at_its_limit_when_the_client_reads_nothing(
    connection: Connection,
) -> None:
    connection.fill()
    started = time.monotonic()
    assert not wait_sent(socket_queue(connection.server), limit=0.1)
    assert 0.1 <= time.monotonic() - started < 2


def test_sent_small_bodies_and_unreadable_connections_are_not_waited_for(
    connection: Connection,
) -> None:
    connection.fill()
    environ = {"gunicorn.socket": connection.server}
    started = time.monotonic()
    assert wait_until_received(environ, body_size=LARGE_BODY - 1)
    assert asyncio.run(
        await_until_received(
            {"server": connection.server.getsockname(), "client": connection.server.getpeername()},
            body_size=0,
        )
    )
    assert wait_until_received({}, body_size=None)  # no socket in the environ
    assert wait_until_received({"gunicorn.socket": "not a socket"})
    assert time.monotonic() - started < 1
    left, right = socket.socketpair()
    with left, right:
        assert socket_queue(left) is None  # not TCP


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (None, None),
        ("/run/app.sock", None),  # a Unix socket
        (("127.0.0.1", 8000), ("10.0.0.1", 0)),  # rewritten by proxy headers
        (("127.0.0.1", 8000), ("::1", 5000)),
        (("localhost", 8000), ("127.0.0.1", 5000)),
    ],
)
def test_sent_connection_queue_is_none_for_addresses_it_cannot_look_up(
    server: object, client: object
) -> None:
    assert connection_queue(server, client) is None


def test_sent_connection_queue_of_no_such_connection_reads_as_gone() -> None:
    queue = connection_queue(("127.0.0.1", 1), ("127.0.0.1", 2))
    assert queue is not None
    assert queue.unacknowledged() is None
    queue.close()
    assert wait_sent(connection_queue(("::1", 1), ("::1", 2)))
