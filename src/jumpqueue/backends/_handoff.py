"""The hand-off executor: sends admitted calls to a broker on its own threads, never the caller's.

Sender threads start as the queue needs them, up to `max_senders`: a send is
mostly a network round trip, so a few overlap their waits where one would cap
hand-offs at one per round trip. Each send is bounded by `handoff_timeout`.
A failed send marks the broker down:
for a short while (doubling up to `RECONNECT_MAX`) calls are not even tried and
take their fallback at once, so a dead broker costs one timeout, not one per
call; then the next call probes it, and hand-off resumes by itself when a send
succeeds again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .._codec import check_portable
from .._deferred import Status
from .._exceptions import HandOffError, InvalidCallError
from .._ratelimit import RateLimitedLog
from .._reentry import hand_over, take
from .._threads import daemon_thread
from . import _message

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from ..executors._base import Attempt
    from . import HandOffHost

logger = logging.getLogger("jumpqueue")

#: Seconds after a failed send before the broker is tried again; doubles up to RECONNECT_MAX.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0
#: Sender threads per backend, at most.
MAX_SENDERS = 4


class Transport(Protocol):
    """One engine's way to send a message: bounded by its client's timeouts, raising on failure.

    `send` is called from several sender threads at once.
    """

    def send(self, message: dict[str, Any], *, timeout: float | None) -> bool:
        """Enqueue the message (its "id" is the engine's job id); False if that id was there.

        `timeout` is the task's time limit (None for none), for the engine to enforce.
        """

    def ping(self) -> None:
        """Raise unless the broker answers, within the client's timeouts (`jumpqueue check`)."""

    def close(self) -> None:
        """Release connections; called once, when the executor closes."""


class HandOffExecutor:
    """The executor a backend opens: `submit()` queues, a sender thread hands off.

    Args:
        name: the backend's name ("rq", "celery"), as `stats()` reports it.
        transport: how messages reach the engine (safe to use from several threads).
        config: the runtime's configuration.
        host: the runtime, told of each hand-off and each failure.
        max_senders: sender threads at most.
        queue: the engine's queue the calls go to, for observers' `destination`.
    """

    def __init__(
        self,
        name: str,
        transport: Transport,
        config: Config,
        host: HandOffHost,
        *,
        max_senders: int = MAX_SENDERS,
        queue: str | None = None,
    ) -> None:
        self.name = name
        #: Where calls go, as observers are told ("rq:default").
        self.destination = name if queue is None else f"{name}:{queue}"
        self._transport = transport
        self._config = config
        self._host = host
        self._max_senders = max_senders
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: collections.deque[Attempt] = collections.deque()
        self._senders = 0
        self._idle = 0
        self._closed = False
        # The broker's health, as the last send found it (written under the lock; read
        # without it, where a stale read only delays one fallback decision).
        self._retry_at = 0.0
        self._reconnect = RECONNECT_FIRST
        self._down: BaseException | None = None
        self._skipped = 0
        self._down_log = RateLimitedLog(logger, interval=10.0)

    def __repr__(self) -> str:
        state = "down" if self._down is not None else "up"
        return (
            f"<HandOffExecutor {self.name} {state} senders={self._senders} "
            f"queued={len(self._queue)}>"
        )

    @property
    def workers(self) -> int:
        """Sender threads run no calls: 0."""
        return 0

    @property
    def stuck(self) -> int:
        """Never stuck: every send is bounded by its timeout."""
        return 0

    def ping(self) -> None:
        """Raise unless the broker answers now, within `handoff_timeout` (`jumpqueue check`)."""
        self._transport.ping()

    def validate(self, deferred: Deferred[Any]) -> None:
        """Refuse at defer time a call that cannot leave the process.

        Raises:
            InvalidCallError: a lambda, a closure, a function of `__main__` or one
                not importable by its name, or arguments the serializer cannot carry.
            HandOffError: the task's fallback is "raise" and the broker was found
                unreachable moments ago.
        """
        check_portable(
            deferred,
            _message.serializer_for(deferred, self._config),
            where=f"a worker of {self.name}",
        )
        down = self._down
        if (
            down is not None
            and time.monotonic() < self._retry_at
            and (deferred.options.on_handoff_error or self._config.on_handoff_error) == "raise"
        ):
            raise HandOffError(
                f"{deferred.name} not accepted: the {self.name} broker is unreachable "
                f"({type(down).__name__}: {down})",
                backend=self.name,
            )

    def submit(self, attempt: Attempt) -> None:
        """Queue the call for a sender thread; never blocks."""
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            hand_over(self.submit, attempt)  # a signal handler's, on top of our code
            return
        try:
            if self._closed:
                return  # the runtime settled every call before closing us
            self._queue.append(attempt)
            if self._idle:
                self._wakeup.notify()
            elif self._senders < self._max_senders:
                self._senders += 1
                daemon_thread(self._serve, f"jumpqueue-{self.name}-sender-{self._senders}").start()
        finally:
            lock.release()

    def expire(self, attempt: Attempt) -> None:
        """Nothing runs here to expire: the engine enforces the task's timeout."""

    def close(self) -> None:
        """Stop the sender threads after their current sends; queued calls were settled."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._wakeup.notify_all()
        try:
            self._transport.close()
        except Exception:  # closing a dead connection may fail; nothing is left to do
            logger.debug("jumpqueue: closing the %s connection failed", self.name, exc_info=True)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._wakeup.wait()
                    self._idle -= 1
                if self._closed:
                    self._senders -= 1
                    return
                attempt = self._queue.popleft()
            try:
                self._hand_off(attempt)
            except Exception as error:  # a sender must outlive any one call's surprise
                logger.exception("jumpqueue: handing off %r failed unexpectedly", attempt)
                if attempt.deferred.status is Status.PENDING:
                    self._host.handoff_failed(attempt, self.name, error, sent=False)
            del attempt  # nothing of the last call stays reachable while this thread waits

    def _hand_off(self, attempt: Attempt) -> None:
        deferred = attempt.deferred
        try:
            message = _message.build(
                deferred, serializer=_message.serializer_for(deferred, self._config)
            )
        except InvalidCallError as error:  # its arguments changed since defer()
            if deferred.status is Status.PENDING:
                self._host.handoff_failed(attempt, self.name, error, sent=False)
            return
        # Checked after reading the call: a call is marked final before its arguments
        # are cleared, so a message built from a still-pending call is complete.
        if deferred.status is not Status.PENDING:
            return  # settled meanwhile (abandoned by a shutdown)
        down = self._down
        if down is not None and time.monotonic() < self._retry_at:
            with self._lock:
                self._skipped += 1
            untried = HandOffError(
                f"not sent: the {self.name} broker was unreachable moments ago "
                f"({type(down).__name__}: {down})",
                backend=self.name,
            )
            self._host.handoff_failed(attempt, self.name, untried, sent=False)
            return
        try:
            fresh = self._transport.send(
                message, timeout=_message.timeout_for(deferred, self._config)
            )
        except Exception as error:  # noqa: BLE001 -- whatever the client raises, the call falls back
            self._broker_down(error)
            self._host.handoff_failed(attempt, self.name, error, sent=True)
            return
        if down is not None:
            self._broker_up()
        if not fresh:
            logger.info(
                "jumpqueue: %s [%s] was already in %s under that id; not sent twice",
                deferred.name,
                deferred.id,
                self.name,
            )
        self._host.handed_off(attempt, self.name)

    def _broker_down(self, error: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if self._down is not None:
                if now < self._retry_at:
                    return  # another sender's failure in the same outage
                self._reconnect = min(self._reconnect * 2, RECONNECT_MAX)
            self._down = error
            self._retry_at = now + self._reconnect
        self._down_log.warning(
            "jumpqueue: the %s broker is unreachable (%s: %s); calls take their fallback, "
            "next try in %.1f s",
            self.name,
            type(error).__name__,
            error,
            self._reconnect,
        )

    def _broker_up(self) -> None:
        with self._lock:
            if self._down is None:
                return  # another sender saw it first
            self._down = None
            self._reconnect = RECONNECT_FIRST
            skipped, self._skipped = self._skipped, 0
        logger.warning(
            "jumpqueue: the %s broker is reachable again; hand-off resumed "
            "(%d call(s) took their fallback untried meanwhile)",
            self.name,
            skipped,
        )
