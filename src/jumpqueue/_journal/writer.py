"""Writing the journal: queued records and marks, one transaction at a time; failing degrades it."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
import traceback
from typing import TYPE_CHECKING

from .file import describe
from .store import PENDING, Outcome, Record, Store

if TYPE_CHECKING:
    from .._config import Config
    from .._ratelimit import RateLimitedLog
    from .owner import Owner

logger = logging.getLogger("jumpqueue")

#: First and longest pause between two probes of a journal that failed a write.
PROBE_FIRST, PROBE_MAX = 0.2, 5.0
_ERROR_TEXT_LIMIT = 4000


class Batch:
    """Records one caller queued for the next transaction; `ok` once they are written."""

    __slots__ = ("done", "ok", "records", "state")

    def __init__(self, records: list[Record], state: str) -> None:
        self.records = records
        self.state = state
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

    def add(self, later: Mark) -> None:
        self.attempts += later.attempts
        self.handoff_fallbacks += later.handoff_fallbacks
        if later.final is not None:
            self.final, self.error = later.final, later.error
            self.not_before = later.not_before


class JournalWriter:
    """The part of `Journal` that writes: whoever holds the turn writes what is queued.

    The attributes below are set up by `Journal.__init__()`; they are declared
    here, in the base of the journal's parts, so that each part is type-checked
    against them.
    """

    path: str
    _config: Config
    _lease: float
    _lock: threading.Lock
    _wake: threading.Condition
    _changed: threading.Condition
    _batches: list[Batch]
    _marks: dict[str, Mark]
    _marks_since: float
    _store: Store | None
    _owner: Owner | None
    _degraded: bool
    _degraded_since: float
    _probe_delay: float
    _next_probe: float
    _next_reclaim: float
    _degraded_log: RateLimitedLog

    def _mark(self, call_id: str, mark: Mark) -> None:
        with self._lock:
            if not self._marks:  # the writer sets its clock by the first one
                self._marks_since = time.monotonic()
                self._wake.notify()
            self._mark_locked(call_id, mark)

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

    def _transact(self, batches: list[Batch], marks: dict[str, Mark]) -> bool:
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

    def _keep(self, marks: dict[str, Mark]) -> None:
        # Marks not written stay for the next write, before any newer mark of the same call.
        if not marks:
            return
        with self._lock:
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


def _write_marks(store: Store, marks: dict[str, Mark], owner: Owner) -> None:
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
