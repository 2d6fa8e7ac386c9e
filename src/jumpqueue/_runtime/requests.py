"""Calls held for a request: sealed into the journal before its last byte, released after it."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .._deferred import Deferred, Status

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .journaling import JournalLink
    from .ledger import Ledger

logger = logging.getLogger("jumpqueue")


class HeldCalls:
    """The runtime's `ScopeHost`: what a request scope hands its held calls back to."""

    def __init__(
        self,
        ledger: Ledger,
        dispatcher: Dispatcher,
        journaling: JournalLink,
        stopped: threading.Event,
    ) -> None:
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._journaling = journaling
        self._stopped = stopped
        self.journaled = journaling.journal is not None

    def seal_held(self, deferreds: list[Deferred[Any]]) -> None:
        """Write held calls to the journal in one transaction (a request's group commit).

        The scope calls it just before the response's last byte is handed to
        the server; without a journal it does nothing.
        """
        if self.journaled:
            self._journaling.commit([d for d in deferreds if d.status is Status.HELD])

    def release_held(self, deferred: Deferred[Any], *, run: bool) -> None:
        """Hand over (or skip) a call its request scope held; never blocks."""
        if deferred._status is Status.JOURNALED:  # spilled during the request
            self._journaling.release_spilled(deferred, run=run)
            return
        status = self._ledger.release(deferred, run=run, stopped=self._stopped.is_set())
        if status is Status.PENDING or status is Status.SCHEDULED:
            self._dispatcher.dispatch_when_due(deferred)
        elif status is not None:
            logger.info("jumpqueue: %s [%s] %s", deferred.name, deferred.id, status)
