"""The runtime's status report: its snapshot, written once a second for the other workers to read.

Off until asked: without `status_dir`, a `StatusReporter` does nothing until
the status page or the Prometheus collector first reads it (`start()`). With
`status_dir`, it observes calls from the start, and once the runtime makes its
first executor (a server worker serves; a master process that only imported
the application does not), it writes the snapshot to `worker-<pid>.json` there
once a second from the runtime's timer thread, and folds the files of workers
that died long ago into `exited.json`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _observe, _snapshots
from .._metrics import Histogram
from .._ratelimit import RateLimitedLog
from .._scheduler import Scheduler
from .._stats import Stats

if TYPE_CHECKING:
    from .._journal.owner import Owner

logger = logging.getLogger("jumpqueue")

#: Seconds between two snapshots written.
INTERVAL = 1.0
#: A live worker whose snapshot is older than this is shown as unresponsive.
STALE_AFTER = 5.0
#: Seconds a dead worker is shown before its counters are folded into `exited.json`.
FORGET_AFTER = 300.0
#: Snapshots written between two looks for dead workers' files.
FOLD_EVERY = 10
#: `Stats` fields that are gauges (what is now), not counters (what happened).
GAUGES = ("held", "pending", "running", "workers", "stuck_threads", "journal_degraded")


class TaskMetrics(_observe.CallObserver):
    """Per task: calls by outcome, and histograms of run time and of wait before start.

    An observer of every call deferred while it is registered: the wait
    before start runs from `defer()` to the first attempt's start. `slow`
    counts attempts that ran past `slow_threshold` seconds (when they end);
    `peak` is the most calls `in_flight()` said were in flight at a `defer()`.
    """

    def __init__(
        self, slow_threshold: float | None = None, in_flight: Callable[[], int] | None = None
    ) -> None:
        self._slow_threshold = slow_threshold
        self._in_flight = in_flight
        self.peak = 0
        self._lock = threading.Lock()
        self._outcomes: dict[str, dict[str, int]] = {}
        self._run: dict[str, Histogram] = {}
        self._wait: dict[str, Histogram] = {}
        # When each call not yet started was deferred, by id (dict operations are atomic).
        self._deferred_at: dict[str, float] = {}
        self.slow = 0

    def deferred(self, call: _observe.ObservedCall) -> None:
        """Note when the call was deferred, and how many were in flight then."""
        self._deferred_at[call.id] = time.monotonic()
        if self._in_flight is not None:
            # Unlocked: a peak missed by a racing call is one call off, never over the bound.
            in_flight = self._in_flight()
            self.peak = max(self.peak, in_flight)

    def attempt_started(self, call: _observe.ObservedCall, attempt: int) -> float:
        """Count the first attempt's wait; the start time is the attempt's token."""
        del attempt  # a retry has no wait of its own: its backoff is not one
        now = time.monotonic()
        since = self._deferred_at.pop(call.id, None)
        if since is not None:
            with self._lock:
                _histogram(self._wait, call.name).observe(now - since)
        return now

    def attempt_finished(
        self,
        call: _observe.ObservedCall,
        attempt: int,
        outcome: str,
        error: BaseException | None,
        token: object,
    ) -> None:
        """Count the attempt's run time."""
        del attempt, outcome, error  # the call's outcome is counted once, when it settles
        if isinstance(token, float):
            seconds = time.monotonic() - token
            threshold = self._slow_threshold
            with self._lock:
                _histogram(self._run, call.name).observe(seconds)
                if threshold is not None and seconds > threshold:
                    self.slow += 1

    def settled(
        self, call: _observe.ObservedCall, status: str, error: BaseException | None
    ) -> None:
        """Count the call's outcome."""
        del error
        self._deferred_at.pop(call.id, None)
        with self._lock:
            counts = self._outcomes.get(call.name)
            if counts is None:
                counts = self._outcomes[call.name] = {}
            counts[status] = counts.get(status, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """Per task name: `outcomes`, `run` and `wait` (histograms as plain data)."""
        with self._lock:
            tasks: dict[str, Any] = {}
            for name, counts in self._outcomes.items():
                tasks.setdefault(name, {})["outcomes"] = dict(counts)
            for key, histograms in (("run", self._run), ("wait", self._wait)):
                for name, histogram in histograms.items():
                    tasks.setdefault(name, {})[key] = histogram.as_dict()
            return tasks


def _histogram(histograms: dict[str, Histogram], task: str) -> Histogram:
    # Not setdefault(): that would make a histogram on every call to throw away.
    histogram = histograms.get(task)
    if histogram is None:
        histogram = histograms[task] = Histogram()
    return histogram


class StatusReporter:
    """The snapshot of one runtime in one process, and its file in `status_dir`."""

    def __init__(
        self,
        directory: str | None,
        stats: Callable[[], Stats],
        scheduler: Scheduler,
        slow_threshold: float | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.directory = directory
        self._stats = stats
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._started: float | None = None
        self._closed = False
        self._ticks = 0
        self._owner: Owner | None = None
        self._failures = RateLimitedLog(logger, interval=60.0)
        self.tasks = TaskMetrics(slow_threshold, in_flight)
        if directory is not None or _wanted:  # every call counts by task, from the first one
            _observe.add_observer(self.tasks)
        _reporters.add(self)

    @property
    def started(self) -> bool:
        """True once reporting has begun in this process."""
        return self._started is not None

    def start(self) -> None:
        """Begin reporting (idempotent); with a directory, write the first snapshot soon."""
        with self._lock:
            if self._started is not None or self._closed:
                return
            self._started = time.time()
            self._owner = _this_process()
        _observe.add_observer(self.tasks)
        if self.directory is not None:
            self._scheduler.call_later(0.0, self._tick)

    def snapshot(self) -> dict[str, Any]:
        """This runtime now: counters (stats, per task) and gauges, as plain data."""
        stats = self._stats()
        counters = stats.as_dict()
        gauges: dict[str, Any] = {name: counters.pop(name) for name in GAUGES}
        gauges["max_in_flight"] = max(self.tasks.peak, stats.in_flight)
        counters["tasks"] = self.tasks.as_dict()
        counters["slow"] = self.tasks.slow
        owner = self._owner or _this_process()
        return {
            "version": _snapshots.VERSION,
            "pid": owner.pid,
            "owner": str(owner),
            "started": self._started or time.time(),
            "written": time.time(),
            "interval": INTERVAL,
            "counters": counters,
            "gauges": gauges,
        }

    def _tick(self) -> None:
        directory = self.directory
        if directory is None or self._closed:
            return
        try:
            _snapshots.prepare(directory)
            _snapshots.write(_snapshots.path_for(directory, os.getpid()), self.snapshot())
            self._ticks += 1
            if self._ticks % FOLD_EVERY == 1:
                self._fold_forgotten(directory)
        except OSError as error:
            self._failures.warning(
                "jumpqueue: cannot write the status snapshot in %s: %s", directory, error
            )
        self._scheduler.call_later(INTERVAL, self._tick)

    def _fold_forgotten(self, directory: str) -> None:
        now = time.time()
        _snapshots.sweep(directory, now - FORGET_AFTER)
        for path, snapshot in _snapshots.workers(directory):
            if worker_state(snapshot, now) == "dead" and now - written(snapshot) > FORGET_AFTER:
                _snapshots.fold(directory, path, snapshot)

    def close(self) -> None:
        """The runtime shut down: its counters join those of the workers gone, its file goes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started is not None
        self.detach()
        directory = self.directory
        if not started or directory is None:
            return
        path = _snapshots.path_for(directory, os.getpid())
        try:
            _snapshots.write(path, self.snapshot())
            _snapshots.fold(directory, path, _snapshots.read(path) or {})
        except OSError as error:
            logger.warning("jumpqueue: cannot fold the status snapshot in %s: %s", directory, error)

    def detach(self) -> None:
        """Stop observing calls (at shutdown, and in a forked child, which reports anew)."""
        with contextlib.suppress(ValueError):  # never started, or detached already
            _observe.remove_observer(self.tasks)


#: Every reporter made, to observe calls once a status page or collector exists.
_reporters: weakref.WeakSet[StatusReporter] = weakref.WeakSet()
_wanted = False


def want_status() -> None:
    """A status page or collector exists: every runtime observes its calls from now on.

    Only the observer is added: nothing is written and no thread starts
    until a runtime serves, or the page is read.
    """
    global _wanted  # noqa: PLW0603 -- one flag per process, set once
    _wanted = True
    for reporter in list(_reporters):
        if not reporter._closed:
            _observe.add_observer(reporter.tasks)


def _this_process() -> Owner:
    # Imported here: the journal's package brings its SQLite library along.
    from .._journal.owner import current_owner  # noqa: PLC0415

    return current_owner()


def written(snapshot: dict[str, Any]) -> float:
    """When the snapshot was written (wall clock), 0.0 if it does not say."""
    value = snapshot.get("written")
    return float(value) if isinstance(value, (int, float)) else 0.0


def worker_state(snapshot: dict[str, Any], now: float) -> str:
    """The worker's state: alive, unresponsive (its snapshot is stale), or dead."""
    from .._journal.owner import Owner, is_alive  # noqa: PLC0415 -- as in `start()`

    owner = Owner.parse(snapshot.get("owner"))
    alive = is_alive(owner) if owner is not None else None
    if alive is False:
        return "dead"
    interval = snapshot.get("interval")
    stale = max(STALE_AFTER, 5 * interval if isinstance(interval, (int, float)) else 0.0)
    return "unresponsive" if now - written(snapshot) > stale else "alive"
