"""Calls that wait for their time (`delay`, `run_after`): released to their executor when due."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._deferred import Deferred
    from .._scheduler import Scheduler
    from .ledger import Ledger


class Delays:
    """Holds scheduled calls on the runtime's timer thread until their time, then dispatches them.

    A scheduled call is in flight, in the backlog's bound, while it waits. At
    shutdown it is not waited for: it stays in the journal if it was written
    there (and runs when due after the next start), else it is abandoned.
    """

    def __init__(
        self, ledger: Ledger, scheduler: Scheduler, dispatch: Callable[[Deferred[Any]], None]
    ) -> None:
        self._ledger = ledger
        self._scheduler = scheduler
        self._dispatch = dispatch

    def schedule(self, deferred: Deferred[Any]) -> None:
        """Dispatch a scheduled call once its `start_at` has come."""
        start_at = deferred.start_at
        wait = 0.0 if start_at is None else max(0.0, start_at - time.time())
        self._scheduler.call_later(wait, lambda: self._due(deferred))

    def _due(self, deferred: Deferred[Any]) -> None:
        if self._ledger.due(deferred):  # else settled meanwhile (a shutdown)
            self._dispatch(deferred)
