"""Helpers for applications' own tests: run deferred calls in place, or only record them.

Both modes keep what production does with a request: a call deferred during a
request is held until its response has been sent, and skipped if the request
failed (unless its task says `always=True`); the overload policy applies, and
so do the checks of a configured `backend` or of `check_handoff`; a call that
runs gets its task's retries and timeout. What changes is where calls run:

    with jumpqueue.testing.immediate() as calls:      # in the test's thread
        response = client.post("/signup", data={"email": "a@example.com"})
    assert calls[0].fn is send_welcome_email.fn
    assert calls[0].status is jumpqueue.Status.SUCCEEDED

    with jumpqueue.testing.capture() as calls:        # not at all
        client.post("/signup", data={"email": "a@example.com"})
    assert calls[0].status is jumpqueue.Status.PENDING  # released: it would run

`live()` suspends a mode for a block. The pytest plugin offers the three as
fixtures: `jumpqueue_immediate`, `jumpqueue_capture`, `jumpqueue_live`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._default import serving_runtime
from ._deferred import Deferred, Status
from .executors._base import Attempt, ExecutorHost, call_to_completion, running_loop

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._tasks import TaskOptions

__all__ = ["CapturedCall", "capture", "immediate", "live"]

logger = logging.getLogger("jumpqueue")


class CapturedCall:
    """A call deferred while a testing mode was on: what it was, and what became of it.

    Attributes:
        fn: the function (a task's own function: `task.fn`).
        args, kwargs: the arguments it was deferred with.
        options: its task options.
        deferred: its handle.
    """

    __slots__ = ("_ended_as", "args", "deferred", "fn", "kwargs", "options")

    def __init__(self, deferred: Deferred[Any]) -> None:
        self.fn: Callable[..., Any] = deferred.fn
        self.args: tuple[Any, ...] = deferred.args
        self.kwargs: dict[str, Any] = deferred.kwargs
        self.options: TaskOptions = deferred.options
        self.deferred = deferred
        self._ended_as: Status | None = None

    def __repr__(self) -> str:
        return f"<CapturedCall {self.deferred.name} {self.status}>"

    @property
    def status(self) -> Status:
        """The call's status; for `capture()`, once its block ended, the status it had then.

        HELD: its request had not finished; PENDING: it would run (released, or
        deferred outside a request); SKIPPED: its request failed; SHED: the
        backlog had no room; and the final statuses of calls that ran.
        """
        return self._ended_as or self.deferred.status

    def run(self) -> Any:
        """Call the function now, in the caller's thread, and return what it returns."""
        return call_to_completion(self.fn, self.args, self.kwargs)


@contextlib.contextmanager
def immediate(
    runtime: Runtime | None = None, *, sleep_backoff: bool = False
) -> Iterator[list[CapturedCall]]:
    """Run deferred calls synchronously, in the thread that hands them over.

    A call deferred outside a request runs inside `defer()`; one held for a
    request runs when the request's response is complete, in the thread that
    completes it (the test client's), or is skipped as in production. Retries
    run at once, unless `sleep_backoff` (then their backoff is slept); a call
    past its timeout times out as in production (it cannot be stopped in the
    test's thread: what it returns later is discarded). A delayed call
    (`delay`, `run_after`) runs at once, as `capture()` records it at once. A call deferred
    outside a request that fails raises its exception out of `defer()`, so a
    test sees it where the call was made. It applies to `runtime`, by default
    the default runtime, and yields the calls deferred in the block.
    """
    mode = _Immediate(sleep_backoff=sleep_backoff)
    with (runtime or serving_runtime())._testing_mode(mode):
        yield mode.calls


@contextlib.contextmanager
def capture(runtime: Runtime | None = None) -> Iterator[list[CapturedCall]]:
    """Record the calls deferred in the block, from any thread, without running them.

    Each records its fate (see `CapturedCall.status`): held, pending (it would
    run), skipped, shed. Pending calls are abandoned when the block ends; a call
    still held then is released by its request as usual. Bad
    input still raises at `defer()`. It applies to `runtime`, by default the
    default runtime.
    """
    mode = _Capture()
    with (runtime or serving_runtime())._testing_mode(mode):
        yield mode.calls


@contextlib.contextmanager
def live(runtime: Runtime | None = None) -> Iterator[None]:
    """Suspend the testing mode for the block: calls run on the configured executors."""
    with (runtime or serving_runtime())._testing_mode(None):
        yield


class _Capture:
    """The `capture()` mode: every call is recorded; none runs."""

    def __init__(self) -> None:
        self.calls: list[CapturedCall] = []
        self._given: list[Deferred[Any]] = []  # to its executor: they would run now
        self._lock = threading.Lock()

    def accepted(self, deferred: Deferred[Any], *, held: bool) -> None:  # noqa: ARG002 -- the mode's protocol
        with self._lock:
            self.calls.append(CapturedCall(deferred))

    def executor(self, host: ExecutorHost) -> _Recorder:  # noqa: ARG002 -- the mode's protocol
        return _Recorder(self)

    def retry_later(self, delay: float, again: Callable[[], None]) -> None:
        """Nothing runs, so nothing is retried."""

    def given(self, deferred: Deferred[Any]) -> None:
        with self._lock:
            self._given.append(deferred)

    def leftovers(self) -> list[Deferred[Any]]:
        with self._lock:
            calls, given = list(self.calls), list(self._given)
        for call in calls:
            call._ended_as = call.deferred.status
        return [deferred for deferred in given if not deferred.done()]


class _Immediate:
    """The `immediate()` mode: every call runs in the thread that hands it over."""

    def __init__(self, *, sleep_backoff: bool) -> None:
        self.calls: list[CapturedCall] = []
        self._sleep_backoff = sleep_backoff
        self._lock = threading.Lock()
        # Calls deferred outside a request: their failure is raised out of defer().
        self._direct: set[str] = set()

    def accepted(self, deferred: Deferred[Any], *, held: bool) -> None:
        with self._lock:
            self.calls.append(CapturedCall(deferred))
            if not held:
                self._direct.add(deferred.id)

    def executor(self, host: ExecutorHost) -> _InPlace:
        return _InPlace(host, self)

    def retry_later(self, delay: float, again: Callable[[], None]) -> None:
        if self._sleep_backoff:
            time.sleep(delay)
        again()

    def leftovers(self) -> list[Deferred[Any]]:
        with self._lock:
            held = [call for call in self.calls if call.status is Status.HELD]
        if held:
            logger.warning(
                "jumpqueue.testing: %d call(s) deferred in the block (the first: %s) are still "
                "held for a response that was not completed or closed, so they did not run; "
                "with Flask's or Werkzeug's test client, close the response: "
                "'with client.post(...) as response:', or buffered=True",
                len(held),
                held[0].deferred.name,
            )
        return []

    def raises_for(self, deferred: Deferred[Any]) -> bool:
        with self._lock:
            return deferred.id in self._direct


class _NoWorkers:
    """An executor of a testing mode has no workers of its own."""

    workers = 0
    stuck = 0

    def validate(self, deferred: Deferred[Any]) -> None:
        """Any call may be recorded or run in place."""

    def expire(self, attempt: Attempt) -> None:
        """A call running in the test's thread cannot be stopped: its outcome is discarded."""

    def close(self) -> None:
        """Nothing to stop."""


class _Recorder(_NoWorkers):
    """`capture()`'s executor: the call stays pending."""

    name = "capture"

    def __init__(self, mode: _Capture) -> None:
        self._mode = mode

    def submit(self, attempt: Attempt) -> None:
        """Keep the call pending: it would run now."""
        self._mode.given(attempt.deferred)


class _InPlace(_NoWorkers):
    """`immediate()`'s executor: runs each attempt in the thread that submits it."""

    name = "immediate"

    def __init__(self, host: ExecutorHost, mode: _Immediate) -> None:
        self._host = host
        self._mode = mode

    def submit(self, attempt: Attempt) -> None:
        """Run the attempt now; a call's first attempt returns once the call is final."""
        deferred = attempt.deferred
        self._run(attempt)
        if attempt.number != 1:
            return  # a retry, run inside its first attempt's submit()
        # A retry after a timeout runs on the timer's thread: the call ends there.
        deferred._wait(None)
        if deferred.status in (Status.FAILED, Status.TIMED_OUT) and self._mode.raises_for(deferred):
            error = deferred.exception(0)
            if error is not None:
                raise error

    def _run(self, attempt: Attempt) -> None:
        if not self._host.attempt_started(attempt):
            return
        try:
            if running_loop() is None:
                result = attempt.call()
            else:
                # On an event loop (an ASGI test client's): a coroutine cannot run to its
                # end in this thread, so the call runs in another while this one waits.
                with concurrent.futures.ThreadPoolExecutor(1) as helper:
                    result = helper.submit(attempt.call).result()
        except BaseException as error:
            self._host.attempt_finished(attempt, None, error)
            if not isinstance(error, Exception):
                raise  # the test's own KeyboardInterrupt or SystemExit
        else:
            self._host.attempt_finished(attempt, result, None)
