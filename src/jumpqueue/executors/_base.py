"""The seam between the runtime and its executors: one attempt, and what each side calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .._results import running_call
from .._scope import around_calls

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from .._scheduler import Timer


#: The event loop running in this thread, or None: asyncio's own, in C, with no exception
#: raised where no loop runs (`get_running_loop()` raises one, which costs).
running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop


def call_to_completion(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call fn; a coroutine it returns is run to its end on an event loop of its own."""
    result = fn(*args, **kwargs)
    if result is None or not asyncio.iscoroutine(result):  # None: most calls, and no ABC check
        return result
    return asyncio.run(result)


class Attempt:
    """One run of a deferred call. A retry is a new attempt of the same call."""

    __slots__ = ("deferred", "number", "settled", "timer", "worker")

    def __init__(self, deferred: Deferred[Any], number: int) -> None:
        self.deferred = deferred
        self.number = number
        #: Set once by the runtime, under its lock, when the attempt's outcome is decided.
        self.settled = False
        self.timer: Timer | None = None
        #: What runs the attempt while it runs (a thread, a task, a child process).
        self.worker: object = None

    def __repr__(self) -> str:
        return f"<Attempt {self.number} of {self.deferred!r}>"

    def call(self) -> Any:
        """Run the call to completion in the current thread, in its own context."""
        deferred = self.deferred
        context = deferred.context
        if context is None:  # the call was settled meanwhile (abandoned at shutdown)
            return None
        if deferred.options.retries:
            context = context.copy()  # each attempt starts from the call's own context
        return context.run(self._call_around)

    def _call_around(self) -> Any:
        deferred = self.deferred
        running_call.set((deferred.id, self.number))  # in the attempt's own copy of the context
        arounds = around_calls.get()
        if not arounds:
            return call_to_completion(deferred.fn, deferred.args, deferred.kwargs)
        with contextlib.ExitStack() as stack:
            for around in arounds:
                stack.enter_context(around())
            # A coroutine function sent to a thread runs on that thread's own loop.
            return call_to_completion(deferred.fn, deferred.args, deferred.kwargs)

    def coroutine(self) -> Coroutine[Any, Any, Any]:
        """The call as a coroutine (the caller runs it in the call's context)."""
        deferred = self.deferred
        if not around_calls.get():
            return deferred.fn(*deferred.args, **deferred.kwargs)  # type: ignore[no-any-return]
        return self._coroutine_around()

    async def _coroutine_around(self) -> Any:
        deferred = self.deferred
        with contextlib.ExitStack() as stack:
            for around in around_calls.get():
                stack.enter_context(around())
            return await deferred.fn(*deferred.args, **deferred.kwargs)


class ExecutorHost(Protocol):
    """What an executor reports to: the runtime."""

    def attempt_started(self, attempt: Attempt) -> bool:
        """Mark the attempt running; False means it was settled meanwhile: skip it."""

    def attempt_finished(self, attempt: Attempt, result: Any, error: BaseException | None) -> None:
        """Report how an attempt ended; ignored if the attempt was settled already."""


class Executor(Protocol):
    """Runs attempts with bounded concurrency. Implementations never block `submit`."""

    name: str

    def __init__(self, config: Config, host: ExecutorHost) -> None: ...

    def validate(self, deferred: Deferred[Any]) -> None:
        """Raise `InvalidCallError` at defer time for a call this executor cannot run."""

    def submit(self, attempt: Attempt) -> None:
        """Queue an attempt to run as soon as a slot is free."""

    def expire(self, attempt: Attempt) -> None:
        """The attempt ran past its timeout: stop it if possible and free its slot."""

    def close(self) -> None:
        """Stop all workers without waiting; the runtime has settled every call."""

    @property
    def workers(self) -> int:
        """Workers alive and serving (threads, processes)."""

    @property
    def stuck(self) -> int:
        """Workers lost to calls past their timeout that could not be stopped."""
