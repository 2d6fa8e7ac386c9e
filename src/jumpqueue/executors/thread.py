"""The thread executor: a bounded pool of daemon threads that a hung call cannot wedge."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from .._ratelimit import RateLimitedLog
from .._reentry import hand_over, take
from .._threads import daemon_thread
from ._line import WaitingLine

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from ._base import Attempt, ExecutorHost

logger = logging.getLogger("jumpqueue")
#: In the queue for an attempt that waits in the line (`WaitingLine`).
_FROM_LINE = object()


class ThreadExecutor:
    """Runs plain functions on up to `max_workers` threads.

    A thread whose call runs past its timeout cannot be killed: it is set aside
    as stuck and a new thread takes its place, up to `max_stuck_threads`
    stuck threads; past that bound the pool shrinks until a stuck call returns.
    """

    name = "thread"

    def __init__(self, config: Config, host: ExecutorHost) -> None:
        self._host = host
        self._size = config.max_workers
        self._max_stuck = config.max_stuck_threads
        # Attempts, in the order they came; `_FROM_LINE` for each attempt in `_line`
        # (those with a priority, and every one that comes while such a one waits).
        self._queue: queue.SimpleQueue[Attempt | object | None] = queue.SimpleQueue()
        self._line = WaitingLine()
        self._line_lock = threading.Lock()
        self._lock = threading.Lock()
        # One token per thread waiting for work: a SimpleQueue, not a Semaphore, so that
        # `submit()` takes no lock the code a signal handler interrupted may hold.
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()
        # Serving threads; a thread stuck past a timeout moves to _stuck.
        self._serving: set[threading.Thread] = set()
        self._stuck: set[object] = set()
        self._closed = False
        self._numbers = iter(range(1, 1 << 62))
        self._shrunk_log = RateLimitedLog(logger, interval=10.0)

    @property
    def workers(self) -> int:
        """Threads alive and serving."""
        return len(self._serving)

    @property
    def stuck(self) -> int:
        """Threads still running a call that timed out."""
        return len(self._stuck)

    def validate(self, deferred: Deferred[Any]) -> None:
        """Every callable can run on a thread."""

    def submit(self, attempt: Attempt) -> None:
        """Queue the attempt; start a thread if none is idle and the pool has room."""
        if attempt.deferred.options.priority == 0 and not self._line.size:
            self._queue.put(attempt)  # first come, first served: no lock
        else:
            lock = self._line_lock
            if not lock.acquire(False) and not take(lock):
                hand_over(self.submit, attempt)  # a signal handler's, on top of this pool's code
                return
            try:
                self._line.append(attempt)
            finally:
                lock.release()
            self._queue.put(_FROM_LINE)
        if not self._idle.empty():
            try:
                self._idle.get_nowait()
            except queue.Empty:  # another submit took the thread that waited
                pass
            else:
                return  # a thread waits: it takes this attempt
        if len(self._serving) >= self._size:
            return  # a thread will take it; checking the size first keeps the lock uncontended
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            hand_over(self._grow_now)  # a signal handler's call, on top of this pool's code
            return
        try:
            self._grow()
        finally:
            lock.release()

    def _grow_now(self) -> None:
        with self._lock:
            self._grow()

    def expire(self, attempt: Attempt) -> None:
        """Set aside the thread running this attempt and let another take its place."""
        with self._lock:
            thread = attempt.worker
            if thread is None:  # it returned just now
                return
            self._serving.discard(thread)  # type: ignore[arg-type,unused-ignore]
            self._stuck.add(thread)
            stuck = len(self._stuck)
            if stuck >= self._max_stuck:
                logger.error(
                    "jumpqueue: %d threads are stuck in calls past their timeout "
                    "(max_stuck_threads=%d); the pool has %d of %d threads until they return",
                    stuck,
                    self._max_stuck,
                    min(self._size, self._size + self._max_stuck - stuck),
                    self._size,
                )
            # Always: an idle-thread token may be stale, so a later submit may not start one.
            self._grow()

    def close(self) -> None:
        """Ask every serving thread to exit once its call returns."""
        with self._lock:
            self._closed = True
            for _ in self._serving:
                self._queue.put(None)

    def _grow(self) -> None:
        # Called with the lock held.
        if self._closed or len(self._serving) >= self._size:
            return
        if len(self._serving) + len(self._stuck) >= self._size + self._max_stuck:
            self._shrunk_log.warning(
                "jumpqueue: no thread started: %d stuck threads hold the pool's spare room",
                len(self._stuck),
            )
            return
        thread = daemon_thread(self._serve, f"jumpqueue-thread-{next(self._numbers)}")
        self._serving.add(thread)
        try:
            thread.start()
        except RuntimeError as error:  # out of threads: the queued calls wait for the next try
            self._serving.discard(thread)
            self._shrunk_log.warning("jumpqueue: could not start a thread: %s", error)

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                break
            attempt = self._next(item)
            # Set before the attempt can start, so a timeout always finds its thread.
            attempt.worker = me
            if self._host.attempt_started(attempt):
                self._run(attempt)
            if attempt.timer is None:
                # No timeout, so no expire(): nothing set this thread aside meanwhile.
                attempt.worker = None
            elif self._set_aside(attempt, me):
                return
            del attempt  # nothing of the last call stays reachable while this thread waits
            self._idle.put(None)
        with self._lock:
            self._serving.discard(me)

    def _set_aside(self, attempt: Attempt, me: threading.Thread) -> bool:
        # After a call that had a timeout: True if it ran past it and this thread was set
        # aside meanwhile; a replacement serves in its place (or now can, with one stuck
        # thread fewer).
        with self._lock:
            attempt.worker = None
            if me not in self._stuck:
                return False
            self._stuck.discard(me)
            self._grow()
            return True

    def _next(self, item: Attempt | object) -> Attempt:
        # The attempt to run for one item taken from the queue: while the line holds
        # attempts, the first of the line, an attempt taken from the queue joining it
        # (ahead of the line's own: it came before them).
        if item is not _FROM_LINE and not self._line.size:
            return item  # type: ignore[return-value]
        with self._line_lock:
            if item is not _FROM_LINE:
                self._line.append(item, came_first=True)  # type: ignore[arg-type]
            return self._line.popleft()

    def _run(self, attempt: Attempt) -> None:
        try:
            result = attempt.call()
        except BaseException as error:  # noqa: BLE001 -- every outcome is reported, even exits
            self._host.attempt_finished(attempt, None, error)
        else:
            self._host.attempt_finished(attempt, result, None)
