"""The journal's thread: opens the file, renews leases, takes up records, prunes, probes."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .._codec import known_task
from .._deferred import Deferred
from .._exceptions import InvalidCallError, JournalError
from .._threads import daemon_thread
from .file import announce
from .owner import Owner, current_owner
from .records import Quarantine, decode
from .store import FAILED, PENDING, Store
from .writer import COMMIT_WAIT, Mark

if TYPE_CHECKING:
    from .._config import Config
    from .writer import Writer

logger = logging.getLogger("jumpqueue")

#: How often spilled records are looked for while some may wait and there is room.
FEED_INTERVAL = 0.05
#: Longest pause between two looks for records of dead owners.
RECLAIM_INTERVAL = 2.0


class JournalHost(Protocol):
    """What the journal needs of its runtime."""

    config: Config

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal; False if the runtime no longer admits."""

    def journal_room(self) -> int:
        """Calls the backlog can take now."""


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
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self.closing = False
        self._feed = False
        self._next_renew = self._next_prune = time.monotonic()
        self._announced = False

    def start(self) -> None:
        """Start the thread, unless it runs already or the journal closes."""
        if self._thread is not None:
            return
        with self._writer.lock:
            if self._thread is None and not self.closing:
                self._thread = daemon_thread(self._run, "jumpqueue-journal")
                self._thread.start()

    def ready(self, timeout: float = COMMIT_WAIT) -> bool:
        """Started, and the first opening done; True if the journal takes writes."""
        if not self._opened.is_set():
            self.start()
            self._opened.wait(timeout)
        writer = self._writer
        return writer.store is not None and not writer.degraded

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
        writer = self._writer
        owner = writer.owner = current_owner()
        with writer.turn:
            self._connect()
            if writer.store is not None:
                self._periodic(writer.store, owner)  # what dead processes left runs now
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
                try:
                    self._chores(closing=closing)
                except Exception:  # the thread must outlive any bug in one round
                    logger.exception("jumpqueue: the journal's thread failed a round; it goes on")
                if closing:
                    writer.close()
                    return

    def _chores(self, *, closing: bool) -> None:
        # With the turn: marks that waited, then periodic work or a probe.
        writer = self._writer
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
        except sqlite3.Error as error:
            self._writer.degrade(error)

    def _reclaim(self, store: Store, owner: Owner) -> None:
        writer, now = self._writer, time.monotonic()
        room = self._host.journal_room()
        if room <= 0:
            writer.records_due = now + (FEED_INTERVAL if self._feed else RECLAIM_INTERVAL)
            return
        with store.transaction():
            revived = store.revive(lambda name: known_task(name) is not None)
            rows = store.reclaim(owner, room, time.time() + self._lease)
            waiting = store.next_due()
        self._feed = len(rows) >= room or revived > 0
        writer.records_due = now + min(self._lease / 3, RECLAIM_INTERVAL)
        writer.reclaim_by(waiting)
        quarantined: list[tuple[str, str, str]] = []
        for row in rows:
            self._take_up(store, row, quarantined)
        if quarantined:
            with store.transaction():
                store.quarantine(quarantined, owner)

    def _take_up(
        self, store: Store, row: sqlite3.Row, quarantined: list[tuple[str, str, str]]
    ) -> None:
        call_id = row["id"]
        try:
            deferred = decode(store, row, self._config.serializer)
        except Quarantine as refusal:
            logger.error(  # noqa: TRY400 -- the reason says it all; no traceback to show
                "jumpqueue: journal record %s quarantined, not run: %s", call_id, refusal
            )
            quarantined.append((refusal.reason, str(refusal), call_id))
            return
        try:
            accepted = self._host.adopt(deferred)
        except InvalidCallError as error:
            self._writer.mark(call_id, Mark(final=FAILED, error=str(error)))
            return
        if not accepted:
            self._writer.mark(call_id, Mark(final=PENDING))
        elif row["owner"] is not None:
            logger.info(
                "jumpqueue: %s [%s] recovered from %s", deferred.name, call_id, row["owner"]
            )

    def _connect(self) -> Store | None:
        writer = self._writer
        try:
            store = Store.open(writer.path, synchronous=self._config.journal_synchronous)
        except (sqlite3.Error, OSError, JournalError) as error:
            writer.degrade(error)
            return None
        writer.store = store
        writer.records_due = time.monotonic()
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
                raise JournalError("it cannot be opened")  # noqa: TRY301 -- one back-off path
            with store.transaction():
                store.probe()
        except (sqlite3.Error, OSError, JournalError):
            writer.probe_failed()
            return
        store.checkpoint()
        writer.recovered()
