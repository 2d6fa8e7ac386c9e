"""The group commit of a response: its calls are on disk before its last byte is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jumpqueue
from jumpqueue.asgi import JumpQueueMiddleware as AsgiMiddleware
from jumpqueue.asgi import Message, Receive, Scope, Send
from jumpqueue.wsgi import JumpQueueMiddleware as WsgiMiddleware

from ..web.fakes import serve_asgi, serve_wsgi
from .journal_helpers import RECORDER, remember, remember_after_gate, states

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def test_journal_asgi_response_is_sealed_before_its_last_byte(journal_path: Path) -> None:
    jumpqueue.configure(journal=str(journal_path))
    RECORDER.gate.clear()
    on_disk_at_last_byte: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for n in range(3):
            jumpqueue.defer(remember_after_gate, n)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            on_disk_at_last_byte.append(sum(states(journal_path).values()))

    exchange = asyncio.run(serve_asgi(AsgiMiddleware(app), on_send=on_send))
    assert exchange.status == 200
    assert on_disk_at_last_byte == [3]
    RECORDER.gate.set()
    assert RECORDER.wait_for(3)


def test_journal_wsgi_response_is_sealed_before_its_body_is_sent(journal_path: Path) -> None:
    jumpqueue.configure(journal=str(journal_path))
    RECORDER.gate.clear()
    on_disk_at_first_chunk: list[int] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        jumpqueue.defer(remember_after_gate, "before")
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterable[bytes]:
            yield b"one"
            jumpqueue.defer(remember_after_gate, "while streaming")
            yield b"two"

        return body()

    def on_chunk(chunk: bytes) -> None:
        if chunk == b"one":
            on_disk_at_first_chunk.append(sum(states(journal_path).values()))

    exchange = serve_wsgi(WsgiMiddleware(app), on_chunk=on_chunk)
    assert exchange.content == b"onetwo"
    assert on_disk_at_first_chunk == [1]
    assert sum(states(journal_path).values()) == 2
    RECORDER.gate.set()
    assert RECORDER.wait_for(2)


def test_journal_lifespan_startup_takes_up_what_was_left(journal_path: Path) -> None:
    RECORDER.gate.clear()
    first = jumpqueue.Runtime(jumpqueue.Config(journal=str(journal_path), max_workers=1))
    handles = [first.defer(remember_after_gate, n) for n in range(3)]
    first.shutdown(timeout=0)  # the gate is shut: they stay in the journal
    assert {h.status for h in handles} <= {jumpqueue.Status.JOURNALED}
    RECORDER.gate.set()
    jumpqueue.configure(journal=str(journal_path))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("no request is made")

    async def lifespan() -> list[str]:
        incoming: asyncio.Queue[Message] = asyncio.Queue()
        sent: list[str] = []
        await incoming.put({"type": "lifespan.startup"})

        async def send(message: Message) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                assert await asyncio.to_thread(RECORDER.wait_for, 3)
                await incoming.put({"type": "lifespan.shutdown"})

        await AsgiMiddleware(app)({"type": "lifespan"}, incoming.get, send)
        return sent

    assert asyncio.run(lifespan()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sorted(RECORDER.values) == [0, 1, 2]


def test_journal_failed_asgi_request_writes_its_always_calls_off_the_loop(
    journal_path: Path,
) -> None:
    runtime = jumpqueue.configure(journal=str(journal_path))
    assert runtime.open_journal()
    journal = runtime._journaling.journal
    assert journal is not None
    commit = journal.commit
    committed_on: list[bool] = []

    def watched_commit(*args: Any, **kwargs: Any) -> int:
        committed_on.append(_on_event_loop())
        return commit(*args, **kwargs)

    journal.commit = watched_commit  # type: ignore[method-assign]
    always = remember.options(always=True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        jumpqueue.defer(always, "kept")
        jumpqueue.defer(remember, "skipped")
        raise RuntimeError("the view failed")

    exchange = asyncio.run(serve_asgi(AsgiMiddleware(app)))
    assert isinstance(exchange.error, RuntimeError)
    assert RECORDER.wait_for(1)
    assert RECORDER.values == ["kept"]
    assert committed_on == [False]


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
