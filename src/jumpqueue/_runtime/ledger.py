"""The backlog ledger: the calls in flight, their gauges and counters, and every change of state.

The ledger is the one writer of a call's status and outcome. Each transition
below takes the ledger's lock once, moves the gauges, counts what ended, and
wakes those who wait for room or for the drain; a call's waiters are woken
after the lock is released.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _observe
from .._choices import SHED_POLICIES, ShedPolicy
from .._deferred import LIVE, Deferred, Holder, Status

if TYPE_CHECKING:
    from .._journal import Journal
    from ..executors._base import Attempt

#: Calls left to the journal that a ledger remembers, to know them when it takes them up
#: again; one forgotten past this bound is counted as a new call then.
REMEMBERED_JOURNALED = 100_000
#: Finished `keep_result` calls a ledger keeps for `Runtime.result()`, newest last.
KEPT_RESULTS = 1000


@dataclasses.dataclass
class HandOffCounts:
    """What one backend did with the calls handed to it (see `Stats.backends`)."""

    handed_off: int = 0
    handoff_failures: int = 0
    handoff_fallbacks: int = 0


@dataclasses.dataclass(frozen=True)
class Leftovers:
    """What a shutdown settled without running it to the end (`Ledger.close`)."""

    calls: list[Deferred[Any]]
    #: Those of `calls` that were waiting for their time: a shutdown does not wait for them.
    not_due: frozenset[Deferred[Any]]
    #: Seconds the shutdown waited for the drain: the timeout, or less if it drained first.
    waited: float


class Counters:
    """What a runtime has done since it started; the ledger's lock guards every field."""

    __slots__ = (
        "backends",
        "finished",
        "inlined",
        "journal_fallbacks",
        "recovered",
        "retried",
        "shed",
        "spilled",
        "started",
        "submitted",
        "waited",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.started = 0
        self.retried = 0
        self.waited = 0
        self.inlined = 0
        self.spilled = 0
        self.recovered = 0
        self.journal_fallbacks = 0
        #: Calls that ended, by final status.
        self.finished: dict[Status, int] = {status: 0 for status in Status if status.final}
        #: Calls shed by a full backlog, by the policy that shed them.
        self.shed: dict[ShedPolicy, int] = dict.fromkeys(SHED_POLICIES, 0)
        #: Per backend name: its hand-off counters.
        self.backends: dict[str, HandOffCounts] = {}


class Ledger:
    """The backlog of one runtime: calls admitted and not yet final, bounded by `max_pending`."""

    def __init__(self, max_pending: int, max_queue_wait: float | None) -> None:
        self.max_pending = max_pending
        self.max_queue_wait = max_queue_wait
        # Calls waiting for a worker, oldest first, as (since, calls started by then,
        # attempts then, call); an entry whose call has started since is dropped when it
        # reaches the front.
        self._waiting: collections.deque[tuple[float, int, int, Deferred[Any]]] = (
            collections.deque()
        )
        self.lock = threading.Lock()
        #: Notified when a slot in the backlog frees up (only while someone waits for one).
        self.room = threading.Condition(self.lock)
        self._drained = threading.Condition(self.lock)
        self.in_flight: set[Deferred[Any]] = set()
        self.held = self.scheduled = self.pending = self.running = 0
        self.waiting_for_room = 0
        self.counters = Counters()
        self.closing = False
        #: The runtime's journal, told of every journaled call that becomes final.
        self.journal: Journal | None = None
        # Ids of calls this runtime left to the journal, oldest first: one taken up again
        # here is the same call back in flight, not a new one (see `adopt`).
        self._left_to_journal: dict[str, None] = {}
        # Finished calls whose outcome is kept (`keep_result`), oldest first.
        self._kept: dict[str, Deferred[Any]] = {}

    def known(self, call_id: str) -> Deferred[Any] | None:
        """The call of that id, in flight or finished with its outcome kept; None if unknown."""
        with self.lock:
            kept = self._kept.get(call_id)
            if kept is not None:
                return kept
            # Rarely asked, while every call is deferred: a scan, not an index to keep up.
            return next((d for d in self.in_flight if d.id == call_id), None)

    # -- admission: called with the lock held --------------------------------------------------

    def has_room_locked(self) -> bool:
        """True while the backlog can take another call: under both of its bounds."""
        if len(self.in_flight) >= self.max_pending:
            return False
        limit = self.max_queue_wait
        return limit is None or self.expected_wait_locked() <= limit

    def expected_wait_locked(self) -> float:
        """Seconds a call admitted now can expect to wait for a worker (0 if none waits).

        The call waiting longest has seen `started` calls start in the `waited`
        seconds since it came: the pool's pace while it was busy. The calls
        pending now start at that pace; with none started yet, the new call
        waits at least as long as that one has.
        """
        waiting = self._waiting
        while waiting:
            since, started_then, attempts, deferred = waiting[0]
            if deferred._status is Status.PENDING and deferred.attempts == attempts:
                waited = time.monotonic() - since
                started = self.counters.started - started_then
                return self.pending * waited / started if started > 0 else waited
            waiting.popleft()
        return 0.0

    def enter_locked(self, deferred: Deferred[Any], holder: Holder | None) -> None:
        """Accept a call: held for its request by `holder`, or pending."""
        self.counters.submitted += 1
        self.in_flight.add(deferred)
        if holder is not None:
            self.held += 1
            deferred._holder = holder
            deferred._status = Status.HELD
        elif deferred.start_at is None:
            self.pending += 1  # the common case: pending at once
            self._wait_locked(deferred)
        else:
            self._enter_waiting_locked(deferred)

    def shed_locked(self, deferred: Deferred[Any], policy: ShedPolicy) -> None:
        """Count a call the full backlog shed; it never entered it.

        The caller wakes the call's waiters (`Deferred._notify`) once the lock is released.
        """
        self.counters.submitted += 1
        self.counters.shed[policy] += 1
        if _observe.observers:
            _observe.shed(deferred._observed_call(), policy)
        deferred._resolve(Status.SHED, None, None)

    # -- calls that come in another way --------------------------------------------------------

    def spilled(self, deferred: Deferred[Any], *, written: bool) -> None:
        """Count a call the "spill" policy sent to the journal: journaled, or shed if unwritten."""
        counters = self.counters
        with self.lock:
            counters.submitted += 1
            if written:
                counters.spilled += 1
                counters.finished[Status.JOURNALED] += 1
                self._remember_journaled_locked(deferred)
                deferred._resolve(Status.JOURNALED, None, None)
            else:
                counters.journal_fallbacks += 1
                counters.shed["reject"] += 1
                if _observe.observers:
                    _observe.shed(deferred._observed_call(), "reject")
                deferred._resolve(Status.SHED, None, None)
        deferred._notify()

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Accept a call taken up from the journal, past the bound; False once closing.

        Every take-up counts in `recovered`. A call this runtime left to the
        journal itself (spilled, handed back) is back in flight: no longer
        counted as journaled, and not submitted again; any other is new here.
        """
        with self.lock:
            if self.closing:
                return False
            counters = self.counters
            counters.recovered += 1
            if deferred.id in self._left_to_journal:
                del self._left_to_journal[deferred.id]
                counters.finished[Status.JOURNALED] -= 1
            else:
                counters.submitted += 1
            self.in_flight.add(deferred)
            self._enter_waiting_locked(deferred)
        return True

    def refused(self, deferred: Deferred[Any], status: Status, error: BaseException) -> None:
        """Count a call accepted in a signal handler that could not be admitted after all."""
        counters = self.counters
        with self.lock:
            counters.submitted += 1
            counters.finished[status] += 1
            deferred._resolve(status, None, error)
        deferred._notify()

    def room_left(self, *, waiting_at_most: int | None = None) -> int:
        """Calls the backlog can take now (none once closing).

        With `waiting_at_most`, no more than would make that many calls wait
        for a worker (pending, not yet running).
        """
        with self.lock:
            if self.closing:
                return 0
            room = self.max_pending - len(self.in_flight)
            if waiting_at_most is not None:
                room = min(room, waiting_at_most - self.pending)
            return room

    def journal_fallbacks(self, count: int) -> None:
        """Count calls that could not be journaled and run without it."""
        with self.lock:
            self.counters.journal_fallbacks += count

    # -- a call's life -------------------------------------------------------------------------

    def release(self, deferred: Deferred[Any], *, run: bool, stopped: bool) -> Status | None:
        """Its request ended: a held call becomes pending, or final (skipped, abandoned).

        Returns the new status, or None if the call was no longer held (a
        shutdown settled it meanwhile).
        """
        with self.lock:
            if deferred._status is not Status.HELD:
                return None
            if run and not stopped:
                if deferred.start_at is not None and self._due_later(deferred):
                    self._move_locked(deferred, Status.SCHEDULED)
                    return Status.SCHEDULED
                self.held -= 1
                self.pending += 1
                deferred._status = Status.PENDING
                self._wait_locked(deferred)
                return Status.PENDING
            status = Status.SKIPPED if not run else Status.ABANDONED
            self._settle_locked(deferred, status, None, None)
        deferred._notify()
        return status

    def due(self, deferred: Deferred[Any]) -> bool:
        """A scheduled call's time has come: pending; False if it was settled meanwhile."""
        with self.lock:
            if deferred._status is not Status.SCHEDULED:
                return False
            deferred.start_at = None
            self._move_locked(deferred, Status.PENDING)
            self._wait_locked(deferred)
        return True

    def _enter_waiting_locked(self, deferred: Deferred[Any]) -> None:
        # A new call waits for its time (scheduled), or for a worker (pending).
        if self._due_later(deferred):
            self.scheduled += 1
            deferred._status = Status.SCHEDULED
        else:
            self.pending += 1
            self._wait_locked(deferred)

    @staticmethod
    def _due_later(deferred: Deferred[Any]) -> bool:
        # True for a call that must wait for its time (`delay`, `run_after`); a call
        # whose time has come already forgets it.
        start_at = deferred.start_at
        if start_at is None:
            return False
        if start_at > time.time():
            return True
        deferred.start_at = None
        return False

    def begin(self, attempt: Attempt) -> bool:
        """An attempt starts: its call becomes running; False if it was settled meanwhile."""
        deferred = attempt.deferred
        with self.lock:
            if attempt.settled or deferred._status is not Status.PENDING:
                return False
            deferred.attempts += 1
            self.counters.started += 1
            self.pending -= 1
            self.running += 1
            deferred._status = Status.RUNNING
        return True

    def succeed(self, attempt: Attempt, result: Any) -> bool:
        """The attempt returned: its call succeeded; False if its outcome was decided already."""
        deferred = attempt.deferred
        with self.lock:
            late = attempt.settled or deferred._status is not Status.RUNNING
            attempt.settled = True
            if late:
                return False
            self._settle_locked(deferred, Status.SUCCEEDED, result, None)
        deferred._notify()
        return True

    def claim(self, attempt: Attempt) -> bool:
        """Decide the attempt's outcome (it raised, or timed out); False if decided already."""
        with self.lock:
            late = attempt.settled or attempt.deferred._status is not Status.RUNNING
            attempt.settled = True
        return not late

    def retry(self, deferred: Deferred[Any]) -> bool:
        """A running call will run again: pending once more; False if settled meanwhile."""
        with self.lock:
            if deferred._status is not Status.RUNNING:
                return False
            self.counters.retried += 1
            self._move_locked(deferred, Status.PENDING)
        return True

    def settle(
        self,
        deferred: Deferred[Any],
        status: Status,
        result: Any = None,
        error: BaseException | None = None,
    ) -> bool:
        """Give a call its final status; False if it had one already (the first one stands)."""
        with self.lock:
            settled = self._settle_locked(deferred, status, result, error)
        if settled:
            deferred._notify()
        return settled

    # -- hand-off ------------------------------------------------------------------------------

    def handed_off(self, deferred: Deferred[Any], backend: str, note: BaseException) -> bool:
        """The backend's engine has the call: final here; False if it was settled meanwhile."""
        with self.lock:
            self._backend_counts(backend).handed_off += 1
            if deferred._status is not Status.PENDING:
                return False
            self._settle_locked(deferred, Status.HANDED_OFF, None, note)
        deferred._notify()
        return True

    def handoff_failed(self, deferred: Deferred[Any], backend: str, *, sent: bool) -> bool:
        """Count a call its backend could not take; False if it was settled meanwhile."""
        with self.lock:
            counts = self._backend_counts(backend)
            counts.handoff_failures += sent
            if deferred._status is not Status.PENDING:
                return False
            counts.handoff_fallbacks += 1
        return True

    def _backend_counts(self, backend: str) -> HandOffCounts:
        counts = self.counters.backends.get(backend)
        if counts is None:
            counts = self.counters.backends[backend] = HandOffCounts()
        return counts

    # -- shutdown ------------------------------------------------------------------------------

    def close(
        self, timeout: float, left_over: Callable[[Deferred[Any]], Status]
    ) -> Leftovers | None:
        """Stop admitting, wait up to `timeout` for the drain, then settle what is left.

        `left_over` says (with the lock held) what a call still in flight becomes.
        Returns those calls; None if another caller closed the ledger first.
        """
        with self.lock:
            first = not self.closing
            self.closing = True
            self.room.notify_all()
            if not first:
                return None
            # Calls waiting for their time are not waited for: they are settled now.
            began = time.monotonic()
            self._drained.wait_for(lambda: len(self.in_flight) <= self.scheduled, timeout)
            # A timed-out wait_for has waited the timeout at least: say the timeout.
            waited = min(time.monotonic() - began, timeout)
            calls = list(self.in_flight)
            not_due = frozenset(d for d in calls if d._status is Status.SCHEDULED)
            for deferred in calls:
                self._settle_locked(deferred, left_over(deferred), None, None)
        for deferred in calls:
            deferred._notify()
        return Leftovers(calls, not_due, waited)

    def _wait_locked(self, deferred: Deferred[Any]) -> None:
        # A call starts waiting for a worker (a retry's backoff is no such wait).
        if self.max_queue_wait is not None:
            entry = (time.monotonic(), self.counters.started, deferred.attempts, deferred)
            self._waiting.append(entry)

    # -- the one place a status changes --------------------------------------------------------

    def _settle_locked(
        self, deferred: Deferred[Any], status: Status, result: Any, error: BaseException | None
    ) -> bool:
        # False if the call was final already: whoever settled it first decided.
        if deferred._status not in LIVE:
            return False
        self._move_locked(deferred, status)
        if status is Status.JOURNALED:
            self._remember_journaled_locked(deferred)
        deferred._resolve(status, result, error)  # the outcome, then the status that publishes it
        if deferred.options.keep_result:
            kept = self._kept
            kept[deferred.id] = deferred
            if len(kept) > KEPT_RESULTS:
                del kept[next(iter(kept))]
        if deferred._record is not None and self.journal is not None:
            self.journal.settled(deferred, status, error)
        return True

    def _remember_journaled_locked(self, deferred: Deferred[Any]) -> None:
        # Once closing, nothing is taken up here again.
        if self.closing:
            return
        remembered = self._left_to_journal
        remembered[deferred.id] = None
        if len(remembered) > REMEMBERED_JOURNALED:
            del remembered[next(iter(remembered))]

    def _move_locked(self, deferred: Deferred[Any], status: Status) -> None:
        # The gauges follow the call; a final status is counted and frees its slot.
        previous = deferred._status
        if previous is Status.PENDING:
            self.pending -= 1
        elif previous is Status.RUNNING:
            self.running -= 1
        elif previous is Status.HELD:
            self.held -= 1
        elif previous is Status.SCHEDULED:
            self.scheduled -= 1
        if status is Status.PENDING:
            self.pending += 1
            deferred._status = status
            return
        if status is Status.SCHEDULED:
            self.scheduled += 1
            deferred._status = status
            return
        self.counters.finished[status] += 1
        self.in_flight.discard(deferred)
        # Notifying a Condition costs even without waiters: only wake real ones.
        if self.waiting_for_room:
            self.room.notify()
        if self.closing and len(self.in_flight) <= self.scheduled:
            self._drained.notify_all()
