"""When a large response has reached the client: its bytes the client's kernel has not acknowledged.

A server hands the last byte to the kernel long before the client has it: on
Linux a TCP send buffer grows to megabytes (`net.ipv4.tcp_wmem`), which a slow
client takes seconds to read. For a large body the middleware waits, bounded
by `WAIT_LIMIT`, until the connection's send queue is empty: every byte is then
in the client's kernel, at most its receive buffer away from the application.
The queue is read with `ioctl(SIOCOUTQ)` on a socket the server hands over
(WSGI), or from the kernel's socket table by the connection's addresses
(`NETLINK_SOCK_DIAG`, ASGI). Elsewhere than Linux, nothing is waited for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger("jumpqueue")

#: Bodies smaller than this are released at once: at a slow 2 MB/s the client
#: has the last of them within 32 ms anyway, and small responses stay as cheap as ever.
LARGE_BODY = 64 * 1024
#: The longest a release waits for the client to acknowledge the body, in seconds.
WAIT_LIMIT = 5.0
#: Where WSGI servers put the client's socket in the environ.
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")
_FIRST_POLL = 0.001
_LONGEST_POLL = 0.020

_LINUX = sys.platform.startswith("linux")
_SIOCOUTQ = 0x5411  # TIOCOUTQ: on a TCP socket, bytes sent and not yet acknowledged
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_TCP_PORTS = range(1, 65536)  # 0 is no port: a client address rewritten by proxy headers
_IPV4 = 4
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # struct inet_diag_req_v2, up to its socket id
_SOCKET_ID = struct.Struct("!HH16s16s")  # struct inet_diag_sockid: ports, addresses
_SOCKET_ID_REST = struct.Struct("=III")  # its interface and the "no cookie" cookie
_WQUEUE_OFFSET = _HEADER.size + 4 + 48 + 8  # inet_diag_msg.idiag_wqueue in the answer


class SendQueue(Protocol):
    """One connection's bytes that the client's kernel has not acknowledged."""

    def unacknowledged(self) -> int | None:
        """Their count now; None once the connection can no longer be read."""

    def close(self) -> None:
        """Let go of what reading the queue needs."""


class SocketSendQueue:
    """The send queue of a socket this process holds, by `ioctl(SIOCOUTQ)`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def unacknowledged(self) -> int | None:
        """Bytes in the socket's send queue; None once the server closed it."""
        try:
            raw = fcntl.ioctl(self._sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return None
        count: int = struct.unpack("i", raw)[0]
        return count

    def close(self) -> None:
        """The socket is the server's: it stays open."""


class DiagSendQueue:
    """The send queue of a TCP connection found by its addresses in the kernel's socket table."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._netlink: socket.socket | None = None

    def unacknowledged(self) -> int | None:
        """Bytes sent on the connection and not acknowledged; None when it is gone."""
        try:
            if self._netlink is None:
                self._netlink = socket.socket(
                    socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG
                )
                self._netlink.settimeout(1.0)  # the kernel answers at once; never hang on it
            self._netlink.send(self._request)
            answer = self._netlink.recv(4096)
        except OSError as error:
            logger.debug("jumpqueue: cannot read a connection's send queue: %r", error)
            return None
        if len(answer) < _WQUEUE_OFFSET + 4 or _HEADER.unpack_from(answer)[1] == _NLMSG_ERROR:
            return None  # no such connection (closed and gone, or not the server's address)
        count: int = struct.unpack_from("=I", answer, _WQUEUE_OFFSET)[0]
        return count

    def close(self) -> None:
        """Close the netlink socket."""
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None


def socket_queue(sock: object) -> SendQueue | None:
    """The queue of a TCP socket a server hands over (`environ["gunicorn.socket"]`), if readable."""
    if not _LINUX or not isinstance(sock, socket.socket):
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None
    return SocketSendQueue(sock)


def connection_queue(local: Any, peer: Any) -> SendQueue | None:
    """The queue of the TCP connection between ASGI's `scope["server"]` and `scope["client"]`.

    None where it cannot be looked up: elsewhere than Linux, a Unix socket, or
    a client address a proxy-headers middleware rewrote (its port is then 0).
    """
    if not _LINUX or not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        (local_host, local_port), (peer_host, peer_port) = local, peer
        local_ip, peer_ip = ipaddress.ip_address(local_host), ipaddress.ip_address(peer_host)
        ports = int(local_port), int(peer_port)
    except (TypeError, ValueError):
        return None
    if not all(port in _TCP_PORTS for port in ports) or local_ip.version != peer_ip.version:
        return None
    family = socket.AF_INET if local_ip.version == _IPV4 else socket.AF_INET6
    body = (
        _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _SOCKET_ID.pack(*ports, local_ip.packed.ljust(16, b"\0"), peer_ip.packed.ljust(16, b"\0"))
        + _SOCKET_ID_REST.pack(0, _NO_COOKIE, _NO_COOKIE)
    )
    header = _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    return DiagSendQueue(header + body)


def wait_until_received(environ: Mapping[str, Any], *, body_size: int | None = None) -> bool:
    """Block until the client acknowledged every byte sent on a WSGI request's connection.

    It waits where the server hands over the client's socket (gunicorn's
    `gunicorn.socket`, Werkzeug's `werkzeug.socket`) on Linux, at most
    `WAIT_LIMIT` seconds; elsewhere, and for a body of `body_size` under
    `LARGE_BODY` bytes, it returns at once.

    Returns:
        False when the limit passed first.
    """
    if body_size is not None and body_size < LARGE_BODY:
        return True
    for key in _SOCKET_KEYS:
        queue = socket_queue(environ.get(key))
        if queue is not None:
            return wait_sent(queue)
    return True


async def await_until_received(scope: Mapping[str, Any], *, body_size: int | None = None) -> bool:
    """`wait_until_received()` for an ASGI request's connection, found by the scope's addresses.

    It waits on Linux for a TCP connection whose `scope["server"]` and
    `scope["client"]` are the socket's own addresses (not one a proxy-headers
    middleware rewrote), without blocking the event loop.
    """
    if body_size is not None and body_size < LARGE_BODY:
        return True
    return await await_sent(connection_queue(scope.get("server"), scope.get("client")))


def wait_sent(queue: SendQueue | None, limit: float = WAIT_LIMIT) -> bool:
    """Block until the client acknowledged every byte sent, or `limit` seconds passed.

    Returns:
        Whether the queue emptied (or could no longer be read) within the limit.
    """
    if queue is None:
        return True
    polls = _Polls(queue, limit)
    try:
        for pause in polls:
            time.sleep(pause)
    finally:
        queue.close()
    return polls.emptied


async def await_sent(queue: SendQueue | None, limit: float = WAIT_LIMIT) -> bool:
    """`wait_sent()` for the event loop: the polls never block it."""
    if queue is None:
        return True
    polls = _Polls(queue, limit)
    try:
        for pause in polls:
            await asyncio.sleep(pause)
    finally:
        queue.close()
    return polls.emptied


class _Polls:
    """The pauses between reads of a send queue, until it is empty or the limit has passed.

    The kernel signals no "send queue empty" (EPOLLOUT means room, not
    emptiness), so the queue is polled: soon at first, then every 20 ms.
    """

    def __init__(self, queue: SendQueue, limit: float) -> None:
        self._queue = queue
        self._limit = limit
        self.emptied = False

    def __iter__(self) -> Iterator[float]:
        deadline = time.monotonic() + self._limit
        pause = _FIRST_POLL
        while self._queue.unacknowledged():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.debug("jumpqueue: the client did not take the body within %s s", self._limit)
                return
            yield min(pause, remaining)
            pause = min(pause * 2, _LONGEST_POLL)
        self.emptied = True
