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

import dataclasses
import logging
import random
import sqlite3
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Protocol

from ._codec import known_task
from ._deferred import Deferred, Status
from ._exceptions import InvalidCallError, JournalError
from ._journal_file import announce, describe
from ._journal_owner import Owner, current_owner
from ._journal_records import Quarantine, decode, make_record
from ._journal_store import (
    CLAIMED,
    DONE,
    FAILED,
    HELD,
    PENDING,
    SKIPPED,
    Outcome,
    Record,
    Store,
)
from ._ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from ._config import Config

logger = logging.getLogger("jumpqueue")

#: Longest a caller waits for the transaction that writes its calls.
COMMIT_WAIT = 5.0
#: First and longest pause between two probes of a journal that failed a write.
PROBE_FIRST, PROBE_MAX = 0.2, 5.0
#: How often spilled records are looked for while some may wait and there is room.
FEED_INTERVAL = 0.05
#: Longest a mark waits for a transaction to share (a group commit, or other marks):
#: a mark lost to a crash in that window only makes a call run again.
MARK_DELAY = 0.02
#: Longest pause between two looks for records of dead owners.
RECLAIM_INTERVAL = 2.0
#: First and longest wait before a call its backend could not take is tried again.
HANDOFF_BACKOFF_FIRST, HANDOFF_BACKOFF_MAX = 1.0, 60.0
_ERROR_TEXT_LIMIT = 4000
_FINAL_STATES = {
    Status.SUCCEEDED: DONE,
    Status.FAILED: FAILED,
    Status.TIMED_OUT: FAILED,
    Status.SKIPPED: SKIPPED,
    Status.ABANDONED: PENDING,  # it did not get to finish here: another may run it
    Status.HANDED_OFF: DONE,  # the backend's engine has it
}


