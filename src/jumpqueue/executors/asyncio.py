"""The async executor: coroutines on the application's loop, or on a loop thread of our own.

A loop that closes under a call (a test client's, at the end of each request)
lets it run to its end first, within the runtime's `shutdown_timeout`: what
closes a loop cancels its tasks while the loop is stopped, then runs it until
they end (`asyncio.run`, anyio, pytest-asyncio all do), and a call's task
turns that cancellation down. Calls not started yet go to the background loop,
and so does, within about a second, a call already handed to a loop that then
stops or closes without starting it (it would keep its slot for ever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from .._reentry import hand_over, take
from .._results import running_call
from .._scope import around_calls
from .._threads import daemon_thread
from ._base import running_loop
from ._line import WaitingLine

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from ._base import Attempt, ExecutorHost

logger = logging.getLogger("jumpqueue")

#: Seconds between looks at calls posted to another loop that has not started them yet.
POSTED_CHECK_INTERVAL = 0.25
#: Looks in a row that find such a loop stopped before its calls go to the background loop.
STOPPED_LOOKS = 4
#: `asyncio.Task(context=...)` is new in Python 3.11.
_TASK_TAKES_CONTEXT = sys.version_info >= (3, 11)


class AsyncExecutor:
    """Runs up to `max_async` coroutines at once.

    A call deferred on a thread with a running event loop runs on that loop;
    any other runs on one background loop thread that this executor owns.
    Every task is held by a strong reference until it is done.
    """

    name = "async"

    def __init__(self, config: Config, host: ExecutorHost) -> None:
        self._host = host
        self._limit = config.max_async
        self._grace = config.shutdown_timeout
        self._lock = threading.Lock()
        self._waiting = WaitingLine()
        self._slots: dict[Attempt, _CallTask | None] = {}
        self._tasks: set[_CallTask] = set()
        self._background: _LoopThread | None = None
        self._closing_loops: set[asyncio.AbstractEventLoop] = set()
        # Attempts posted to another thread's loop and not started there yet, with that
        # loop and how many looks in a row found it stopped: a loop that stops, or closes,
        # before it runs them must not keep their slots for ever.
        self._posted: dict[Attempt, tuple[asyncio.AbstractEventLoop, int]] = {}
        self._watching = False
        self._closed = False

    @property
    def workers(self) -> int:
        """The async executor has no workers of its own to count."""
        return 0

    @property
    def stuck(self) -> int:
        """Cancelled tasks that have not finished yet."""
        with self._lock:
            return len(self._tasks) - sum(task is not None for task in self._slots.values())

    def validate(self, deferred: Deferred[Any]) -> None:
        """The runtime has checked that the call is a coroutine function."""

    def submit(self, attempt: Attempt) -> None:
        """Queue the attempt and start what the bound allows."""
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            hand_over(self.submit, attempt)  # a signal handler's, on top of our code
            return
        try:
            loop = attempt.deferred.loop
            if (
                loop is not None
                and loop is running_loop()
                and len(self._slots) < self._limit
                and not self._waiting.size
                and not self._closed
                and loop not in self._closing_loops
            ):
                # The common case, on the caller's own loop with a slot free: it starts now.
                self._slots[attempt] = None
                ready = None
            else:
                self._waiting.append(attempt)
                ready = self._take_ready()
        finally:
            lock.release()
        if ready is None:
            self._start(attempt)
        else:
            self._start_all(ready)

    def expire(self, attempt: Attempt) -> None:
        """Cancel the attempt's task and give its slot to the next one at once."""
        with self._lock:
            task = self._slots.pop(attempt, None)
            ready = self._take_ready()
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.stop)
        self._start_all(ready)

    def close(self) -> None:
        """Cancel what still runs and stop the background loop."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            self._posted.clear()
            tasks = list(self._tasks)
            background, self._background = self._background, None
        for task in tasks:
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.stop)
        if background is not None:
            background.stop()

    def _take_ready(self) -> list[Attempt]:
        # Called with the lock held: reserve slots for as many waiting attempts as fit.
        ready = []
        while self._waiting.size and len(self._slots) < self._limit and not self._closed:
            attempt = self._waiting.popleft()
            self._slots[attempt] = None
            ready.append(attempt)
        return ready

    def _start_all(self, ready: list[Attempt]) -> None:
        if not ready:
            return
        current = running_loop()
        for attempt in ready:
            loop = attempt.deferred.loop
            if loop is not None and (loop.is_closed() or loop in self._closing_loops):
                loop = None
            if loop is current and loop is not None:
                self._start(attempt)  # on its loop already: create the task now
                continue
            if loop is None:
                self._background_loop().call_soon_threadsafe(self._start, attempt)
                continue
            with self._lock:
                self._posted[attempt] = (loop, 0)
            try:
                loop.call_soon_threadsafe(self._start_posted, attempt)
            except RuntimeError:  # the application's loop closed under us
                with self._lock:
                    del self._posted[attempt]
                self._background_loop().call_soon_threadsafe(self._start, attempt)
            else:
                self._watch_posted()

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._background is None:
                self._background = _LoopThread()
            return self._background.loop

    def _start_posted(self, attempt: Attempt) -> None:
        # Runs on the loop it was posted to, unless the attempt went to ours meanwhile.
        with self._lock:
            if self._posted.pop(attempt, None) is None:
                return
        self._start(attempt)

    def _watch_posted(self) -> None:
        with self._lock:
            if self._watching or self._closed:
                return
            self._watching = True
        loop = self._background_loop()
        loop.call_soon_threadsafe(loop.call_later, POSTED_CHECK_INTERVAL, self._check_posted)

    def _check_posted(self) -> None:
        # Runs on the background loop: calls posted to a loop that closed, or stayed
        # stopped for `STOPPED_LOOKS` looks, start here instead.
        stranded = []
        with self._lock:
            for attempt, (loop, looks) in list(self._posted.items()):
                stopped_looks = 0 if loop.is_running() else looks + 1
                if loop.is_closed() or stopped_looks >= STOPPED_LOOKS:
                    del self._posted[attempt]
                    stranded.append(attempt)
                else:
                    self._posted[attempt] = (loop, stopped_looks)
            self._watching = watching = bool(self._posted) and not self._closed
        for attempt in stranded:
            logger.debug(
                "jumpqueue: %s [%s] was waiting to start on an event loop that stopped; "
                "it starts on the background loop",
                attempt.deferred.name,
                attempt.deferred.id,
            )
            self._start(attempt)
        if watching:
            asyncio.get_running_loop().call_later(POSTED_CHECK_INTERVAL, self._check_posted)

    def _start(self, attempt: Attempt) -> None:
        # Runs on the attempt's loop.
        deferred = attempt.deferred
        context = deferred.context
        if context is None or not self._host.attempt_started(attempt):
            self._release(attempt)
            return
        loop = asyncio.get_running_loop()
        # On our own loop's thread, nothing a call raises may end the loop.
        background = self._background
        own_loop = background is not None and background.loop is loop
        if deferred.options.retries:
            context = context.copy()  # each attempt starts from the call's own context
        coroutine = _outcome(self, attempt, contain_exits=own_loop)
        # Asyncio's own constructor, not an override: a Python frame per call costs.
        if _TASK_TAKES_CONTEXT:
            task = _CallTask(coroutine, loop=loop, context=context)  # type: ignore[call-arg,unused-ignore]
        else:
            task = context.run(_CallTask, coroutine, loop=loop)
        task.attempt = attempt
        task.executor = self
        task.stopping = False
        task.started = False
        with self._lock:
            self._tasks.add(task)
            expired = attempt not in self._slots  # timed out before its task existed
            if not expired:
                self._slots[attempt] = task
                attempt.worker = task  # for the slow-call log
        if expired:
            task.stop()

    def _loop_closing(self, task: _CallTask) -> None:
        # Runs on the closing loop, stopped: its closer runs it again until the task ends.
        loop = task.get_loop()
        with self._lock:
            self._closing_loops = {known for known in self._closing_loops if not known.is_closed()}
            self._closing_loops.add(loop)
        loop.call_later(self._grace, self._abandon, task)
        logger.debug(
            "jumpqueue: the event loop of %s is closing: the call runs to its end first "
            "(for up to %.1f s)",
            task.get_name(),
            self._grace,
        )

    def _abandon(self, task: _CallTask) -> None:
        if task.done():
            return
        logger.warning(
            "jumpqueue: %s was still running %.1f s after its event loop began to close; abandoned",
            task.get_name(),
            self._grace,
        )
        task.stop()

    def _finished(self, task: _CallTask, result: Any, error: BaseException | None) -> None:
        # Told by the task's coroutine as it ends, in the call's context: no done
        # callback, which would take another turn of the loop for each call.
        attempt = task.attempt
        attempt.worker = None
        self._host.attempt_finished(attempt, result, error)
        self._release(attempt, task)

    def _cancelled(self, task: _CallTask) -> None:
        if not task.stopping:
            logger.warning(
                "jumpqueue: %s was cancelled by its event loop before it finished; abandoned",
                task.get_name(),
            )
        self._finished(task, None, asyncio.CancelledError())

    def _cancelled_unstarted(self, task: _CallTask) -> None:
        # A done callback: a task cancelled before its first step never runs its coroutine.
        if task.cancelled() and not task.started:
            self._cancelled(task)

    def _release(self, attempt: Attempt, task: asyncio.Task[Any] | None = None) -> None:
        with self._lock:
            if task is not None:
                self._tasks.discard(task)
            self._slots.pop(attempt, None)
            ready = self._take_ready() if self._waiting.size else None
        if ready:
            self._start_all(ready)


class _CallTask(asyncio.Task[None]):
    """A call's task: it turns down the cancellation of a loop that is closing, and ends first.

    A task is cancelled while its loop is not running only by what closes the
    loop; cancellations from inside the loop (timeouts, task groups, the
    application) go through, and so do the executor's own (`stop()`).
    """

    __slots__ = ("attempt", "executor", "started", "stopping")

    attempt: Attempt
    #: Told when the call ends, and, on the closing loop, when what closes it cancels the task.
    executor: AsyncExecutor
    #: Whether its coroutine has begun: until then, only a done callback can see it end.
    started: bool
    stopping: bool

    def get_name(self) -> str:
        """The call's name and id (made when asked: most tasks are never named)."""
        deferred = self.attempt.deferred
        return f"{deferred.name} [{deferred.id}]"

    def stop(self) -> None:
        """Cancel the task for the executor: a timeout, a shutdown, a closing loop's deadline."""
        self.stopping = True
        self.cancel()

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel, unless the loop is closing: then the call runs to its end (or its deadline)."""
        if self.stopping or self.done() or self.get_loop().is_running():
            cancelled = super().cancel(msg)
            if cancelled and not self.started:
                told = self.executor._cancelled_unstarted
                self.remove_done_callback(told)  # cancelled twice, told once
                self.add_done_callback(told)
            return cancelled
        self.executor._loop_closing(self)
        return False


async def _outcome(executor: AsyncExecutor, attempt: Attempt, *, contain_exits: bool) -> None:
    # A failure is an outcome, not the task's exception: a closing loop would log it again.
    # A SystemExit that a task raises stops its loop (asyncio re-raises it from the step):
    # on the application's loop it may be the thread's own (a signal handler's), so it goes
    # on; on ours it is the call's.
    task: _CallTask = asyncio.current_task()  # type: ignore[assignment]
    task.started = True
    deferred = attempt.deferred
    running_call.set((deferred.id, attempt.number))  # in the attempt's own context
    error: BaseException | None = None
    result = None
    try:
        if around_calls.get():
            result = await attempt.coroutine()
        else:
            result = await deferred.fn(*deferred.args, **deferred.kwargs)
    except Exception as failure:  # noqa: BLE001 -- reported to the runtime, which logs it
        error = failure
    except asyncio.CancelledError:
        executor._cancelled(task)
        raise
    except BaseException as failure:
        error = failure
        if not contain_exits:
            executor._finished(task, None, failure)
            raise
    executor._finished(task, result, error)


class _LoopThread:
    """An event loop running forever on a daemon thread, for calls made outside any loop."""

    def __init__(self) -> None:
        # Made in an empty context: the loop's own handles (its self-pipe's reader) keep
        # the context they were made in for as long as the loop lives, and the first
        # coroutine call often comes from a request.
        self.loop = contextvars.Context().run(asyncio.new_event_loop)
        self._thread = daemon_thread(self.loop.run_forever, "jumpqueue-asyncio")
        self._thread.start()

    def stop(self, grace: float = 1.0) -> None:
        """Cancel the loop's tasks, give them `grace` seconds to unwind, and stop it."""
        if self._thread is threading.current_thread():
            self.loop.stop()
            return
        unwound = asyncio.run_coroutine_threadsafe(_cancel_all(grace), self.loop)
        try:
            unwound.result(grace + 1.0)
        except (TimeoutError, concurrent.futures.TimeoutError):
            logger.warning("jumpqueue: background tasks ignored cancellation at shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _cancel_all(grace: float) -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace)
