"""The runtime's side of its journal: encoding calls, group commits, spill, recovery, leftovers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._deferred import Deferred, Status
from .._exceptions import ConfigurationError, OverloadedError

if TYPE_CHECKING:
    from .._config import Config
    from .._journal import Journal
    from .._scope import RequestScope, ScopeHost
    from .dispatch import Dispatcher
    from .ledger import Ledger


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

    def spill(self, deferred: Deferred[Any], holder: RequestScope | None, host: ScopeHost) -> None:
        """Write a call the full backlog has no room for to the journal, to run when it has.

        In a request (`holder`), it runs once the request has succeeded.

        Raises:
            OverloadedError: the journal cannot take it either.
        """
        journal, record = self.journal, deferred._record
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

    def release_spilled(self, deferred: Deferred[Any], *, run: bool) -> None:
        """The request that spilled this call ended: the journal lets it run, or skips it."""
        if self.journal is not None and deferred._record is not None:
            self.journal.release_spilled(deferred._record, run=run)

    def left_over(self, deferred: Deferred[Any]) -> Status:
        """At shutdown (with the ledger's lock held): a journaled call stays for the next start."""
        record = deferred._record
        if record is None or not record.written or self.journal is None:
            return Status.ABANDONED
        self.journal.left_over(record, running=deferred._status is Status.RUNNING)
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
        self._dispatcher.dispatch(deferred)
        return True

    def journal_room(self, batch: int) -> int:
        """Calls to take from the journal now: room for `batch` waiting for a worker, at most."""
        return self._ledger.room_left(waiting_at_most=batch)
