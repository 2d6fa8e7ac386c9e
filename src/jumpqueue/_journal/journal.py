"""The journal of one runtime: group commits, leases, recovery, the spill, and falling back.

One connection per runtime and process, and one transaction at a time on it.
A caller queues its records and takes its turn: whoever gets the turn writes
everything queued by then, its own and other callers' records, in one
transaction (the group commit), and those callers find theirs written. Marks
(an attempt started, a call finished) wait, without anyone waiting for them,
for the next transaction, or at most `MARK_DELAY`: a mark lost to a crash
only means the call runs again, which at-least-once allows. A thread per
journal opens the file, writes marks that waited long enough, renews this
process's leases, takes up records of dead owners and spilled ones, and
prunes old done records. A call its backend could not take comes back as
pending with a "not before" time that grows with each failed hand-off of it
(`handoff_backoff`): a broker that stays down costs a few writes, not a loop.
When a write fails (full disk, read-only file) the journal says so once,
makes callers fall back, and probes the file on a back-off until a write
succeeds again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from .._codec import known_task
from .._deferred import Deferred, Status
from .._ratelimit import RateLimitedLog
from .records import make_record
from .store import CLAIMED, DONE, FAILED, HELD, PENDING, SKIPPED, Record
from .upkeep import JournalUpkeep
from .writer import PROBE_FIRST, Batch, Mark

if TYPE_CHECKING:
    from .._config import Config
    from .upkeep import JournalHost

logger = logging.getLogger("jumpqueue")

#: Longest a caller waits for the transaction that writes its calls.
COMMIT_WAIT = 5.0
#: First and longest wait before a call its backend could not take is tried again.
HANDOFF_BACKOFF_FIRST, HANDOFF_BACKOFF_MAX = 1.0, 60.0
_FINAL_STATES = {
    Status.SUCCEEDED: DONE,
    Status.FAILED: FAILED,
    Status.TIMED_OUT: FAILED,
    Status.SKIPPED: SKIPPED,
    Status.ABANDONED: PENDING,  # it did not get to finish here: another may run it
    Status.HANDED_OFF: DONE,  # the backend's engine has it
}


def handoff_backoff(fallbacks: int) -> float:
    """Seconds before a call is tried again after its `fallbacks`-th failed hand-off.

    `HANDOFF_BACKOFF_FIRST` doubling up to `HANDOFF_BACKOFF_MAX`, less up to a
    half at random, so that calls that failed together do not return together.
    """
    delay = min(HANDOFF_BACKOFF_FIRST * 2.0 ** min(fallbacks - 1, 30), HANDOFF_BACKOFF_MAX)
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not cryptography


class Journal(JournalUpkeep):
    """The journal of one runtime in one process; opens its file on first use."""

    # Its parts are base classes, not objects it owns: they share nearly all the state
    # set up here (locks, store, timers). `JournalWriter` (queued records and marks,
    # the transaction) under `JournalUpkeep` (its thread).

    def __init__(self, config: Config, host: JournalHost) -> None:
        if config.journal is None:  # pragma: no cover -- the runtime checks first
            raise ValueError("no journal configured")
        self.path = config.journal
        self._config = config
        self._host = host
        self._lease = config.journal_lease
        self._lock = threading.Lock()  # guards the queues; held briefly, never while writing
        self._turn = threading.Lock()  # one transaction at a time on the connection
        self._wake = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)
        self._batches = []
        self._marks = {}
        self._marks_since = 0.0  # when the oldest unwritten mark was made
        self._thread = None
        self._opened = threading.Event()
        self._closing = False
        self._store = None
        self._owner = None
        self._degraded = False
        self._degraded_since = 0.0
        self._probe_delay = PROBE_FIRST
        self._feed = False
        now = time.monotonic()
        self._next_probe = self._next_renew = self._next_reclaim = self._next_prune = now
        self._fallback_log = RateLimitedLog(logger, interval=60.0)
        self._degraded_log = RateLimitedLog(logger, interval=60.0)
        self._recovered_log = RateLimitedLog(logger, interval=60.0)
        self._announced = False

    def __repr__(self) -> str:
        state = "degraded" if self._degraded else "open" if self._store else "not open"
        return f"<Journal {self.path} {state}>"

    # -- what the runtime calls --------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while writes fail and calls fall back (see `Config.on_journal_error`)."""
        return self._degraded

    @property
    def refusing(self) -> bool:
        """True while new calls get the overload policy because the journal fails."""
        return self._degraded and self._config.on_journal_error == "overload"

    def prepare(self, deferred: Deferred[Any]) -> None:
        """Encode the call for the journal (not written yet).

        Raises:
            InvalidCallError: the function cannot be named, or its arguments encoded.
        """
        unknown = known_task(deferred.name) is None
        deferred._record = make_record(deferred, self._config.serializer)
        if unknown:  # registered just now: records waiting for that name may run
            self._feed = True

    def open(self, timeout: float) -> bool:
        """Open the file now (and take up what it holds); True if it takes writes."""
        self._start()
        self._opened.wait(timeout)
        return self._store is not None and not self._degraded

    def commit(self, records: list[Record], state: str = CLAIMED) -> int:
        """Write records now, with whatever else is queued; how many were not written."""
        if self._degraded or self._closing or not self._ready():
            self._fell_back(len(records))
            return len(records)
        batch = Batch(records, state)
        with self._lock:
            self._batches.append(batch)
        if self._turn.acquire(timeout=COMMIT_WAIT):
            try:
                if not batch.done.is_set():  # else a caller before us wrote it
                    self._write(marks=False)
            finally:
                self._turn.release()
        else:
            # No turn in time: withdraw the batch, lest it be written after the call ran
            # without it. A writer that took it already decides; its transaction is short.
            with self._lock:
                withdrawn = batch in self._batches
                if withdrawn:
                    self._batches.remove(batch)
            if not withdrawn:
                batch.done.wait()
        if batch.done.is_set() and batch.ok:
            return 0
        unwritten = sum(not record.written for record in records)
        self._fell_back(unwritten)
        return unwritten

    def spill(self, record: Record, *, held: bool) -> bool:
        """Write a call that has no room in the backlog, to run when there is; True if written.

        A call spilled during a request is held (owned, not run) until its
        request ends: `release_spilled()` then makes it runnable or skips it.
        """
        self._feed = True
        return self.commit([record], HELD if held else PENDING) == 0

    def hand_back(self, record: Record) -> float | None:
        """Take back a call its backend could not take, to be taken up after a back-off.

        The record goes back to pending, not to be taken up for
        `handoff_backoff()` seconds, which grow with each failed hand-off of
        the call. Returns those seconds, or None if the journal cannot take
        the call now (it is failing, or closing): the caller runs it another way.
        """
        if self._degraded or self._closing:
            return None
        record.handoff_fallbacks += 1
        delay = handoff_backoff(record.handoff_fallbacks)
        record.not_before = time.time() + delay
        if record.written:
            mark = Mark(final=PENDING, not_before=record.not_before, handoff_fallbacks=1)
            self._mark(record.id, mark)
        elif self.commit([record], PENDING):  # it was not journaled when it was accepted
            return None
        return delay

    def release_spilled(self, record: Record, *, run: bool) -> None:
        """The request that spilled this call ended: let it run, or skip it."""
        self._mark(record.id, Mark(final=PENDING if run else SKIPPED))
        self._feed = True

    def started(self, record: Record) -> None:
        """An attempt of a journaled call started (counted in the journal)."""
        if record.written:
            self._mark(record.id, Mark(attempts=1))

    def settled(self, record: Record, status: Status, error: BaseException | None) -> None:
        """A journaled call reached a final status in this process."""
        final = _FINAL_STATES.get(status)
        if final is None or not record.written:
            return
        self._mark(record.id, Mark(final=final, error=error if final == FAILED else None))

    def left_over(self, record: Record, *, running: bool) -> None:
        """At shutdown: a call that did not finish stays for the next start.

        One still running keeps its owner, so that nobody runs it again while
        this process lives; the others are released at once.
        """
        if not running:
            self._mark(record.id, Mark(final=PENDING))

    def close(self, timeout: float) -> None:
        """Write what is still to be written, stop the writer, close the file."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- for tests and the command line ------------------------------------------------------

    def flush(self, timeout: float = COMMIT_WAIT) -> bool:
        """Write every mark made before now; False if they could not be written."""
        if self._closing or self._degraded or not self._ready(timeout):
            return False
        if not self._turn.acquire(timeout=timeout):
            return False
        try:
            return self._write(marks=True)
        finally:
            self._turn.release()

    def wait_degraded(self, degraded: bool, timeout: float) -> bool:
        """Wait until the journal is (or is no longer) degraded; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._degraded is degraded, timeout)

    # -- for the calls above -----------------------------------------------------------------

    def _ready(self, timeout: float = COMMIT_WAIT) -> bool:
        # Started, and the first opening done (it may have failed: see `degraded`).
        if not self._opened.is_set():
            self._start()
            self._opened.wait(timeout)
        return self._store is not None and not self._degraded

    def _fell_back(self, count: int) -> None:
        if count:
            self._fallback_log.warning(
                "jumpqueue: %d call(s) not journaled (%s); %s",
                count,
                self.path,
                "they run without the journal"
                if self._config.on_journal_error == "memory"
                else "the overload policy applies",
            )
