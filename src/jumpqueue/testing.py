"""Helpers for applications' own tests: capture deferred calls, or run them in place.

    with jumpqueue.testing.capture() as calls:
        client.post("/signup")
    assert calls[0].fn is send_welcome_email

The pytest plugin offers both as fixtures: `jumpqueue_capture`, `jumpqueue_immediate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import _intercept
from ._deferred import Deferred, Status
from ._tasks import TaskOptions
from .executors._base import call_to_completion

__all__ = ["CapturedCall", "capture", "immediate"]

_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class CapturedCall:
    """A deferred call recorded by `capture()` instead of being run."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: TaskOptions
    deferred: Deferred[Any]

    def run(self) -> Any:
        """Call it now, in the caller's thread, and return what it returns."""
        return call_to_completion(self.fn, self.args, self.kwargs)


@contextlib.contextmanager
def capture() -> Iterator[list[CapturedCall]]:
    """Record every call deferred (from any thread) inside the block, without running it.

    The handles stay `pending`. Bad input still raises at `defer()`.
    """
    calls: list[CapturedCall] = []

    def record(deferred: Deferred[Any]) -> Deferred[Any]:
        calls.append(
            CapturedCall(deferred.fn, deferred.args, deferred.kwargs, deferred.options, deferred)
        )
        return deferred

    with _intercepting(record):
        yield calls


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Run every call deferred inside the block at once, inside `defer()`.

    An exception raised by the call propagates out of `defer()`, so a test
    sees it where the call was made.
    """

    def run(deferred: Deferred[Any]) -> Deferred[Any]:
        call = CapturedCall(deferred.fn, deferred.args, deferred.kwargs, deferred.options, deferred)
        try:
            result = call.run()
        except BaseException as error:
            deferred._settle(Status.FAILED, None, error)
            raise
        deferred._settle(Status.SUCCEEDED, result, None)
        return deferred

    with _intercepting(run):
        yield


@contextlib.contextmanager
def _intercepting(handler: Callable[[Deferred[Any]], Deferred[Any]]) -> Iterator[None]:
    with _lock:
        previous, _intercept.active = _intercept.active, handler
    try:
        yield
    finally:
        with _lock:
            _intercept.active = previous
