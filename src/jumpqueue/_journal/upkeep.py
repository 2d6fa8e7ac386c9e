"""The journal's thread: opens the file, renews leases, takes up records, prunes, probes."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .._codec import known_task
from .._deferred import Deferred
from .._exceptions import InvalidCallError, JournalError
from .._ratelimit import RateLimitedLog
from .._threads import daemon_thread
from . import engine
from .engine import Row
from .file import announce
from .owner import Owner, current_owner
from .records import Quarantine, decode
from .schema import FAILED, PENDING
from .store import Store
from .writer import COMMIT_WAIT, Batch, Mark

if TYPE_CHECKING:
    from .._config import Config
    from .writer import Writer

logger = logging.getLogger("jumpqueue")

#: How often spilled records are looked for while some may wait and there is room.
FEED_INTERVAL = 0.05
#: Longest pause between two looks for records of dead owners.
RECLAIM_INTERVAL = 2.0
#: Records taken up at a time, at least: a process takes more only as its calls start,
#: so that every process that opens the file shares what a dead one left.
CLAIM_BATCH = 16
#: First and longest pause before the journal's thread starts over after an unexpected error.
RESTART_FIRST, RESTART_MAX = 0.5, 30.0


class JournalHost(Protocol):
    """What the journal needs of its runtime."""

    config: Config

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal; False if the runtime no longer admits."""

    def journal_room(self, batch: int) -> int:
        """Calls to take from the journal now: room for `batch` waiting for a worker, at most."""


