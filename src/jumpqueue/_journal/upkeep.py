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
from .file import announce
from .owner import Owner, current_owner
from .records import Quarantine, decode
from .store import FAILED, PENDING, Store
from .writer import PROBE_MAX, JournalWriter, Mark

if TYPE_CHECKING:
    from .._config import Config
    from .._ratelimit import RateLimitedLog

logger = logging.getLogger("jumpqueue")

#: How often spilled records are looked for while some may wait and there is room.
FEED_INTERVAL = 0.05
#: Longest a mark waits for a transaction to share (a group commit, or other marks):
#: a mark lost to a crash in that window only makes a call run again.
MARK_DELAY = 0.02
#: Longest pause between two looks for records of dead owners.
RECLAIM_INTERVAL = 2.0


class JournalHost(Protocol):
    """What the journal needs of its runtime."""

    config: Config

    def adopt(self, deferred: Deferred[Any]) -> bool:
        """Run a call taken up from the journal; False if the runtime no longer admits."""

    def journal_room(self) -> int:
        """Calls the backlog can take now."""


class JournalUpkeep(JournalWriter):
    """The part of `Journal` that its own thread runs, between the callers' commits."""

    _host: JournalHost
    _turn: threading.Lock
    _thread: threading.Thread | None
    _opened: threading.Event
    _closing: bool
    _feed: bool
    _next_renew: float
    _next_prune: float
    _recovered_log: RateLimitedLog
    _announced: bool

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run, name="jumpqueue-journal", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        self._owner = current_owner()
        with self._turn:
            self._connect()
            if self._store is not None:
                self._periodic(self._store, self._owner)  # what dead processes left runs now
        self._opened.set()
        while True:
            with self._lock:
                while not self._closing:
                    delay = self._next_due() - time.monotonic()
                    if delay <= 0:
                        break
                    self._wake.wait(delay)
                closing = self._closing
            with self._turn:
                try:
                    self._chores(closing=closing)
                except Exception:  # the thread must outlive any bug in one round
                    logger.exception("jumpqueue: the journal's thread failed a round; it goes on")
                if closing:
                    self._finish()
                    return

    def _chores(self, *, closing: bool) -> None:
        # With the turn: marks that waited, then periodic work or a probe.
        written = self._write(marks=True)
        store, owner = self._store, self._owner
        if self._degraded or store is None or owner is None:
            if not closing and time.monotonic() >= self._next_probe:
                self._probe()
        elif written and not closing:
            self._periodic(store, owner)

    def _next_due(self) -> float:
        # Called with the lock held: when the writer has something to do unasked.
        if self._degraded or self._store is None:
            return self._next_probe
        due = min(self._next_renew, self._next_reclaim, self._next_prune)
        if self._marks:
            due = min(due, self._marks_since + MARK_DELAY)
        return min(due, time.monotonic() + FEED_INTERVAL) if self._feed else due

    def _periodic(self, store: Store, owner: Owner) -> None:
        now = time.monotonic()
        try:
            if now >= self._next_renew:
                self._next_renew = now + self._lease / 3
                with store.transaction():
                    store.renew(owner, time.time() + self._lease)
            if now >= self._next_reclaim or self._feed:
                self._reclaim(store, owner)
            if now >= self._next_prune:
                retention = self._config.journal_retention
                self._next_prune = now + min(max(retention / 2, 0.1), 3600.0)
                with store.transaction():
                    store.prune(time.time() - retention)
        except sqlite3.Error as error:
            self._degrade(error)

    def _reclaim(self, store: Store, owner: Owner) -> None:
        now = time.monotonic()
        room = self._host.journal_room()
        if room <= 0:
            self._next_reclaim = now + (FEED_INTERVAL if self._feed else RECLAIM_INTERVAL)
            return
        with store.transaction():
            revived = store.revive(lambda name: known_task(name) is not None)
            rows = store.reclaim(owner, room, time.time() + self._lease)
            waiting = store.next_due()
        self._feed = len(rows) >= room or revived > 0
        self._next_reclaim = now + min(self._lease / 3, RECLAIM_INTERVAL)
        self._reclaim_by(waiting)
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
            self._mark(call_id, Mark(final=FAILED, error=str(error)))
            return
        if not accepted:
            self._mark(call_id, Mark(final=PENDING))
        elif row["owner"] is not None:
            logger.info(
                "jumpqueue: %s [%s] recovered from %s", deferred.name, call_id, row["owner"]
            )

    def _connect(self) -> Store | None:
        try:
            store = Store.open(self.path, synchronous=self._config.journal_synchronous)
        except (sqlite3.Error, OSError, JournalError) as error:
            self._degrade(error)
            return None
        self._store = store
        self._next_reclaim = time.monotonic()
        if not self._announced:
            self._announced = True
            announce(self.path, self._config.journal_synchronous)
        return store

    def _probe(self) -> None:
        # A fresh connection each time: the file may have been replaced, remounted, fixed.
        if self._store is not None:
            self._store.close()
            self._store = None
        store = self._connect()
        try:
            if store is None:
                raise JournalError("it cannot be opened")  # noqa: TRY301 -- one back-off path
            with store.transaction():
                store.probe()
        except (sqlite3.Error, OSError, JournalError):
            self._probe_delay = min(self._probe_delay * 2, PROBE_MAX)
            self._next_probe = time.monotonic() + self._probe_delay
            return
        store.checkpoint()
        with self._changed:
            self._degraded = False
            self._changed.notify_all()
        self._recovered_log.warning(
            "jumpqueue: the journal %s takes writes again, after %.1f s; calls are journaled again",
            self.path,
            time.monotonic() - self._degraded_since,
        )

    def _finish(self) -> None:
        with self._lock:
            lost = len(self._marks)
        if lost:
            logger.warning(
                "jumpqueue: %d journal update(s) could not be written before shutdown; "
                "those calls may run again from the journal",
                lost,
            )
        if self._store is not None:
            self._store.close()
            self._store = None
