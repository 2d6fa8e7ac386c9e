"""In-process stand-ins for an ASGI and a WSGI server, for fast tests of the middleware."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import socket
import struct
import termios
import threading
import time
import wsgiref.util
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from jumpqueue.asgi import ASGIApp, Message, Scope

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment


def http_scope(path: str = "/", method: str = "GET", **extra: Any) -> Scope:
    """A minimal HTTP connection scope."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        **extra,
    }


@dataclasses.dataclass
class AsgiExchange:
    """What the fake ASGI server saw of one request."""

    sent: list[Message] = dataclasses.field(default_factory=list)
    error: BaseException | None = None

    @property
    def status(self) -> int:
        """The status of the response start message."""
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def headers(self) -> dict[str, str]:
        """The response headers, names lower-cased."""
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {name.decode().lower(): value.decode() for name, value in start["headers"]}

    @property
    def body(self) -> bytes:
        """The response body, all parts joined."""
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


OnSend = Callable[[Message], Awaitable[None] | None]


async def serve_asgi(
    app: ASGIApp,
    scope: Scope | None = None,
    *,
    on_send: OnSend | None = None,
    disconnect_on: str | None = None,
    client_leaves: bool = False,
) -> AsgiExchange:
    """Run one HTTP request through `app`, as a server would.

    Args:
        app: the application.
        scope: the connection scope; a GET of / by default.
        on_send: called with each message before it counts as sent.
        disconnect_on: a message type whose send fails as if the client left.
        client_leaves: `receive()` says `http.disconnect` after the request.
    """
    exchange = AsgiExchange()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if client_leaves:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # the client never leaves on its own
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if on_send is not None:
            result = on_send(message)
            if result is not None:
                await result
        if message["type"] == disconnect_on:
            raise OSError("the client went away")
        exchange.sent.append(message)

    try:
        await app(scope if scope is not None else http_scope(), receive, send)
    except Exception as error:  # noqa: BLE001 -- the test looks at it
        exchange.error = error
    return exchange


@dataclasses.dataclass
class WsgiExchange:
    """What the fake WSGI server saw of one request."""

    status: str | None = None
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    written: list[bytes] = dataclasses.field(default_factory=list)
    chunks: list[bytes] = dataclasses.field(default_factory=list)
    body: Iterable[bytes] | None = None
    error: BaseException | None = None
    closed: bool = False

    @property
    def content(self) -> bytes:
        """Everything sent: what was written, then what was iterated."""
        return b"".join(self.written) + b"".join(self.chunks)


class FileWrapper:
    """A server's `wsgi.file_wrapper`, as servers recognise it: by type."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data: bytes = self.filelike.read(self.blksize)
        if not data:
            raise StopIteration
        return data

    def close(self) -> None:
        """Close the file."""
        self.filelike.close()


def wsgi_environ(path: str = "/", method: str = "GET", **extra: Any) -> WSGIEnvironment:
    """A complete WSGI environ for a request, with a `wsgi.file_wrapper`."""
    environ: WSGIEnvironment = {"PATH_INFO": path, "REQUEST_METHOD": method}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.file_wrapper"] = FileWrapper
    environ.update(extra)
    return environ


def serve_wsgi(
    app: WSGIApplication,
    environ: WSGIEnvironment | None = None,
    *,
    on_chunk: Callable[[bytes], None] | None = None,
    stop_after: int | None = None,
) -> WsgiExchange:
    """Run one request through `app` as a server would: call, iterate, always close.

    Args:
        app: the application.
        environ: the request; a GET of / by default.
        on_chunk: called with each chunk of the body as it is sent.
        stop_after: stop iterating after that many chunks (a client that left).
    """
    exchange = WsgiExchange()

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        if exchange.status is not None and exc_info is None:
            raise AssertionError("start_response called twice without exc_info")
        if exchange.written and exc_info is not None:
            raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]
        exchange.status, exchange.headers = status, headers
        return exchange.written.append

    body: Iterable[bytes] = []
    try:
        body = app(environ if environ is not None else wsgi_environ(), start_response)
        exchange.body = body
        for number, chunk in enumerate(body, 1):
            exchange.chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            if stop_after is not None and number >= stop_after:
                break
    except Exception as error:  # noqa: BLE001 -- the test looks at it
        exchange.error = error
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
            exchange.closed = True
    return exchange


@dataclasses.dataclass
class Connection:
    """A real loopback TCP connection: the server's end, and a client that reads slowly.

    Attributes:
        server: the server's socket, whose send queue `fill()` fills.
        client: the client's socket, with a small receive buffer.
        queued: the bytes `fill()` put into the connection.
    """

    server: socket.socket
    client: socket.socket
    queued: int = 0
    _read: int = 0
    _reader: threading.Thread | None = None

    def fill(self) -> int:
        """Queue bytes on the server's side until its kernel takes no more; their count."""
        self.server.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.queued += self.server.send(b"x" * 65536)
        self.server.setblocking(True)
        return self.queued

    def read_slowly(self, rate: float = 8 * 1024 * 1024) -> None:
        """Start reading all that was queued, at `rate` bytes per second, in a thread."""

        def read() -> None:
            started = time.monotonic()
            while self._read < self.queued:
                try:
                    received = self.client.recv(16384)
                except OSError:  # the test is over and closed the connection
                    return
                if not received:
                    return
                self._read += len(received)
                lag = started + self._read / rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)  # the client's pace, not a wait for an event

        self._reader = threading.Thread(target=read, name="slow-client", daemon=True)
        self._reader.start()

    def arrived(self) -> int:
        """Bytes the client's kernel has: read by the client, or waiting in its buffer."""
        waiting = struct.unpack("i", fcntl.ioctl(self.client, termios.FIONREAD, b"\0\0\0\0"))[0]
        return int(waiting) + self._read

    def join(self) -> None:
        """Wait for the reader to have read everything."""
        if self._reader is not None:
            self._reader.join(10)


@contextlib.contextmanager
def loopback_connection() -> Iterator[Connection]:
    """A `Connection` on 127.0.0.1, closed afterwards."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        # Before connect, so that the window the client announces stays small.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    with server, client:
        connection = Connection(server, client)
        try:
            yield connection
        finally:
            client.shutdown(socket.SHUT_RDWR)  # ends the reader's recv()
            connection.join()
