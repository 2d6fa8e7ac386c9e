"""What becomes of a call the backend reports on: handed off, or taking its fallback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._deferred import Status
from .._exceptions import HandOffError, TaskNotRunError
from .._ratelimit import RateLimitedLog
from ..executors._base import Attempt

if TYPE_CHECKING:
    from .._config import Config
    from .._journal import Journal
    from .dispatch import Dispatcher
    from .ledger import Ledger

logger = logging.getLogger("jumpqueue")

#: What a failed hand-off's log line says happens to the call, by fallback.
_FALLBACK_TEXT = {"local": "running it locally", "raise": "failing it (on_handoff_error='raise')"}


class HandOffOutcomes:
    """The runtime's `HandOffHost`: the backend's sender threads report each call here."""

    def __init__(
        self, config: Config, ledger: Ledger, dispatcher: Dispatcher, journal: Journal | None
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._journal = journal
        self._fallback_log = RateLimitedLog(logger, interval=10.0)

    def handed_off(self, attempt: Attempt, backend: str) -> None:
        """The backend's engine has the call: it is final here, as "handed_off"."""
        deferred = attempt.deferred
        note = TaskNotRunError(
            f"{deferred.name} [{deferred.id}] was handed off to {backend}; its outcome "
            f"is {backend}'s, under the same id",
            status=Status.HANDED_OFF.value,
        )
        if not self._ledger.handed_off(deferred, backend, note):
            logger.warning(
                "jumpqueue: %s [%s] reached %s after it was %s here",
                deferred.name,
                deferred.id,
                backend,
                deferred.status,
            )

    def handoff_failed(
        self, attempt: Attempt, backend: str, error: BaseException, *, sent: bool
    ) -> None:
        """The backend could not take the call: apply its fallback ("local", "journal", "raise")."""
        deferred = attempt.deferred
        if not self._ledger.handoff_failed(deferred, backend, sent=sent):
            return  # settled meanwhile (abandoned by a shutdown)
        policy = deferred.options.on_handoff_error or self._config.on_handoff_error
        then = _FALLBACK_TEXT.get(policy, "")
        if policy == "journal":
            delay = self._hand_back(attempt)
            if delay is not None:
                then = f"journaled it, to try again in {delay:.1f} s"
            else:
                policy = "local"
                then = "running it locally: on_handoff_error='journal' but " + (
                    "no journal is configured"
                    if self._journal is None
                    else "the journal cannot be written"
                )
        self._fallback_log.warning(
            "jumpqueue: %s [%s] not handed off to %s (%s: %s); %s",
            deferred.name,
            deferred.id,
            backend,
            type(error).__name__,
            error,
            then,
        )
        if policy == "journal":
            # A shutdown may have left it in the journal meanwhile: the first status stands.
            self._ledger.settle(deferred, Status.JOURNALED)
        elif policy == "local":
            self._dispatcher.executor(deferred.executor).submit(Attempt(deferred, 1))
        else:
            failure = HandOffError(
                f"{deferred.name} [{deferred.id}] could not be handed off to {backend}: "
                f"{type(error).__name__}: {error}",
                backend=backend,
            )
            failure.__cause__ = error
            self._ledger.settle(deferred, Status.FAILED, None, failure)

    def _hand_back(self, attempt: Attempt) -> float | None:
        """Give a call its backend could not take back to the journal, to forward it later.

        The journal keeps it pending for a back-off that grows with each failed
        hand-off of the call; the runtime that then takes it up dispatches it
        again, and `Dispatcher.dispatch()` forwards a never-started call to the
        backend. Returns the back-off in seconds, or None when there is no
        journal, or it cannot take the call now (the caller runs it locally).
        """
        record = attempt.deferred._record
        if self._journal is None or record is None:
            return None
        return self._journal.hand_back(record)
