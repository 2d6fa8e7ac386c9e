"""The journal of one runtime: group commits, leases, recovery, the spill, and falling back.

One connection per runtime and process, and one transaction at a time on it.
A caller queues its records and takes its turn (`Writer`): whoever gets the
turn writes everything queued by then, its own and other callers' records, in
one transaction (the group commit), and those callers find theirs written.
Marks (an attempt started, a call finished) wait, without anyone waiting for
them, for the next transaction, or at most `MARK_DELAY`: a mark lost to a
crash only means the call runs again, which at-least-once allows. A thread per
journal (`Upkeep`) opens the file, writes marks that waited long enough, renews
this process's leases, takes up records of dead owners and spilled ones, and
prunes old done records. A call its backend could not take comes back as
pending with a "not before" time that grows with each failed hand-off of it
(`handoff_backoff`): a broker that stays down costs a few writes, not a loop.
When a write fails (full disk, read-only file) the journal says so once,
makes callers fall back, and probes the file on a back-off until a write
succeeds again.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

from .._codec import known_task
from .._deferred import Deferred, Status
from .._results import to_json
from .records import make_record, read_result
from .schema import CLAIMED, DONE, FAILED, HELD, PENDING, SKIPPED
from .store import Record, read_once
from .upkeep import Upkeep
from .writer import COMMIT_WAIT, Batch, Mark, Writer

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._config import Config
    from .._results import CallResult
    from .upkeep import JournalHost

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


class Journal:
    """The journal of one runtime in one process; opens its file on first use."""

    def __init__(self, config: Config, host: JournalHost) -> None:
        if config.journal is None:  # pragma: no cover -- the runtime checks first
            raise ValueError("no journal configured")
        self.path = config.journal
        self._config = config
        self._writer = Writer(self.path, config)
        self._upkeep = Upkeep(config, host, self._writer)

    def __repr__(self) -> str:
        writer = self._writer
        state = "degraded" if writer.degraded else "open" if writer.store else "not open"
        return f"<Journal {self.path} {state}>"

    # -- what the runtime calls --------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while writes fail and calls fall back (see `Config.on_journal_error`)."""
        return self._writer.degraded

    @property
    def refusing(self) -> bool:
        """True while new calls get the overload policy because the journal fails."""
        return self._writer.degraded and self._config.on_journal_error == "overload"

    def prepare(self, deferred: Deferred[Any]) -> None:
        """Encode the call for the journal (not written yet).

        Raises:
            InvalidCallError: the function cannot be named, or its arguments encoded.
        """
        unknown = known_task(deferred.name) is None
        deferred._record = make_record(deferred, self._config.serializer)
        if unknown:  # registered just now: records waiting for that name may run
            self._upkeep.feed()

    def open(self, timeout: float) -> bool:
        """Open the file now (and take up what it holds); True if it takes writes."""
        return self._upkeep.ready(timeout)

    def commit(self, records: list[Record], state: str = CLAIMED) -> int:
        """Write records now, with whatever else is queued; how many were not written."""
        writer, upkeep = self._writer, self._upkeep
        if writer.degraded or upkeep.closing or not upkeep.ready():
            writer.fell_back(len(records))
            return len(records)
        return writer.commit(records, state)

    def commit_later(
        self, records: list[Record], then: Callable[[int], None], state: str = CLAIMED
    ) -> None:
        """Have the journal's thread write records, then call `then(unwritten)` there.

        For a caller that must not wait for the disk (an event loop's thread).
        While the journal fails, or once it closes, `then` is called at once,
        in the caller, with every record unwritten.
        """
        writer = self._writer
        if writer.degraded or not self._upkeep.hand_over(Batch(records, state, then)):
            writer.fell_back(len(records))
            then(len(records))

    @property
    def takes_writes(self) -> bool:
        """True unless the journal fails or closes: a write handed over now may succeed."""
        return not self._writer.degraded and not self._upkeep.closing

    def spill(self, record: Record, *, held: bool) -> bool:
        """Write a call that has no room in the backlog, to run when there is; True if written.

        A call spilled during a request is held (owned, not run) until its
        request ends: `release_spilled()` then makes it runnable or skips it.
        """
        self._upkeep.feed()
        return self.commit([record], HELD if held else PENDING) == 0

    def spill_later(self, record: Record, *, held: bool, then: Callable[[int], None]) -> None:
        """`spill()` for a caller that must not wait for the disk (see `commit_later`)."""
        self._upkeep.feed()
        self.commit_later([record], then, HELD if held else PENDING)

    def hand_back(self, record: Record) -> float | None:
        """Take back a call its backend could not take, to be taken up after a back-off.

        The record goes back to pending, not to be taken up for
        `handoff_backoff()` seconds, which grow with each failed hand-off of
        the call. Returns those seconds, or None if the journal cannot take
        the call now (it is failing, or closing): the caller runs it another way.
        """
        if self._writer.degraded or self._upkeep.closing:
            return None
        record.handoff_fallbacks += 1
        delay = handoff_backoff(record.handoff_fallbacks)
        record.not_before = time.time() + delay
        if record.written:
            mark = Mark(final=PENDING, not_before=record.not_before, handoff_fallbacks=1)
            self._writer.mark(record.id, mark)
        elif self.commit([record], PENDING):  # it was not journaled when it was accepted
            return None
        return delay

    def release_spilled(self, record: Record, *, run: bool) -> None:
        """The request that spilled this call ended: let it run, or skip it."""
        self._writer.mark(
            record.id, Mark(final=PENDING if run else SKIPPED, not_before=record.not_before)
        )
        self._upkeep.feed()

    def started(self, deferred: Deferred[Any]) -> None:
        """An attempt of a journaled call started (counted in the journal, with who runs it)."""
        record = deferred._record
        if record is not None and record.written:
            workers = json.dumps(deferred.worker_ids)
            mark = Mark(attempts=1, attempted=deferred.attempted_at, workers=workers)
            self._writer.mark(record.id, mark)

    def settled(self, deferred: Deferred[Any], status: Status, error: BaseException | None) -> None:
        """A journaled call reached a final status in this process (with the outcome to keep)."""
        record = deferred._record
        final = _FINAL_STATES.get(status)
        if final is None or record is None or not record.written:
            return
        mark = Mark(final=final, error=error if final == FAILED else None, status=status.value)
        if deferred._failures:
            mark.failures = json.dumps(deferred._failures)
        if status is Status.SUCCEEDED and record.keep_result:
            mark.result = to_json(deferred._result)  # checked when the attempt returned
        self._writer.mark(record.id, mark)

    def left_over(self, record: Record, *, running: bool, not_before: float | None) -> None:
        """At shutdown: a call that did not finish stays for the next start.

        One still running keeps its owner, so that nobody runs it again while
        this process lives; the others are released at once, a scheduled one
        (`not_before`) to be taken up when due.
        """
        if not running:
            self._writer.mark(record.id, Mark(final=PENDING, not_before=not_before))

    def result(self, call_id: str, timeout: float = COMMIT_WAIT) -> CallResult | None:
        """The outcome the journal holds for that call, or None if it holds none (or fails)."""
        upkeep = self._upkeep
        if upkeep.closing:  # shut down: a connection of its own, for this one read
            row = read_once(self.path, call_id)
        elif upkeep.ready(timeout):
            row = self._writer.read(lambda store: store.record(call_id), timeout)
        else:
            return None
        return None if row is None else read_result(row)

    def close(self, timeout: float) -> None:
        """Write what is still to be written, stop the journal's thread, close the file."""
        self._upkeep.close(timeout)

    # -- for tests and the command line ------------------------------------------------------

    def flush(self, timeout: float = COMMIT_WAIT) -> bool:
        """Write every mark made before now; False if they could not be written."""
        upkeep = self._upkeep
        if upkeep.closing or self._writer.degraded or not upkeep.ready(timeout):
            return False
        return self._writer.flush(timeout)

    def wait_degraded(self, degraded: bool, timeout: float) -> bool:
        """Wait until the journal is (or is no longer) degraded; False on timeout."""
        return self._writer.wait_degraded(degraded, timeout)
