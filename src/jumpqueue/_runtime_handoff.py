"""What the runtime does when its backend reports: a call handed off, or one it could not take."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._deferred import Deferred, Status, is_live
from ._exceptions import HandOffError, TaskNotRunError
from ._runtime_outcomes import RuntimeOutcomes
from .executors._base import Attempt

if TYPE_CHECKING:
    from ._ratelimit import RateLimitedLog

logger = logging.getLogger("jumpqueue")

#: What a failed hand-off's log line says happens to the call, by fallback.
_FALLBACK_TEXT = {"local": "running it locally", "raise": "failing it (on_handoff_error='raise')"}


class RuntimeHandOff(RuntimeOutcomes):
    """The part of `Runtime` that the backend's sender thread reports to (`HandOffHost`)."""

    _handoff_counts: dict[str, dict[str, int]]
    _fallback_log: RateLimitedLog

    def handed_off(self, attempt: Attempt, backend: str) -> None:
        """The backend's engine has the call: it is final here, as "handed_off"."""
        deferred = attempt.deferred
        with self._lock:
            self._handoff_counts[backend]["handed_off"] += 1
            late = deferred._status is not Status.PENDING
            if not late:
                error = TaskNotRunError(
                    f"{deferred.name} [{deferred.id}] was handed off to {backend}; its outcome "
                    f"is {backend}'s, under the same id",
                    status=Status.HANDED_OFF.value,
                )
                self._settle_locked(deferred, Status.HANDED_OFF, None, error)
        if late:
            logger.warning(
                "jumpqueue: %s [%s] reached %s after it was %s here",
                deferred.name,
                deferred.id,
                backend,
                deferred.status,
            )
        else:
            deferred._notify()

    def handoff_failed(
        self, attempt: Attempt, backend: str, error: BaseException, *, sent: bool
    ) -> None:
        """The backend could not take the call: apply its fallback ("local", "journal", "raise")."""
        deferred = attempt.deferred
        policy = deferred.options.on_handoff_error or self.config.on_handoff_error
        with self._lock:
            counts = self._handoff_counts[backend]
            counts["handoff_failures"] += sent
            if deferred._status is not Status.PENDING:
                return  # settled meanwhile (abandoned by a shutdown)
            counts["handoff_fallbacks"] += 1
        then = _FALLBACK_TEXT.get(policy, "")
        if policy == "journal":
            delay = self._spill_handoff(deferred)
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
            with self._lock:
                if is_live(deferred._status):  # else a shutdown left it in the journal meanwhile
                    self._settle_locked(deferred, Status.JOURNALED, None, None)
            deferred._notify()
            return
        if policy == "local":
            self._executor(deferred.executor).submit(Attempt(deferred, 1))
            return
        failure = HandOffError(
            f"{deferred.name} [{deferred.id}] could not be handed off to {backend}: "
            f"{type(error).__name__}: {error}",
            backend=backend,
        )
        failure.__cause__ = error
        self._settle(deferred, Status.FAILED, None, failure)

    def _spill_handoff(self, deferred: Deferred[Any]) -> float | None:
        """Give a call its backend could not take back to the journal, to forward it later.

        The journal keeps it pending for a back-off that grows with each failed
        hand-off of the call; the runtime that then takes it up dispatches it
        again, and `_dispatch()` forwards a never-started call to the backend.
        Returns the back-off in seconds, or None when there is no journal, or it
        cannot take the call now (the caller runs it locally).
        """
        journal, record = self._journal, deferred._record
        if journal is None or record is None:
            return None
        return journal.hand_back(record)
