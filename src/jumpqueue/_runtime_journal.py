"""The runtime's side of the journal: encoding calls, group commits, recovery, leftovers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._deferred import Deferred, Status
from ._exceptions import ConfigurationError
from ._runtime_outcomes import RuntimeOutcomes

if TYPE_CHECKING:
    from ._journal import Journal


class RuntimeJournaling(RuntimeOutcomes):
    """The part of `Runtime` that writes calls to its journal and runs what it takes up."""

    @property
    def journaled(self) -> bool:
        """True if this runtime writes the calls it accepts to a journal."""
        return self._journal is not None

    def open_journal(self, timeout: float = 10.0) -> bool:
        """Open the journal now, and take up what it holds for this process to run.

        The journal otherwise opens at the first `defer()`; a server calls this
        once a worker process has started, so that the calls a crashed process
        left behind run without waiting for new ones. True if it takes writes;
        False with no journal configured, or while it cannot be written.
        """
        return self._journal is not None and self._journal.open(timeout)

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal here; False if the runtime is shutting down.

        Raises:
            InvalidCallError: its executor cannot run it.
        """
        self._executor(deferred.executor).validate(deferred)
        with self._lock:
            if self._closing:
                return False
            self._counts["submitted"] += 1
            self._counts["recovered"] += 1
            self._in_flight.add(deferred)
            self._pending += 1
        self._dispatch(deferred)
        return True

    def journal_room(self) -> int:
        """Calls the backlog can take now (the journal takes up no more than that)."""
        with self._lock:
            return 0 if self._closing else self.config.max_pending - len(self._in_flight)

    def _prepare_journal(self, deferred: Deferred[Any]) -> Journal | None:
        # Encode the call for the journal now, so that bad input fails in the caller.
        journal = self._journal
        if journal is not None:
            journal.prepare(deferred)
        elif deferred.options.on_overload == "spill":
            raise ConfigurationError(
                f"{deferred.name}: on_overload='spill' writes calls to the journal, and "
                "none is configured (journal='path/to/file.db')"
            )
        return journal

    def seal_held(self, deferreds: list[Deferred[Any]]) -> None:
        """Write held calls to the journal in one transaction (a request's group commit).

        `RequestScope.seal()` calls it just before the response's last byte is
        handed to the server; without a journal it does nothing.
        """
        if self._journal is not None:
            self._journal_commit([d for d in deferreds if d._status is Status.HELD])

    def _journal_commit(self, deferreds: list[Deferred[Any]]) -> None:
        journal = self._journal
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
                with self._lock:
                    self._counts["journal_fallbacks"] += unwritten

    def _left_over(self, deferred: Deferred[Any]) -> Status:
        # Called with the lock held at shutdown: a journaled call stays for the next start.
        record = deferred._record
        if record is None or not record.written or self._journal is None:
            return Status.ABANDONED
        self._journal.left_over(record, running=deferred._status is Status.RUNNING)
        return Status.JOURNALED
