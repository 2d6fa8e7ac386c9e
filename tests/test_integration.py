from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator

import pytest

import jumpqueue
from jumpqueue import MiddlewareMissingError
from jumpqueue.integration import RequestScope, bind_exchange, current_scope, wrap_calls

from .conftest import RuntimeFactory


def test_integration_current_scope_is_the_activated_one_in_copied_contexts_too() -> None:
    assert current_scope() is None
    scope = RequestScope()
    token = scope.activate()
    try:
        assert current_scope() is scope
        seen: list[RequestScope | None] = []
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(lambda: seen.append(current_scope()),))
        thread.start()
        thread.join(5)
    finally:
        scope.deactivate(token)
    assert seen == [scope]
    assert current_scope() is None


def test_integration_current_scope_is_none_in_a_task(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    scope = RequestScope()
    token = scope.activate()
    try:
        inside = runtime.defer(current_scope)
    finally:
        scope.deactivate(token)
    scope.release(succeeded=True)
    assert inside.result(timeout=5) is None


def test_integration_wrap_calls_adds_to_the_enclosing_block_then_resets(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    entered: list[str] = []

    def marker(name: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def mark() -> Iterator[None]:
            entered.append(f"in {name}")
            yield
            entered.append(f"out {name}")

        return mark()

    with wrap_calls(lambda: marker("outer")), wrap_calls(lambda: marker("inner")):
        wrapped = runtime.defer(entered.append, "call")
    assert wrapped.result(timeout=5) is None
    assert entered == ["in outer", "in inner", "call", "out inner", "out outer"]
    entered.clear()
    assert runtime.defer(entered.append, "plain").result(timeout=5) is None
    assert entered == ["plain"]


class RecordingExchange:
    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def finish(self, response: object) -> None:
        self.sent.append(("finish", response))

    async def afinish(self, response: object) -> None:
        self.sent.append(("afinish", response))


def test_integration_bind_exchange_makes_finish_request_talk_to_it() -> None:
    exchange = RecordingExchange()
    with bind_exchange(exchange) as bound:
        assert bound is exchange
        jumpqueue.finish_request("now")
        asyncio.run(jumpqueue.afinish_request("later"))
    assert exchange.sent == [("finish", "now"), ("afinish", "later")]
    with pytest.raises(MiddlewareMissingError):
        jumpqueue.finish_request("outside")
