"""Admission: a call enters the bounded backlog, or its overload policy decides its fate."""

from __future__ import annotations

import enum
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._exceptions import OverloadedError, RuntimeClosedError
from .._ratelimit import RateLimitedLog
from .._reentry import take
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
    HAND_OVER = "hand_over"  # untouched: a signal handler's call, to admit on another thread


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
        `HAND_OVER` (nothing done) when the ledger's lock may be held by the
        code a signal handler interrupted (see `jumpqueue._reentry`).

        Raises:
            OverloadedError: the policy rejects the call.
            RuntimeClosedError: the runtime is shutting down.
        """
        ledger = self._ledger
        lock = ledger.lock
        if not lock.acquire(False) and not take(lock):
            return Verdict.HAND_OVER
        try:
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
            why, retry_after = self._why_full_locked(refused=refused)
        finally:
            lock.release()
        deferred._notify()  # a signal handler's call may have a waiter already (see _reentry)
        self._shed_log.warning(
            "jumpqueue: %s: %s call %s [%s]",
            why,
            "rejected" if shed == "reject" else "dropped",
            deferred.name,
            deferred.id,
        )
        if shed == "reject":
            raise OverloadedError(
                f"{why}; {deferred.name} [{deferred.id}] rejected", retry_after=retry_after
            )
        return Verdict.SHED

    def _why_full_locked(self, *, refused: bool) -> tuple[str, float]:
        # What the log line and OverloadedError say, and when a client may try again.
        ledger = self._ledger
        retry_after = max(1.0, self._config.overload_wait)
        if refused:
            return "the journal cannot be written (on_journal_error='overload')", retry_after
        if len(ledger.in_flight) >= ledger.max_pending:
            return f"backlog full (max_pending={ledger.max_pending})", retry_after
        expected, limit = ledger.expected_wait_locked(), ledger.max_queue_wait or 0.0
        why = (
            f"calls would wait too long to start (about {expected:.1f} s; "
            f"max_queue_wait={ledger.max_queue_wait})"
        )
        # By then, at the pace calls start, a new one would wait no longer than allowed.
        return why, max(retry_after, expected - limit)

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