class Upkeep:
    """The journal's own thread, which works between the callers' commits, with the turn.

    It opens the file, writes marks that waited long enough, renews this
    process's leases, takes up records of dead owners and spilled ones,
    prunes old done records, and probes a file that failed a write.
    """

    def __init__(self, config: Config, host: JournalHost, writer: Writer) -> None:
        self._config = config
        self._host = host
        self._writer = writer
        self._lease = config.journal_lease
        self._batch = max(CLAIM_BATCH, 2 * config.max_workers)
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self.closing = False
        self._feed = False
        self._next_renew = self._next_prune = time.monotonic()
        self._announced = False
        self._open_deadline: float | None = None  # monotonic; committers wait no longer for it
        self._start_log = RateLimitedLog(logger, interval=60.0)

    def start(self) -> bool:
        """Start the thread, unless it runs already or the journal closes; False if it cannot."""
        if self._thread is not None:
            return True
        with self._writer.lock:
            if self._thread is None and not self.closing:
                thread = daemon_thread(self._run, "jumpqueue-journal")
                try:
                    thread.start()
                except RuntimeError as error:  # at interpreter exit: calls go without it
                    self._start_log.warning(
                        "jumpqueue: the journal's thread cannot start (%s)", error
                    )
                    return False
                self._thread = thread
        return True

    def ready(self, timeout: float | None = None) -> bool:
        """Started, and the first opening done; True if the journal takes writes.

        Args:
            timeout: seconds to wait for the opening; None for a caller about to
                commit, who waits `COMMIT_WAIT` at most, all such callers
                together: once the first has waited that long, the others go on
                at once (and fall back) until the journal opens.
        """
        if not self._opened.is_set():
            if not self.start():
                return False
            if timeout is None:
                now = time.monotonic()
                with self._writer.lock:
                    if self._open_deadline is None:
                        self._open_deadline = now + COMMIT_WAIT
                    timeout = max(0.0, self._open_deadline - now)
            self._opened.wait(timeout)
        writer = self._writer
        return writer.store is not None and not writer.degraded

    def hand_over(self, batch: Batch) -> bool:
        """Have the thread write a batch soon, and report it; False if the journal closes."""
        if not self.start():
            return False
        writer = self._writer
        with writer.lock:
            if self.closing:
                return False
            writer.queue(batch)
        return True

    def feed(self) -> None:
        """Records may wait for room, or for a task now known: look for them often."""
        self._feed = True

    def close(self, timeout: float) -> None:
        """Have the thread write what is still to be written and stop; wait for it."""
        writer = self._writer
        with writer.lock:
            self.closing = True
            writer.wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- on the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        # Supervises the thread's work: an unexpected error is logged and makes the
        # journal degrade (callers fall back, as on a full disk); the work then
        # starts over, reopening the file, after a pause that grows while it fails.
        writer = self._writer
        writer.owner = current_owner()
        pause = 0.0
        try:
            while True:
                started = time.monotonic()
                try:
                    self._serve()
                except Exception as error:  # noqa: BLE001 -- the thread must outlive any bug
                    healthy = time.monotonic() - started >= RESTART_MAX
                    pause = RESTART_FIRST if healthy or not pause else min(pause * 2, RESTART_MAX)
                    self._crashed(error, pause)
                else:
                    return
                if self._rest(pause):
                    with writer.turn:
                        writer.close()
                    return
        finally:
            self._opened.set()  # nobody waits for an opening that is not coming

    def _serve(self) -> None:
        # Open the file (and take up what dead processes left), then work until closed.
        writer = self._writer
        with writer.turn:
            self._open()
        self._opened.set()
        while True:
            with writer.lock:
                while not self.closing:
                    delay = self._next_due() - time.monotonic()
                    if delay <= 0:
                        break
                    writer.wake.wait(delay)
                closing = self.closing
            with writer.turn:
                self._chores(closing=closing)
                if closing:
                    writer.close()
                    return

    def _open(self) -> None:
        # With the turn. After a failure, a probe on a fresh connection says whether
        # the journal takes writes again.
        writer = self._writer
        if writer.degraded:
            self._probe()
        elif writer.store is None:
            self._connect()
        store, owner = writer.store, writer.owner
        if store is not None and owner is not None and not writer.degraded:
            self._periodic(store, owner)  # what dead processes left runs now

    def _crashed(self, error: Exception, pause: float) -> None:
        logger.error(
            "jumpqueue: the journal's thread failed (%s: %s); the journal %s is set aside "
            "as if it could not be written, and its thread starts over in %.1f s",
            type(error).__name__,
            error,
            self._writer.path,
            pause,
            exc_info=error,
        )
        writer = self._writer
        writer.degrade(error)
        self._opened.set()  # callers waiting for the opening fall back now
        with writer.turn:
            writer.write(marks=False)  # records queued without waiting fall back now

    def _rest(self, pause: float) -> bool:
        # Wait before starting over; True if the journal closes meanwhile.
        writer = self._writer
        deadline = time.monotonic() + pause
        with writer.lock:
            while not self.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                writer.wake.wait(left)
            return self.closing

    def _chores(self, *, closing: bool) -> None:
        # With the turn: marks that waited, then periodic work or a probe.
        writer = self._writer
        if not writer.degraded:
            writer.check_file()
        written = writer.write(marks=True)
        store, owner = writer.store, writer.owner
        if writer.degraded or store is None or owner is None:
            if not closing and time.monotonic() >= writer.next_probe:
                self._probe()
        elif written and not closing:
            self._periodic(store, owner)

    def _next_due(self) -> float:
        # Called with the lock held: when the thread has something to do unasked.
        writer = self._writer
        if writer.batches_queued():
            return 0.0  # callers that did not wait for them
        if writer.degraded or writer.store is None:
            return writer.next_probe
        due = min(self._next_renew, writer.records_due, self._next_prune)
        marks_due = writer.marks_due()
        if marks_due is not None:
            due = min(due, marks_due)
        return min(due, time.monotonic() + FEED_INTERVAL) if self._feed else due

    def _periodic(self, store: Store, owner: Owner) -> None:
        now = time.monotonic()
        try:
            if now >= self._next_renew:
                self._next_renew = now + self._lease / 3
                with store.transaction():
                    store.renew(owner, time.time() + self._lease)
            if now >= self._writer.records_due or self._feed:
                self._reclaim(store, owner)
            if now >= self._next_prune:
                retention = self._config.journal_retention
                self._next_prune = now + min(max(retention / 2, 0.1), 3600.0)
                with store.transaction():
                    store.prune(time.time() - retention)
                    set_aside = store.set_aside_malformed()
                _log_set_aside(set_aside)
        except engine.Error as error:
            self._writer.degrade(error)

    def _reclaim(self, store: Store, owner: Owner) -> None:
        writer, now = self._writer, time.monotonic()
        room = self._host.journal_room(self._batch)
        if room <= 0:
            writer.records_due = now + (FEED_INTERVAL if self._feed else RECLAIM_INTERVAL)
            return
        with store.transaction():
            revived = store.revive(lambda name: known_task(name) is not None)
            rows, set_aside = store.reclaim(owner, room, time.time() + self._lease)
            waiting = store.next_due()
        _log_set_aside(set_aside)
        self._feed = len(rows) + len(set_aside) >= room or revived > 0
        writer.records_due = now + min(self._lease / 3, RECLAIM_INTERVAL)
        writer.reclaim_by(waiting)
        quarantined: list[tuple[str, str, str]] = []
        for row in rows:
            self._take_up(store, row, quarantined)
        if quarantined:
            with store.transaction():
                store.quarantine(quarantined, owner)

    def _take_up(self, store: Store, row: Row, quarantined: list[tuple[str, str, str]]) -> None:
        call_id = row["id"]
        try:
            deferred = decode(store, row, self._config.serializer)
        except Quarantine as refusal:
            _log_set_aside([(call_id, str(refusal))])
            quarantined.append((refusal.reason, str(refusal), call_id))
            return
        try:
            accepted = self._host.adopt(deferred)
        except InvalidCallError as error:
            self._writer.mark(call_id, Mark(final=FAILED, error=str(error)))
            return
        except Exception as error:  # a bug: fail this record, not the others claimed with it
            logger.exception("jumpqueue: journal record %s could not be taken up", call_id)
            self._writer.mark(call_id, Mark(final=FAILED, error=error))
            return
        if not accepted:
            self._writer.mark(call_id, Mark(final=PENDING))
        elif row["owner"] is not None:
            logger.info(
                "jumpqueue: %s [%s] recovered from %s", deferred.name, call_id, row["owner"]
            )

    def _connect(self) -> Store | None:
        writer = self._writer
        store = writer.connect()
        if store is None:
            return None
        if not self._announced:
            self._announced = True
            announce(writer.path, self._config.journal_synchronous)
        return store

    def _probe(self) -> None:
        # A fresh connection each time: the file may have been replaced, remounted, fixed.
        writer = self._writer
        writer.disconnect()
        store = self._connect()
        try:
            if store is None:
                raise JournalError("it cannot be opened")
            with store.transaction():
                store.probe()
        except engine.FILE_ERRORS:
            writer.probe_failed()
            return
        store.checkpoint()
        writer.recovered()


def _log_set_aside(set_aside: list[tuple[str, str]]) -> None:
    for call_id, problem in set_aside:
        logger.error("jumpqueue: journal record %s quarantined, not run: %s", call_id, problem)
