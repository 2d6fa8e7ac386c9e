"""The runtime's side of its journal: encoding calls, group commits, spill, recovery, leftovers."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .._deferred import Deferred, Status
from .._exceptions import ConfigurationError, OverloadedError
from ..executors._base import Attempt, running_loop

if TYPE_CHECKING:
    from .._config import Config
    from .._journal import Journal, Record
    from .._scope import RequestScope, ScopeHost
    from ..executors._base import Executor
    from .dispatch import Dispatcher
    from .ledger import Ledger

logger = logging.getLogger("jumpqueue")


class JournalLink:
    """Writes the calls a runtime accepts to its journal, and runs what the journal takes up.

    It is the journal's `JournalHost`; without a journal configured, every
    method is a no-op or says so.
    """

    def __init__(self, config: Config, ledger: Ledger, dispatcher: Dispatcher) -> None:
        self.config = config
        self._ledger = ledger
        self._dispatcher = dispatcher
        self.journal: Journal | None = None
        self._lock = threading.Lock()
        # Calls spilled from an event loop that the journal's thread has not written
        # yet, each with a copy to run should it not be written, and how its request
        # ended (None while it is on); the copies of those it could not write while
        # their request was on, for the request's end to run or not.
        self._spills_writing: dict[Deferred[Any], tuple[Deferred[Any], bool | None]] = {}
        self._spills_unwritten: dict[Deferred[Any], Deferred[Any]] = {}
        if config.journal is not None:
            from .._journal import Journal  # noqa: PLC0415 -- sqlite3 only for those who journal

            self.journal = Journal(config, self)

    def prepare(self, deferred: Deferred[Any]) -> Journal | None:
        """Encode the call for the journal now, so that bad input fails in the caller.

        Raises:
            InvalidCallError: the call cannot be journaled (see `Journal.prepare`).
            ConfigurationError: the task spills, and no journal is configured.
        """
        journal = self.journal
        if journal is not None:
            journal.prepare(deferred)
        elif deferred.options.on_overload == "spill":
            raise ConfigurationError(
                f"{deferred.name}: on_overload='spill' writes calls to the journal, and "
                "none is configured (journal='path/to/file.db')"
            )
        return journal

    def commit(self, deferreds: list[Deferred[Any]]) -> None:
        """Write the calls not written yet, in one transaction; count those that fall back."""
        journal = self.journal
        if journal is None:
            return
        records = [
            record
            for record in (deferred._record for deferred in deferreds)
            if record is not None and not record.written
        ]
        if records:
            unwritten = journal.commit(records)
            if unwritten:  # they run without it (on_journal_error="memory", or too late)
                self._ledger.journal_fallbacks(unwritten)

    def commit_then_submit(self, deferred: Deferred[Any], executor: Executor) -> None:
        """Write a call accepted outside a request, then submit its first attempt.

        On an event loop's thread the journal's thread writes it, and submits
        it then: the loop never waits for the disk.
        """
        journal, record = self.journal, deferred._record
        if journal is None or record is None or running_loop() is None:
            self.commit([deferred])
            self._submit(deferred, executor)
            return

        def written(unwritten: int) -> None:
            if unwritten:
                self._ledger.journal_fallbacks(unwritten)
            self._submit(deferred, executor)

        journal.commit_later([record], written)

    def _submit(self, deferred: Deferred[Any], executor: Executor) -> None:
        # Unless a shutdown settled it meanwhile.
        if deferred.status is Status.PENDING:
            executor.submit(Attempt(deferred, 1))
        elif deferred.status is Status.SCHEDULED:
            self._dispatcher.dispatch_when_due(deferred)

    def spill(self, deferred: Deferred[Any], holder: RequestScope | None, host: ScopeHost) -> None:
        """Write a call the full backlog has no room for to the journal, to run when it has.

        In a request (`holder`), it runs once the request has succeeded. On an
        event loop's thread the journal's thread writes it, and the call counts
        as journaled at once; should that write fail, the call runs in memory
        instead, past the bound (once its request has succeeded).

        Raises:
            OverloadedError: the journal cannot take it either.
        """
        journal, record = self.journal, deferred._record
        if (
            journal is not None
            and record is not None
            and journal.takes_writes
            and running_loop() is not None
        ):
            self._spill_later(journal, deferred, record, holder, host)
            return
        written = (
            journal is not None
            and record is not None
            and journal.spill(record, held=holder is not None)
        )
        self._ledger.spilled(deferred, written=written)
        if not written:
            max_pending = self.config.max_pending
            raise OverloadedError(
                f"backlog full (max_pending={max_pending}) and the journal "
                f"cannot be written; {deferred.name} [{deferred.id}] rejected",
                retry_after=max(1.0, self.config.overload_wait),
            )
        if holder is not None and not holder.hold(host, deferred):
            host.release_held(deferred, run=True)

    def _spill_later(
        self,
        journal: Journal,
        deferred: Deferred[Any],
        record: Record,
        holder: RequestScope | None,
        host: ScopeHost,
    ) -> None:
        # Made now: a journaled handle lets go of its arguments.
        fallback = _copy(deferred)
        with self._lock:
            self._spills_writing[deferred] = (fallback, None if holder is not None else True)
        self._ledger.spilled(deferred, written=True)
        journal.spill_later(
            record,
            held=holder is not None,
            then=lambda unwritten: self._spill_written(deferred, written=not unwritten),
        )
        if holder is not None and not holder.hold(host, deferred):
            host.release_held(deferred, run=True)

    def _spill_written(self, deferred: Deferred[Any], *, written: bool) -> None:
        # The journal's thread wrote a call spilled from an event loop, or could not.
        with self._lock:
            fallback, run = self._spills_writing.pop(deferred)
            if not written and run is None:  # its request is still on: its end decides
                self._spills_unwritten[deferred] = fallback
        if not written:
            self._ledger.journal_fallbacks(1)
            if run:
                self._run_unwritten(fallback)

    def _run_unwritten(self, fallback: Deferred[Any]) -> None:
        # A spilled call the journal could not take runs here, past the bound, as one
        # taken up from the journal would have.
        logger.warning(
            "jumpqueue: %s [%s] was spilled and the journal could not take it; "
            "it runs in memory, past max_pending",
            fallback.name,
            fallback.id,
        )
        self.adopt(fallback)

    def release_spilled(self, deferred: Deferred[Any], *, run: bool) -> None:
        """The request that spilled this call ended: the journal lets it run, or skips it."""
        with self._lock:
            writing = self._spills_writing.get(deferred)
            if writing is not None:  # its write is still to come, and then decides
                self._spills_writing[deferred] = (writing[0], run)
            fallback = self._spills_unwritten.pop(deferred, None)
        if fallback is not None:
            if run:
                self._run_unwritten(fallback)
        elif self.journal is not None and deferred._record is not None:
            self.journal.release_spilled(deferred._record, run=run)

    def left_over(self, deferred: Deferred[Any]) -> Status:
        """At shutdown (with the ledger's lock held): a journaled call stays for the next start."""
        record = deferred._record
        if record is None or not record.written or self.journal is None:
            return Status.ABANDONED
        self.journal.left_over(
            record,
            running=deferred._status is Status.RUNNING,
            not_before=deferred.start_at if deferred._status is Status.SCHEDULED else None,
        )
        return Status.JOURNALED

    # -- what the journal asks of the runtime (`JournalHost`) ----------------------------------

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal here; False if the runtime is shutting down.

        Raises:
            InvalidCallError: its executor cannot run it.
        """
        self._dispatcher.executor(deferred.executor).validate(deferred)
        if not self._ledger.adopt(deferred):
            return False
        self._dispatcher.dispatch_when_due(deferred)
        return True

    def journal_room(self, batch: int) -> int:
        """Calls to take from the journal now: room for `batch` waiting for a worker, at most."""
        return self._ledger.room_left(waiting_at_most=batch)


def _copy(deferred: Deferred[Any]) -> Deferred[Any]:
    # The same call, not admitted yet: what runs in memory if the journal cannot take it.
    return Deferred(
        deferred.name,
        deferred.fn,
        deferred.args,
        deferred.kwargs,
        deferred.options,
        deferred.executor,
        deferred.context,
        deferred.loop,
        call_id=deferred.id,
    )
