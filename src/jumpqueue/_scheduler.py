"""One timer thread per runtime: retries after their backoff, and timeouts."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from ._reentry import hand_over, take
from ._threads import daemon_thread

logger = logging.getLogger("jumpqueue")

#: Longest single wait for the next timer: a later one is waited for in several.
_LONGEST_WAIT = min(threading.TIMEOUT_MAX, 86_400.0)


def _nothing() -> None:
    pass


class Timer:
    """A scheduled callback; `cancel()` stops it from running if it has not yet."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (a no-op once it ran)."""
        self.cancelled = True
        # Kept in the heap until due: it must not keep what the callback reaches alive.
        self.callback = _nothing


class Scheduler:
    """Runs callbacks at monotonic times on a daemon thread started on first use."""

    def __init__(self, name: str = "jumpqueue-scheduler") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run callback after `delay` seconds on the scheduler's thread."""
        timer = Timer(time.monotonic() + delay, callback)
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            hand_over(self._schedule, timer)  # a signal handler's, on top of our code
            return timer
        try:
            self._schedule_locked(timer)
        finally:
            lock.release()
        return timer

    def _schedule(self, timer: Timer) -> None:
        with self._lock:
            self._schedule_locked(timer)

    def _schedule_locked(self, timer: Timer) -> None:
        if self._stopped:
            timer.cancelled = True
            return
        heapq.heappush(self._heap, (timer.when, next(self._order), timer))
        if self._thread is None:
            self._thread = daemon_thread(self._run, self._name)
            self._thread.start()
        elif self._heap[0][2] is timer:
            self._wakeup.notify()

    def stop(self) -> None:
        """Cancel what is scheduled and end the thread; idempotent."""
        with self._wakeup:
            self._stopped = True
            for _, _, timer in self._heap:
                timer.cancelled = True
            self._heap.clear()
            self._wakeup.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    delay = self._heap[0][0] - time.monotonic() if self._heap else None
                    # A timer due in 1e300 s must not overflow the wait and end the thread.
                    self._wakeup.wait(None if delay is None else min(delay, _LONGEST_WAIT))
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:  # a failing callback must not stop every later timer
                logger.exception("jumpqueue scheduler callback %r failed", timer.callback)
            del timer  # nothing of it stays reachable while this thread waits
