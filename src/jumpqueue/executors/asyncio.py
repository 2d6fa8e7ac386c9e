"""The async executor: coroutines on the application's loop, or on a loop thread of our own."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING, Any

from ._base import running_loop

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from ._base import Attempt, ExecutorHost

logger = logging.getLogger("jumpqueue")


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
        self._lock = threading.Lock()
        self._waiting: collections.deque[Attempt] = collections.deque()
        self._slots: dict[Attempt, asyncio.Task[Any] | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: _LoopThread | None = None
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
        with self._lock:
            self._waiting.append(attempt)
            ready = self._take_ready()
        self._start_all(ready)

    def expire(self, attempt: Attempt) -> None:
        """Cancel the attempt's task and give its slot to the next one at once."""
        with self._lock:
            task = self._slots.pop(attempt, None)
            ready = self._take_ready()
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._start_all(ready)

    def close(self) -> None:
        """Cancel what still runs and stop the background loop."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            tasks = list(self._tasks)
            background, self._background = self._background, None
        for task in tasks:
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        if background is not None:
            background.stop()

    def _take_ready(self) -> list[Attempt]:
        # Called with the lock held: reserve slots for as many waiting attempts as fit.
        ready = []
        while self._waiting and len(self._slots) < self._limit and not self._closed:
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
            if loop is current and loop is not None:
                self._start(attempt)  # on its loop already: create the task now
                continue
            if loop is None or loop.is_closed():
                loop = self._background_loop()
            try:
                loop.call_soon_threadsafe(self._start, attempt)
            except RuntimeError:  # the application's loop closed under us
                self._background_loop().call_soon_threadsafe(self._start, attempt)

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._background is None:
                self._background = _LoopThread()
            return self._background.loop

    def _start(self, attempt: Attempt) -> None:
        # Runs on the attempt's loop.
        context = attempt.deferred.context
        if context is None or not self._host.attempt_started(attempt):
            self._release(attempt)
            return
        context = context.copy()
        task = context.run(_create_task, attempt)
        with self._lock:
            self._tasks.add(task)
            expired = attempt not in self._slots  # timed out before its task existed
            if not expired:
                self._slots[attempt] = task
        if expired:
            task.cancel()
        task.add_done_callback(lambda done: self._finished(attempt, done))

    def _finished(self, attempt: Attempt, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            error: BaseException | None = asyncio.CancelledError()
            result = None
        else:
            error = task.exception()
            result = None if error is not None else task.result()
        self._host.attempt_finished(attempt, result, error)
        self._release(attempt, task)

    def _release(self, attempt: Attempt, task: asyncio.Task[Any] | None = None) -> None:
        with self._lock:
            if task is not None:
                self._tasks.discard(task)
            self._slots.pop(attempt, None)
            ready = self._take_ready()
        self._start_all(ready)


def _create_task(attempt: Attempt) -> asyncio.Task[Any]:
    # Called inside the call's context, which the task then keeps.
    return asyncio.get_running_loop().create_task(attempt.coroutine())


class _LoopThread:
    """An event loop running forever on a daemon thread, for calls made outside any loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jumpqueue-asyncio", daemon=True
        )
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