class JournalHost(Protocol):
    """What the journal needs of its runtime."""

    config: Config

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal; False if the runtime no longer admits."""

    def journal_room(self) -> int:
        """Calls the backlog can take now."""


class _Batch:
    __slots__ = ("done", "ok", "records", "state")

    def __init__(self, records: list[Record], state: str) -> None:
        self.records = records
        self.state = state
        self.done = threading.Event()
        self.ok = False


def handoff_backoff(fallbacks: int) -> float:
    """Seconds before a call is tried again after its `fallbacks`-th failed hand-off.

    `HANDOFF_BACKOFF_FIRST` doubling up to `HANDOFF_BACKOFF_MAX`, less up to a
    half at random, so that calls that failed together do not return together.
    """
    delay = min(HANDOFF_BACKOFF_FIRST * 2.0 ** min(fallbacks - 1, 30), HANDOFF_BACKOFF_MAX)
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not cryptography


@dataclasses.dataclass
class _Mark:
    attempts: int = 0
    final: str | None = None
    error: BaseException | str | None = None  # formatted by the writer, not the caller
    not_before: float | None = None  # with final=PENDING: no sooner than this time.time()
    handoff_fallbacks: int = 0

    def add(self, later: _Mark) -> None:
        self.attempts += later.attempts
        self.handoff_fallbacks += later.handoff_fallbacks
        if later.final is not None:
            self.final, self.error = later.final, later.error
            self.not_before = later.not_before


class Journal:
    """The journal of one runtime in one process; opens its file on first use."""

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
        self._batches: list[_Batch] = []
        self._marks: dict[str, _Mark] = {}
        self._marks_since = 0.0  # when the oldest unwritten mark was made
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._closing = False
        self._store: Store | None = None
        self._owner: Owner | None = None
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
        batch = _Batch(records, state)
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
            mark = _Mark(final=PENDING, not_before=record.not_before, handoff_fallbacks=1)
            self._mark(record.id, mark)
        elif self.commit([record], PENDING):  # it was not journaled when it was accepted
            return None
        return delay

    def release_spilled(self, record: Record, *, run: bool) -> None:
        """The request that spilled this call ended: let it run, or skip it."""
        self._mark(record.id, _Mark(final=PENDING if run else SKIPPED))
        self._feed = True

    def started(self, record: Record) -> None:
        """An attempt of a journaled call started (counted in the journal)."""
        if record.written:
            self._mark(record.id, _Mark(attempts=1))

    def settled(self, record: Record, status: Status, error: BaseException | None) -> None:
        """A journaled call reached a final status in this process."""
        final = _FINAL_STATES.get(status)
        if final is None or not record.written:
            return
        self._mark(record.id, _Mark(final=final, error=error if final == FAILED else None))

    def left_over(self, record: Record, *, running: bool) -> None:
        """At shutdown: a call that did not finish stays for the next start.

        One still running keeps its owner, so that nobody runs it again while
        this process lives; the others are released at once.
        """
        if not running:
            self._mark(record.id, _Mark(final=PENDING))

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

    # -- the writer thread -------------------------------------------------------------------

    def _ready(self, timeout: float = COMMIT_WAIT) -> bool:
        # Started, and the first opening done (it may have failed: see `degraded`).
        if not self._opened.is_set():
            self._start()
            self._opened.wait(timeout)
        return self._store is not None and not self._degraded

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run, name="jumpqueue-journal", daemon=True
                )
                self._thread.start()

    def _mark(self, call_id: str, mark: _Mark) -> None:
        with self._lock:
            if not self._marks:  # the writer sets its clock by the first one
                self._marks_since = time.monotonic()
                self._wake.notify()
            self._mark_locked(call_id, mark)

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

    def _run(self) -> None:
        self._owner = current_owner()
        with self._turn:
            self._connect()
            if self._store is not None:
                self._periodic(self._store, self._owner)  # what dead processes left runs now
        self._opened.set()
        while True:
            with self._lock:
                while not self._closing:
                    delay = self._next_due() - time.monotonic()
                    if delay <= 0:
                        break
                    self._wake.wait(delay)
                closing = self._closing
            with self._turn:
                try:
                    self._chores(closing=closing)
                except Exception:  # the thread must outlive any bug in one round
                    logger.exception("jumpqueue: the journal's thread failed a round; it goes on")
                if closing:
                    self._finish()
                    return

    def _chores(self, *, closing: bool) -> None:
        # With the turn: marks that waited, then periodic work or a probe.
        written = self._write(marks=True)
        store, owner = self._store, self._owner
        if self._degraded or store is None or owner is None:
            if not closing and time.monotonic() >= self._next_probe:
                self._probe()
        elif written and not closing:
            self._periodic(store, owner)

    def _next_due(self) -> float:
        # Called with the lock held: when the writer has something to do unasked.
        if self._degraded or self._store is None:
            return self._next_probe
        due = min(self._next_renew, self._next_reclaim, self._next_prune)
        if self._marks:
            due = min(due, self._marks_since + MARK_DELAY)
        return min(due, time.monotonic() + FEED_INTERVAL) if self._feed else due

    def _write(self, *, marks: bool) -> bool:
        # With the turn: the queued records (and marks), in one transaction; False if it
        # failed. A request's commit leaves the marks to the journal's thread: its
        # response then waits for its own records only.
        with self._lock:
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

    def _transact(self, batches: list[_Batch], marks: dict[str, _Mark]) -> bool:
        store, owner = self._store, self._owner
        if store is None or owner is None or self._degraded:
            self._keep(marks)
            return False
        if not batches and not marks:
            return True
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
        except sqlite3.Error as error:
            self._keep(marks)
            self._degrade(error)
            return False
        due: list[float | None] = [mark.not_before for mark in marks.values()]
        for batch in batches:
            for record in batch.records:
                record.written = True
                due.append(record.not_before)
            batch.ok = True
        self._reclaim_by(min((when for when in due if when is not None), default=None))
        return True

    def _reclaim_by(self, not_before: float | None) -> None:
        # With the turn: look for records again when one waiting for its time is due.
        if not_before is None:
            return
        due = time.monotonic() + max(0.0, not_before - time.time())
        if due < self._next_reclaim:
            with self._lock:  # the writer may be asleep until a later time
                self._next_reclaim = due
                self._wake.notify()

    def _keep(self, marks: dict[str, _Mark]) -> None:
        # Marks not written stay for the next write, before any newer mark of the same call.
        if not marks:
            return
        with self._lock:
            newer, self._marks = self._marks, marks
            for call_id, mark in newer.items():
                self._mark_locked(call_id, mark)
            self._marks_since = time.monotonic()

    def _mark_locked(self, call_id: str, mark: _Mark) -> None:
        known = self._marks.get(call_id)
        if known is None:
            self._marks[call_id] = mark
        else:
            known.add(mark)

    def _periodic(self, store: Store, owner: Owner) -> None:
        now = time.monotonic()
        try:
            if now >= self._next_renew:
                self._next_renew = now + self._lease / 3
                with store.transaction():
                    store.renew(owner, time.time() + self._lease)
            if now >= self._next_reclaim or self._feed:
                self._reclaim(store, owner)
            if now >= self._next_prune:
                retention = self._config.journal_retention
                self._next_prune = now + min(max(retention / 2, 0.1), 3600.0)
                with store.transaction():
                    store.prune(time.time() - retention)
        except sqlite3.Error as error:
            self._degrade(error)

    def _reclaim(self, store: Store, owner: Owner) -> None:
        now = time.monotonic()
        room = self._host.journal_room()
        if room <= 0:
            self._next_reclaim = now + (FEED_INTERVAL if self._feed else RECLAIM_INTERVAL)
            return
        with store.transaction():
            revived = store.revive(lambda name: known_task(name) is not None)
            rows = store.reclaim(owner, room, time.time() + self._lease)
            waiting = store.next_due()
        self._feed = len(rows) >= room or revived > 0
        self._next_reclaim = now + min(self._lease / 3, RECLAIM_INTERVAL)
        self._reclaim_by(waiting)
        quarantined: list[tuple[str, str, str]] = []
        for row in rows:
            self._take_up(store, row, quarantined)
        if quarantined:
            with store.transaction():
                store.quarantine(quarantined, owner)

    def _take_up(
        self, store: Store, row: sqlite3.Row, quarantined: list[tuple[str, str, str]]
    ) -> None:
        call_id = row["id"]
        try:
            deferred = decode(store, row, self._config.serializer)
        except Quarantine as refusal:
            logger.error(  # noqa: TRY400 -- the reason says it all; no traceback to show
                "jumpqueue: journal record %s quarantined, not run: %s", call_id, refusal
            )
            quarantined.append((refusal.reason, str(refusal), call_id))
            return
        try:
            accepted = self._host.adopt(deferred)
        except InvalidCallError as error:
            self._mark(call_id, _Mark(final=FAILED, error=str(error)))
            return
        if not accepted:
            self._mark(call_id, _Mark(final=PENDING))
        elif row["owner"] is not None:
            logger.info(
                "jumpqueue: %s [%s] recovered from %s", deferred.name, call_id, row["owner"]
            )

    def _connect(self) -> Store | None:
        try:
            store = Store.open(self.path, synchronous=self._config.journal_synchronous)
        except (sqlite3.Error, OSError, JournalError) as error:
            self._degrade(error)
            return None
        self._store = store
        self._next_reclaim = time.monotonic()
        if not self._announced:
            self._announced = True
            announce(self.path, self._config.journal_synchronous)
        return store

    def _degrade(self, error: BaseException) -> None:
        now = time.monotonic()
        with self._changed:
            first = not self._degraded
            if first:
                self._degraded = True
                self._degraded_since = now
                self._probe_delay = PROBE_FIRST
            self._next_probe = now + self._probe_delay
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

    def _probe(self) -> None:
        # A fresh connection each time: the file may have been replaced, remounted, fixed.
        if self._store is not None:
            self._store.close()
            self._store = None
        store = self._connect()
        try:
            if store is None:
                raise JournalError("it cannot be opened")  # noqa: TRY301 -- one back-off path
            with store.transaction():
                store.probe()
        except (sqlite3.Error, OSError, JournalError):
            self._probe_delay = min(self._probe_delay * 2, PROBE_MAX)
            self._next_probe = time.monotonic() + self._probe_delay
            return
        store.checkpoint()
        with self._changed:
            self._degraded = False
            self._changed.notify_all()
        self._recovered_log.warning(
            "jumpqueue: the journal %s takes writes again, after %.1f s; calls are journaled again",
            self.path,
            time.monotonic() - self._degraded_since,
        )

    def _finish(self) -> None:
        with self._lock:
            lost = len(self._marks)
        if lost:
            logger.warning(
                "jumpqueue: %d journal update(s) could not be written before shutdown; "
                "those calls may run again from the journal",
                lost,
            )
        if self._store is not None:
            self._store.close()
            self._store = None


def _write_marks(store: Store, marks: dict[str, _Mark], owner: Owner) -> None:
    # One statement per call: a final mark carries the attempts started since, too.
    attempts = [
        (mark.attempts, call_id)
        for call_id, mark in marks.items()
        if mark.attempts and mark.final is None
    ]
    finals: list[Outcome] = [
        (
            final,
            _error_text(mark.error),
            mark.attempts,
            mark.not_before,
            mark.handoff_fallbacks,
            call_id,
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
