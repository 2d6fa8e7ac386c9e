"""Helpers for applications' own tests: capture deferred calls, or run them in place.

    with jumpqueue.testing.capture() as calls:
        client.post("/signup")
    assert calls[0].fn is send_welcome_email

The pytest plugin offers both as fixtures: `jumpqueue_capture`, `jumpqueue_immediate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._default import serving_runtime
from ._deferred import Deferred, Status
from ._tasks import TaskOptions
from .executors._base import call_to_completion

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["CapturedCall", "capture", "immediate"]


@dataclasses.dataclass(frozen=True)
class CapturedCall:
    """A deferred call recorded by `capture()` instead of being run."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: TaskOptions
    deferred: Deferred[Any]

    @classmethod
    def of(cls, deferred: Deferred[Any]) -> CapturedCall:
        """The call a handle stands for."""
        return cls(deferred.fn, deferred.args, deferred.kwargs, deferred.options, deferred)

    def run(self) -> Any:
        """Call it now, in the caller's thread, and return what it returns."""
        return call_to_completion(self.fn, self.args, self.kwargs)


@contextlib.contextmanager
def capture(runtime: Runtime | None = None) -> Iterator[list[CapturedCall]]:
    """Record every call deferred (from any thread) inside the block, without running it.

    It applies to `runtime`, by default the default runtime. The handles stay
    `pending`, and `stats()` does not count them. Bad input still raises at `defer()`.
    """
    calls: list[CapturedCall] = []

    def record(deferred: Deferred[Any]) -> None:
        calls.append(CapturedCall.of(deferred))

    with (runtime or serving_runtime())._intercepting(record):
        yield calls


@contextlib.contextmanager
def immediate(runtime: Runtime | None = None) -> Iterator[None]:
    """Run every call deferred inside the block at once, inside `defer()`.

    It applies to `runtime`, by default the default runtime. An exception
    raised by the call propagates out of `defer()`, so a test sees it where
    the call was made.
    """

    def run(deferred: Deferred[Any]) -> tuple[Status, Any, BaseException | None]:
        return Status.SUCCEEDED, CapturedCall.of(deferred).run(), None

    with (runtime or serving_runtime())._intercepting(run):
        yield
