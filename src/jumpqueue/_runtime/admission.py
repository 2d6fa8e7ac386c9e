"""Admission: a call enters the bounded backlog, or its overload policy decides its fate."""

from __future__ import annotations

import enum
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._exceptions import OverloadedError, RuntimeClosedError
from .._ratelimit import RateLimitedLog
from ..executors._base import running_loop

if TYPE_CHECKING:
    from .._choices import OverloadPolicy, ShedPolicy
    from .._config import Config
    from .._deferred import Deferred, Holder
    from .ledger import Ledger

logger = logging.getLogger("jumpqueue")

#: A lock cannot time a longer wait (1e300 s overflows it); a century and more is for ever.
_LONGEST_WAIT = threading.TIMEOUT_MAX / 2


class Verdict(enum.Enum):
    """What admission decided for a call."""

    ADMITTED = "admitted"  # in the backlog: held for its request, or pending
    INLINE = "inline"  # in the backlog, to run now in the caller
    SHED = "shed"  # dropped (counted and logged)
    SPILL = "spill"  # to the journal, counted once written


class Admission:
    """Applies the backlog bound (`max_pending`) and the overload policies."""

    def __init__(self, config: Config, ledger: Ledger) -> None:
        self._config = config
        self._ledger = ledger
        self._shed_log = RateLimitedLog(logger, interval=10.0)
        self._loop_wait_log = RateLimitedLog(logger, interval=60.0)

    def admit(
        self, deferred: Deferred[Any], holder: Holder | None, *, refused: bool = False
    ) -> Verdict:
        """Admit a call (held by `holder`, if any), or apply its overload policy.

        `refused`: the journal refuses calls, so no room can be made for it.

        Raises:
            OverloadedError: the policy rejects the call.
            RuntimeClosedError: the runtime is shutting down.
        """
        ledger = self._ledger
        with ledger.lock:
            if ledger.closing:
                raise RuntimeClosedError(f"the runtime is shut down; {deferred.name} not accepted")
            if not refused and ledger.has_room_locked():
                ledger.enter_locked(deferred, holder)
                return Verdict.ADMITTED
            policy = self._overloaded(deferred, refused=refused)
            if policy == "spill":
                return Verdict.SPILL  # counted with its outcome, once written
            if policy == "wait":  # and room was found
                ledger.counters.waited += 1
                ledger.enter_locked(deferred, holder)
                return Verdict.ADMITTED
            if policy == "inline":
                ledger.counters.inlined += 1
                ledger.enter_locked(deferred, None)
                return Verdict.INLINE
            shed: ShedPolicy = "reject" if policy == "reject" else "drop"
            ledger.shed_locked(deferred, shed)
            why = self._why_full_locked(refused=refused)
        self._shed_log.warning(
            "jumpqueue: %s: %s call %s [%s]",
            why,
            "rejected" if shed == "reject" else "dropped",
            deferred.name,
            deferred.id,
        )
        if shed == "reject":
            raise OverloadedError(
                f"{why}; {deferred.name} [{deferred.id}] rejected",
                retry_after=max(1.0, self._config.overload_wait),
            )
        return Verdict.SHED

    def _why_full_locked(self, *, refused: bool) -> str:
        ledger = self._ledger
        if refused:
            return "the journal cannot be written (on_journal_error='overload')"
        if len(ledger.in_flight) >= ledger.max_pending:
            return f"backlog full (max_pending={ledger.max_pending})"
        return (
            f"calls wait too long to start (the longest waited "
            f"{ledger.longest_wait_locked():.1f} s; max_queue_wait={ledger.max_queue_wait})"
        )

    def _overloaded(self, deferred: Deferred[Any], *, refused: bool) -> OverloadPolicy:
        # Called with the lock held and the backlog full (or the journal refusing, which
        # neither waiting for room nor spilling can help): the policy that applies now.
        policy = deferred.options.on_overload or self._config.on_overload
        if refused and policy in ("wait", "spill"):
            return "reject"
        if policy != "wait":
            return policy
        if running_loop() is not None:
            # Blocking an event loop would freeze the whole application.
            self._loop_wait_log.warning(
                "jumpqueue: the 'wait' overload policy cannot block an event loop; "
                "rejecting instead"
            )
            return "reject"
        ledger = self._ledger
        ledger.waiting_for_room += 1
        try:
            room = ledger.room.wait_for(
                lambda: ledger.closing or ledger.has_room_locked(),
                timeout=min(self._config.overload_wait, _LONGEST_WAIT),
            )
        finally:
            ledger.waiting_for_room -= 1
        if ledger.closing:
            raise RuntimeClosedError(f"the runtime shut down while {deferred.name} waited")
        return "wait" if room else "reject"
