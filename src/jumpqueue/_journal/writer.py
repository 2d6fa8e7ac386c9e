"""Writing the journal: queued records and marks, one transaction at a time; failing degrades it."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING, TypeVar

from .._ratelimit import RateLimitedLog
from . import engine
from .file import describe
from .schema import PENDING
from .store import Outcome, Record, Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._config import Config
    from .owner import Owner

logger = logging.getLogger("jumpqueue")
T = TypeVar("T")

#: Longest a caller waits for the transaction that writes its calls.
COMMIT_WAIT = 5.0
#: Longest a mark waits for a transaction to share (a group commit, or other marks):
#: a mark lost to a crash in that window only makes a call run again.
MARK_DELAY = 0.02
#: First and longest pause between two probes of a journal that failed a write.
PROBE_FIRST, PROBE_MAX = 0.2, 5.0
_ERROR_TEXT_LIMIT = 4000


class Batch:
    """Records one caller queued for the next transaction; `ok` once they are written.

    A caller that does not wait for the transaction (an event loop's thread)
    gives `then`, called with how many records were not written, after it.
    """

    __slots__ = ("done", "ok", "records", "state", "then")

    def __init__(
        self, records: list[Record], state: str, then: Callable[[int], None] | None = None
    ) -> None:
        self.records = records
        self.state = state
        self.then = then
        self.done = threading.Event()
        self.ok = False


@dataclasses.dataclass
class Mark:
    """What became of one written call since its last write: attempts started, its end."""

    attempts: int = 0
    final: str | None = None
    error: BaseException | str | None = None  # formatted by the writer, not the caller
    not_before: float | None = None  # with final=PENDING: no sooner than this time.time()
    handoff_fallbacks: int = 0
    #: The last attempt's start, and who ran each attempt (JSON), once one started.
    attempted: float | None = None
    workers: str | None = None
    #: With a final state: the call's `Status`, its kept result (JSON), its failures (JSON).
    status: str | None = None
    result: str | None = None
    failures: str | None = None

    def add(self, later: Mark) -> None:
        self.attempts += later.attempts
        self.handoff_fallbacks += later.handoff_fallbacks
        if later.attempted is not None:
            self.attempted, self.workers = later.attempted, later.workers
        if later.final is not None:
            self.final, self.error = later.final, later.error
            self.not_before = later.not_before
            self.status, self.result, self.failures = later.status, later.result, later.failures


class Writer:
    """Writes the journal: whoever holds the turn writes what is queued, in one transaction.

    The journal's thread sets `store` (the connection) and `owner` (this
    process), and sleeps on `wake` until it has something to do. A failed
    write makes the writer `degraded`: it refuses writes until the thread
    has probed the file successfully (`probe_failed()`, `recovered()`).
    """

    def __init__(self, path: str, config: Config) -> None:
        self.path = path
        self._config = config
        self._lease = config.journal_lease
        self.lock = threading.Lock()  # guards the queues; held briefly, never while writing
        self.wake = threading.Condition(self.lock)  # the journal's thread waits on it
        self.turn = threading.Lock()  # one transaction at a time on the connection
        self._changed = threading.Condition(self.lock)
        self._batches: list[Batch] = []
        self._marks: dict[str, Mark] = {}
        self._marks_since = 0.0  # when the oldest unwritten mark was made
        self.store: Store | None = None
        self.owner: Owner | None = None
        self.degraded = False
        #: Transactions committed (each one sync of the file under synchronous=FULL).
        self.transactions = 0
        self._degraded_since = 0.0
        self._probe_delay = PROBE_FIRST
        now = time.monotonic()
        self.next_probe = now
        #: When the journal's thread should look for records to take up next (monotonic).
        self.records_due = now
        self._fallback_log = RateLimitedLog(logger, interval=60.0)
        self._degraded_log = RateLimitedLog(logger, interval=60.0)
        self._recovered_log = RateLimitedLog(logger, interval=60.0)

    # -- for callers --------------------------------------------------------------------------

    def commit(self, records: list[Record], state: str) -> int:
        """Write records now, with whatever else is queued; how many were not written."""
        batch = Batch(records, state)
        with self.lock:
            self._batches.append(batch)
        if self.turn.acquire(timeout=COMMIT_WAIT):
            try:
                if not batch.done.is_set():  # else a caller before us wrote it
                    self.write(marks=False)
            finally:
                self.turn.release()
        else:
            # No turn in time: withdraw the batch, lest it be written after the call ran
            # without it. A writer that took it already decides; its transaction is short.
            with self.lock:
                withdrawn = batch in self._batches
                if withdrawn:
                    self._batches.remove(batch)
            if not withdrawn:
                batch.done.wait()
        if batch.done.is_set() and batch.ok:
            return 0
        unwritten = sum(not record.written for record in records)
        self.fell_back(unwritten)
        return unwritten

    def mark(self, call_id: str, mark: Mark) -> None:
        """Queue what became of a written call, for the next transaction."""
        with self.lock:
            if not self._marks:  # the journal's thread sets its clock by the first one
                self._marks_since = time.monotonic()
                self.wake.notify()
            self._mark_locked(call_id, mark)

    def read(self, query: Callable[[Store], T], timeout: float) -> T | None:
        """`query(store)` on the connection, in its turn; None if closed, busy or failing."""
        if not self.turn.acquire(timeout=timeout):
            return None
        try:
            store = self.store
            if store is None:
                return None
            try:
                return query(store)
            except engine.Error as error:
                logger.warning(
                    "jumpqueue: reading the journal %s failed: %s", self.path, describe(error)
                )
                return None
        finally:
            self.turn.release()

    def flush(self, timeout: float) -> bool:
        """Write every mark made before now; False if they could not be written."""
        if not self.turn.acquire(timeout=timeout):
            return False
        try:
            return self.write(marks=True)
        finally:
            self.turn.release()

    def fell_back(self, count: int) -> None:
        """Say (at most once a minute) that `count` calls go without the journal."""
        if count:
            self._fallback_log.warning(
                "jumpqueue: %d call(s) not journaled (%s); %s",
                count,
                self.path,
                "they run without the journal"
                if self._config.on_journal_error == "memory"
                else "the overload policy applies",
            )

    def wait_degraded(self, degraded: bool, timeout: float) -> bool:
        """Wait until the writer is (or is no longer) degraded; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.degraded is degraded, timeout)

    # -- for the journal's thread -------------------------------------------------------------

    def write(self, *, marks: bool) -> bool:
        """With the turn: write the queued records (and marks); False if that failed.

        A request's commit leaves the marks to the journal's thread: its
        response then waits for its own records only.
        """
        with self.lock:
            batches, self._batches = self._batches, []
            if marks:
                marks_now, self._marks = self._marks, {}
            else:
                marks_now = {}
        try:
            return self._transact(batches, marks_now)
        except Exception:  # a bug here must not fail the request that waits: it falls back
            logger.exception("jumpqueue: writing to the journal %s failed", self.path)
            self._keep(marks_now)
            return False
        finally:
            for batch in batches:
                batch.done.set()
                if batch.then is not None:
                    self._report(batch)

    def queue(self, batch: Batch) -> None:
        """With the lock: queue records for the next transaction, without waiting for it."""
        self._batches.append(batch)
        self.wake.notify()

    def batches_queued(self) -> bool:
        """With the lock: True while records wait for a transaction."""
        return bool(self._batches)

    def marks_due(self) -> float | None:
        """With the lock: when the queued marks are to be written, if there are any."""
        return self._marks_since + MARK_DELAY if self._marks else None

    def reclaim_by(self, not_before: float | None) -> None:
        """With the turn: have records looked for again when one waiting for its time is due."""
        if not_before is None:
            return
        due = time.monotonic() + max(0.0, not_before - time.time())
        if due < self.records_due:
            with self.lock:  # the journal's thread may be asleep until a later time
                self.records_due = due
                self.wake.notify()

    def degrade(self, error: BaseException) -> None:
        """A write failed: refuse writes, say so once, and have the file probed soon."""
        now = time.monotonic()
        with self._changed:
            first = not self.degraded
            if first:
                self.degraded = True
                self._degraded_since = now
                self._probe_delay = PROBE_FIRST
            self.next_probe = now + self._probe_delay
            self._changed.notify_all()
        if first:
            self._degraded_log.warning(
                "jumpqueue: the journal %s cannot be written (%s); %s until it can, "
                "and it is probed again and again meanwhile",
                self.path,
                describe(error),
                "calls run without it"
                if self._config.on_journal_error == "memory"
                else "new calls get the overload policy",
            )

    def probe_failed(self) -> None:
        """The file still takes no writes: probe it again after a longer pause."""
        self._probe_delay = min(self._probe_delay * 2, PROBE_MAX)
        self.next_probe = time.monotonic() + self._probe_delay

    def recovered(self) -> None:
        """The file takes writes again (the thread has just probed it on `store`)."""
        with self._changed:
            self.degraded = False
            self._changed.notify_all()
        self._recovered_log.warning(
            "jumpqueue: the journal %s takes writes again, after %.1f s; calls are journaled again",
            self.path,
            time.monotonic() - self._degraded_since,
        )

    def connect(self) -> Store | None:
        """With the turn: open the file; None (and degraded) if it cannot be opened."""
        try:
            store = Store.open(self.path, synchronous=self._config.journal_synchronous)
        except engine.FILE_ERRORS as error:
            self.degrade(error)
            return None
        self.store = store
        self.records_due = time.monotonic()
        return store

    def check_file(self) -> bool:
        """With the turn: reopen the file if the one open was deleted or replaced.

        Writes to a file no longer at the path would be lost at the next kill.
        False if it cannot be opened again (the writer is then degraded).
        """
        store = self.store
        if store is None or not store.replaced():
            return True
        logger.error(
            "jumpqueue: the journal file %s was deleted or replaced while open; it is opened "
            "again (the calls this process had journaled in the old file are not in it)",
            self.path,
        )
        self.store = None
        store.abandon()
        if self.connect() is None:
            return False
        with self.lock:  # the journal's thread takes up what the file now there holds
            self.wake.notify()
        return True

    def disconnect(self) -> None:
        """Close the connection, if there is one."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def close(self) -> None:
        """At shutdown, after the last write: say what was lost, and close the connection."""
        with self.lock:
            lost = len(self._marks)
        if lost:
            logger.warning(
                "jumpqueue: %d journal update(s) could not be written before shutdown; "
                "those calls may run again from the journal",
                lost,
            )
        self.disconnect()

    # -- for the calls above ------------------------------------------------------------------

    def _transact(self, batches: list[Batch], marks: dict[str, Mark]) -> bool:
        store, owner = self.store, self.owner
        if store is None or owner is None or self.degraded:
            self._keep(marks)
            return False
        if not batches and not marks:
            return True
        if not self.check_file():
            self._keep(marks)
            return False
        store = self.store
        if store is None:  # pragma: no cover -- check_file() reopened it, or said it could not
            return False
        lease_until = time.time() + self._lease
        try:
            by_state: dict[str, list[Record]] = {}
            for batch in batches:
                by_state.setdefault(batch.state, []).extend(batch.records)
            with store.transaction():
                for state, records in by_state.items():
                    if records:
                        who = None if state == PENDING else owner
                        store.insert(records, state, who, lease_until)
                _write_marks(store, marks, owner)
            self.transactions += 1
        except engine.Error as error:
            self._keep(marks)
            self.degrade(error)
            return False
        due: list[float | None] = [mark.not_before for mark in marks.values()]
        for batch in batches:
            for record in batch.records:
                record.written = True
                due.append(record.not_before)
            batch.ok = True
        self.reclaim_by(min((when for when in due if when is not None), default=None))
        return True

    def _report(self, batch: Batch) -> None:
        # Tell a caller that did not wait what became of its records.
        unwritten = 0 if batch.ok else sum(not record.written for record in batch.records)
        if unwritten:
            self.fell_back(unwritten)
        try:
            if batch.then is not None:
                batch.then(unwritten)
        except Exception:  # its failure must not fail the other callers' batches
            logger.exception("jumpqueue: a call written to the journal %s failed", self.path)

    def _keep(self, marks: dict[str, Mark]) -> None:
        # Marks not written stay for the next write, before any newer mark of the same call.
        if not marks:
            return
        with self.lock:
            newer, self._marks = self._marks, marks
            for call_id, mark in newer.items():
                self._mark_locked(call_id, mark)
            self._marks_since = time.monotonic()

    def _mark_locked(self, call_id: str, mark: Mark) -> None:
        known = self._marks.get(call_id)
        if known is None:
            self._marks[call_id] = mark
        else:
            known.add(mark)


def _write_marks(store: Store, marks: dict[str, Mark], owner: Owner) -> None:
    # One statement per call: a final mark carries the attempts started since, too.
    attempts = [
        (mark.attempts, mark.attempted, mark.workers, call_id)
        for call_id, mark in marks.items()
        if mark.attempts and mark.final is None
    ]
    finals: list[Outcome] = [
        Outcome(
            final,
            _error_text(mark.error),
            mark.attempts,
            mark.not_before,
            mark.handoff_fallbacks,
            call_id,
            mark.attempted,
            mark.workers,
            mark.status,
            mark.result,
            mark.failures,
        )
        for call_id, mark in marks.items()
        if (final := mark.final)
    ]
    if attempts:
        store.add_attempts(attempts, owner)
    if finals:
        store.finish(finals, owner)


def _error_text(error: BaseException | str | None) -> str | None:
    if not isinstance(error, BaseException):
        return error
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text[-_ERROR_TEXT_LIMIT:]
