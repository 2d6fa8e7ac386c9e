"""Threads jumpqueue starts during a request keep nothing of that request alive."""

from __future__ import annotations

import contextvars
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jumpqueue import Deferred
from jumpqueue.integration import RequestScope

from .conftest import RuntimeFactory

request_object: contextvars.ContextVar[object] = contextvars.ContextVar("request_object")


class Request:
    """Something an application keeps in a context variable for one request."""


@pytest.fixture
def inheriting_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Threads that inherit their starter's context, as Python 3.14 free-threaded builds do.

    A thread keeps the context it inherited (3.14's `Thread._context`) for as long
    as it lives; the pools' threads live as long as the runtime.
    """
    if getattr(sys.flags, "thread_inherit_context", 0):
        yield  # this Python does it already
        return
    start = threading.Thread.start

    def inheriting_start(self: threading.Thread) -> None:
        inherited = contextvars.copy_context()
        run = self.run
        self._inherited_context = inherited  # type: ignore[attr-defined]
        self.run = lambda: inherited.run(run)  # type: ignore[method-assign]
        start(self)

    monkeypatch.setattr(threading.Thread, "start", inheriting_start)
    yield


def nothing() -> None:
    pass


async def nothing_async() -> None:
    pass


def test_threads_started_lazily_in_a_request_keep_none_of_its_context(
    make_runtime: RuntimeFactory, inheriting_threads: None, tmp_path: Path
) -> None:
    # Each thread starts within the request: the pool's, the background loop's, the
    # timer's (the coroutine's timeout, armed on that loop in the call's context) and
    # the journal's (the request's group commit).
    runtime = make_runtime(journal=str(tmp_path / "journal.db"), task_timeout=60)
    assert runtime.stats().workers == 0

    def serve_request() -> tuple[weakref.ref[Request], list[Deferred[Any]]]:
        request = Request()
        request_object.set(request)
        scope = RequestScope()
        token = scope.activate()
        try:
            calls: list[Deferred[Any]] = [runtime.defer(nothing), runtime.defer(nothing_async)]
        finally:
            scope.deactivate(token)
        scope.release(succeeded=True)
        return weakref.ref(request), calls

    request, calls = contextvars.Context().run(serve_request)
    assert all(call.wait(5) for call in calls)
    names = {thread.name for thread in threading.enumerate()}
    assert {"jumpqueue-thread-1", "jumpqueue-asyncio", "jumpqueue-scheduler"} <= names
    assert "jumpqueue-journal" in names
    del calls
    gc.collect()
    assert request() is None
