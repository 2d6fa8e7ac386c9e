"""The journal's records, and every statement run on them (no SQL outside this module).

One `Store` wraps one connection (opened by `file`), used by one
thread. Every write runs in a short `BEGIN IMMEDIATE` transaction with
parameters.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from . import engine
from .engine import Connection, Row
from .file import abandon, close, identify, open_file, replaced
from .owner import Owner, is_alive
from .schema import (
    COUNTERS,
    DONE,
    FINISHED,
    MALFORMED,
    SHAPE,
    SKIPPED,
    STATES,
    TAMPERED,
    UNKNOWN,
    describe,
    malformed,
)

logger = logging.getLogger("jumpqueue")


class Outcome(NamedTuple):
    """What `Store.finish` sets on one record."""

    state: str
    error: str | None
    attempts: int  # started since the last write
    not_before: float | None
    handoff_fallbacks: int  # failed since the last write
    id: str
    attempted: float | None = None  # the last attempt's start, if one started since
    workers: str | None = None  # who ran each attempt (JSON), with `attempted`
    status: str | None = None  # the call's final `Status`
    result: str | None = None  # its return value (JSON), if its task keeps it
    failures: str | None = None  # how each attempt failed (JSON)


_COLUMNS = ", ".join(SHAPE)
# A record as jumpqueue writes it, as an SQL condition (SHAPE, with counters never
# negative, and an owner for every record that is claimed or held).
_WELL_FORMED = " AND ".join(
    [
        *(
            f"typeof({column}) IN ({', '.join(repr(kind) for kind in kinds)})"
            for column, kinds in SHAPE.items()
        ),
        *(f"{column} >= 0" for column in COUNTERS),
        f"state IN ({', '.join(repr(state) for state in STATES)})",
        "(owner IS NOT NULL OR state NOT IN ('claimed', 'held'))",
    ]
)


class Record:
    """A call as the journal stores it; `written` once it is on disk.

    `handoff_fallbacks` counts the times its backend could not take it and it
    went back to the journal, to be taken up again no sooner than `not_before`
    (a time.time() value; None for at once).
    """

    __slots__ = (
        "handoff_fallbacks",
        "id",
        "keep_result",
        "max_recoveries",
        "name",
        "not_before",
        "options",
        "payload",
        "priority",
        "run_after",
        "serializer",
        "written",
    )

    def __init__(  # noqa: PLR0917 -- built on the defer() hot path
        self,
        call_id: str,
        name: str,
        serializer: str,
        payload: bytes,
        options: str,
        max_recoveries: int,
    ) -> None:
        self.id = call_id
        self.name = name
        self.serializer = serializer
        self.payload = payload
        self.options = options
        self.max_recoveries = max_recoveries
        self.written = False
        self.not_before: float | None = None
        self.handoff_fallbacks = 0
        #: Copied from the call's options: its start order, and whether its outcome is kept.
        self.priority = 0
        self.run_after: float | None = None
        self.keep_result = False

    def signed(self, key: bytes) -> bytes:
        """The HMAC that proves the record was written by a holder of the journal's key."""
        return _sign(key, (self.id, self.name, self.serializer, self.payload, self.options))


def _sign(key: bytes, fields: tuple[str, str, str, bytes, str]) -> bytes:
    call_id, name, serializer, payload, options = fields
    parts = (call_id.encode(), name.encode(), serializer.encode(), payload, options.encode())
    message = b"".join(len(part).to_bytes(8, "big") + part for part in parts)
    return hmac.digest(key, message, "sha256")


class Store:
    """One connection to a journal file, and the statements the journal runs on it."""

    def __init__(self, connection: Connection, key: bytes, path: str) -> None:
        self.connection = connection
        self.key = key
        self.path = path
        self._identity = identify(path)

    @classmethod
    def open(cls, path: str, *, synchronous: str = "FULL", create: bool = True) -> Store:
        """Open the journal at path (see `open_file`).

        Raises:
            JournalError: no journal, not a journal, or one of a newer jumpqueue.
            engine.Error, OSError: the file cannot be opened or written.
        """
        connection, key = open_file(path, synchronous=synchronous, create=create)
        return cls(connection, key, path)

    def close(self) -> None:
        """Close the connection (in the process that opened it)."""
        close(self.connection)

    def replaced(self) -> bool:
        """True if the file at the path is no longer the one open (deleted, or replaced)."""
        return replaced(self.path, self._identity)

    def abandon(self) -> None:
        """Let go of a file that is no longer at the path (see `file.abandon`).

        What its WAL holds is copied into it first, for whoever moved it away.
        """
        self.checkpoint()
        abandon(self.connection, self.path, self._identity)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A short write transaction; rolled back if anything in it fails."""
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:  # SQLITE_FULL at COMMIT has rolled back already
                with contextlib.suppress(*engine.Error):
                    connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except engine.Error:
            if connection.in_transaction:
                with contextlib.suppress(*engine.Error):
                    connection.execute("ROLLBACK")
            raise

    # -- writes of the runtime, each inside a transaction ------------------------------------

    def insert(
        self, records: Sequence[Record], state: str, owner: Owner | None, lease_until: float | None
    ) -> None:
        """Add records in one state, owned (with a lease) or not."""
        now = time.time()
        who = None if owner is None else str(owner)
        self.connection.executemany(
            f"INSERT OR IGNORE INTO calls ({_COLUMNS}) "  # noqa: S608 -- fixed column list
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, NULL, NULL, ?, ?, ?, "
            "?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            [
                (
                    *(r.id, r.name, r.serializer, r.payload, r.options, state, who, lease_until),
                    *(r.max_recoveries, now, now, r.signed(self.key)),
                    *(r.not_before, r.handoff_fallbacks),
                    *(r.priority, r.run_after, int(r.keep_result)),
                )
                for r in records
            ],
        )

    def add_attempts(
        self, counts: Iterable[tuple[int, float | None, str | None, str]], owner: Owner
    ) -> None:
        """Count attempts started, by (number, last start, workers JSON, id), on this owner's."""
        self.connection.executemany(
            "UPDATE calls SET attempts = attempts + ?1, started = coalesce(started, ?2), "
            "attempted = coalesce(?2, attempted), workers = coalesce(?3, workers), updated = ?4 "
            "WHERE id = ?5 AND owner = ?6",
            [
                (number, attempted, workers, time.time(), call_id, str(owner))
                for number, attempted, workers, call_id in counts
            ],
        )

    def finish(self, outcomes: Iterable[Outcome], owner: Owner) -> None:
        """Set the final state (or pending, to release), error and attempts started since.

        By (state, error, attempts, not_before, handoff_fallbacks, id), on records
        this owner holds; the last two say when a released record may be taken
        up again (None: at once) and how many hand-offs of it failed since.
        """
        now, who = time.time(), str(owner)
        self.connection.executemany(
            "UPDATE calls SET state = ?1, error = ?2, attempts = attempts + ?3, "
            "not_before = ?4, handoff_fallbacks = handoff_fallbacks + ?5, "
            "lease_until = NULL, updated = ?6, "
            "owner = CASE WHEN ?1 = 'pending' THEN NULL ELSE owner END, "
            "started = coalesce(started, ?9), attempted = coalesce(?9, attempted), "
            "workers = coalesce(?10, workers), status = ?11, result = ?12, "
            "errors = coalesce(?13, errors), "
            "finished = CASE WHEN ?1 IN ('pending', 'held') THEN NULL ELSE ?6 END "
            "WHERE id = ?7 AND owner = ?8 AND state IN ('claimed', 'held')",
            [
                (
                    *(o.state, o.error, o.attempts, o.not_before, o.handoff_fallbacks, now),
                    *(o.id, who, o.attempted, o.workers, o.status, o.result, o.failures),
                )
                for o in outcomes
            ],
        )

    def quarantine(self, items: Iterable[tuple[str, str, str]], owner: Owner) -> None:
        """Set records aside, by (reason, error, id): they are kept, and never run."""
        self.connection.executemany(
            "UPDATE calls SET state = 'quarantined', reason = ?, error = ?, owner = NULL, "
            "lease_until = NULL, updated = ? WHERE id = ? AND owner = ?",
            [(reason, error, time.time(), call_id, str(owner)) for reason, error, call_id in items],
        )

    def renew(self, owner: Owner, lease_until: float) -> None:
        """Extend the lease of every record this owner holds."""
        self.connection.execute(
            "UPDATE calls SET lease_until = ? WHERE owner = ? AND state IN ('claimed', 'held')",
            (lease_until, str(owner)),
        )

    def reclaim(
        self,
        owner: Owner,
        room: int,
        lease_until: float,
        alive: Callable[[Owner], bool | None] = is_alive,
    ) -> tuple[list[Row], list[tuple[str, str]]]:
        """Claim up to `room` runnable records, oldest first; those taken, and those set aside.

        Runnable: pending ones past their `not_before`, and claimed or held ones
        whose owner is dead (on this node) or whose lease has expired (on
        another). A record taken from a dead owner more than its
        `max_recoveries` times is failed instead; one that jumpqueue did not
        write as it is (`malformed`) is quarantined, and returned as (its id,
        the problem).
        """
        connection, now, me = self.connection, time.time(), str(owner)
        where, parameters = self._runnable(owner, alive)
        rows = connection.execute(
            f"SELECT rowid, {_COLUMNS} FROM calls WHERE {where} "  # noqa: S608 -- built here
            # Higher priorities first, then by when each became due, then as written.
            "ORDER BY priority DESC, coalesce(run_after, created), rowid LIMIT ?",
            (*parameters, room),
        )
        taken, set_aside = [], []
        for row in rows.fetchall():
            problem = malformed(row)
            if problem is not None:
                set_aside.append(self._set_aside(row, problem, now))
                continue
            orphaned = row["owner"] is not None
            if orphaned and row["recoveries"] >= row["max_recoveries"]:
                connection.execute(
                    "UPDATE calls SET state = 'failed', error = ?, lease_until = NULL, updated = ? "
                    "WHERE rowid = ?",
                    (_EXHAUSTED.format(row["recoveries"] + 1, row["owner"]), now, row["rowid"]),
                )
                continue
            connection.execute(
                "UPDATE calls SET state = 'claimed', owner = ?, lease_until = ?, updated = ?, "
                "recoveries = recoveries + ? WHERE rowid = ?",
                (me, lease_until, now, int(orphaned), row["rowid"]),
            )
            taken.append(row)
        return taken, set_aside

    def set_aside_malformed(self) -> list[tuple[str, str]]:
        """Quarantine every unfinished record that jumpqueue did not write as it is.

        Such a record may never even look runnable (a `not_before` that is
        text, a state nobody writes), and would wait for ever. Returns (its
        id, the problem) of each.
        """
        now, finished = time.time(), ", ".join(repr(state) for state in FINISHED)
        rows = self.connection.execute(
            f"SELECT rowid, {_COLUMNS} FROM calls "  # noqa: S608 -- fixed conditions
            f"WHERE state NOT IN ({finished}) AND NOT ({_WELL_FORMED})"
        ).fetchall()
        return [
            self._set_aside(row, problem, now)
            for row in rows
            if (problem := malformed(row)) is not None
        ]

    def _set_aside(self, row: Row, problem: str, now: float) -> tuple[str, str]:
        # Quarantined by rowid: its id may be anything, NULL included.
        error = f"it was changed outside jumpqueue ({problem})"
        self.connection.execute(
            "UPDATE calls SET state = 'quarantined', reason = ?, error = ?, owner = NULL, "
            "lease_until = NULL, updated = ? WHERE rowid = ?",
            (TAMPERED, error, now, row["rowid"]),
        )
        call_id = row["id"]
        return call_id if isinstance(call_id, str) else describe(call_id), error

    def _runnable(
        self,
        owner: Owner | None,
        alive: Callable[[Owner], bool | None] = is_alive,
        *,
        waiting: bool = False,
    ) -> tuple[str, list[object]]:
        # The condition (and its parameters) of records that may be taken up now:
        # pending ones past their `not_before` (with `waiting`, those before it too),
        # and claimed or held ones whose owner is dead (on this node) or whose lease
        # has expired (on another); never `owner`'s own.
        me = "" if owner is None else str(owner)
        conditions, parameters = ["state = 'pending'"], list[object]()
        if not waiting:
            conditions[0] = "(state = 'pending' AND (not_before IS NULL OR not_before <= ?))"
            parameters.append(time.time())
        dead, foreign = [], []
        for (text,) in self.connection.execute(_OWNERS_SQL, (me,)):
            other = Owner.parse(text)
            verdict = False if other is None else alive(other)
            if verdict is None:
                foreign.append(text)
            elif not verdict:
                dead.append(text)
        if dead:
            marks = ", ".join("?" * len(dead))
            conditions.append(f"(state IN ('claimed', 'held') AND owner IN ({marks}))")
            parameters += dead
        if foreign:
            marks = ", ".join("?" * len(foreign))
            conditions.append(
                f"(state IN ('claimed', 'held') AND owner IN ({marks}) AND lease_until < ?)"
            )
            parameters += [*foreign, time.time()]
        return " OR ".join(conditions), parameters

    def next_due(self) -> float | None:
        """When the first pending record still waiting for its `not_before` is due, if any."""
        due = self.connection.execute(
            "SELECT min(not_before) FROM calls WHERE state = 'pending' AND not_before > ? "
            "AND typeof(not_before) IN ('real', 'integer')",
            (time.time(),),
        ).fetchone()[0]
        return None if due is None else float(due)

    def revive(self, known: Callable[[str], bool]) -> int:
        """Make quarantined records of functions now known pending again; how many."""
        connection, revived = self.connection, 0
        names = connection.execute(
            "SELECT DISTINCT name FROM calls WHERE state = 'quarantined' AND reason = ?", (UNKNOWN,)
        ).fetchall()
        for (name,) in names:
            if known(name):
                revived += connection.execute(
                    "UPDATE calls SET state = 'pending', reason = NULL, error = NULL, "
                    "updated = ? WHERE state = 'quarantined' AND reason = ? AND name = ?",
                    (time.time(), UNKNOWN, name),
                ).rowcount
        return revived

    def prune(self, older_than: float, states: Sequence[str] = (DONE, SKIPPED)) -> int:
        """Delete records in these states last changed before `older_than`; how many."""
        marks = ", ".join("?" * len(states))
        return self.connection.execute(
            f"DELETE FROM calls WHERE state IN ({marks}) AND updated < ?",  # noqa: S608
            (*states, older_than),
        ).rowcount

    def probe(self) -> None:
        """A tiny write: does the journal take writes again?"""
        self.connection.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?)", (os.urandom(16),)
        )

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after a full disk)."""
        with contextlib.suppress(*engine.Error):
            self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def verify(self, row: Row) -> bool:
        """True if a record is as its writer signed it."""
        return hmac.compare_digest(_sign(self.key, _signed_fields(row)), bytes(row["checksum"]))

    # -- what an operator reads and does (the command line) ------------------------------

    def counts(self) -> dict[str, int]:
        """How many records are in each state (every state, those with none too).

        Records in a state jumpqueue never writes are counted as "malformed".
        """
        counts = dict.fromkeys(STATES, 0)
        rows = self.connection.execute("SELECT state, count(*) FROM calls GROUP BY state")
        for state, count in rows:
            known = isinstance(state, str) and state in counts
            key = state if known else MALFORMED
            counts[key] = counts.get(key, 0) + int(count)
        return counts

    def oldest_waiting(self) -> float | None:
        """When the oldest record not yet finished was written, if there is one."""
        oldest = self.connection.execute(
            "SELECT min(created) FROM calls WHERE state IN ('pending', 'claimed', 'held') "
            "AND typeof(created) IN ('real', 'integer')"
        ).fetchone()[0]
        return None if oldest is None else float(oldest)

    def backing_off(self) -> tuple[int, float | None]:
        """Pending records waiting for their `not_before`: how many, and when the first is due."""
        count, due = self.connection.execute(
            "SELECT count(*), min(not_before) FROM calls WHERE state = 'pending' "
            "AND not_before > ? AND typeof(not_before) IN ('real', 'integer')",
            (time.time(),),
        ).fetchone()
        return int(count), None if due is None else float(due)

    def holders(self) -> list[tuple[str | None, int]]:
        """The owners of claimed and held records, with how many each holds."""
        return [
            (owner, int(count))
            for owner, count in self.connection.execute(
                "SELECT owner, count(*) FROM calls WHERE state IN ('claimed', 'held') "
                "GROUP BY owner"
            )
        ]

    def latest(self, state: str, limit: int) -> list[Row]:
        """The records of one state changed last, newest first (without their payloads)."""
        return self.connection.execute(
            "SELECT id, name, attempts, updated, error FROM calls WHERE state = ? "
            "ORDER BY updated DESC LIMIT ?",
            (state, limit),
        ).fetchall()

    def count_runnable(self, *, waiting: bool = False) -> int:
        """How many records a process could take up now (with `waiting`, or once due)."""
        where, parameters = self._runnable(None, waiting=waiting)
        return int(
            self.connection.execute(
                f"SELECT count(*) FROM calls WHERE {where}",  # noqa: S608 -- built just above
                parameters,
            ).fetchone()[0]
        )

    def count_held(self) -> int:
        """How many records processes hold (claimed or held)."""
        return int(
            self.connection.execute(
                "SELECT count(*) FROM calls WHERE state IN ('claimed', 'held')"
            ).fetchone()[0]
        )

    def record(self, call_id: str) -> Row | None:
        """The record with this id, if there is one."""
        found = self._select("id = ?", (call_id,))
        return found[0] if found else None

    def in_state(self, state: str) -> list[Row]:
        """The records in one state, oldest first."""
        return self._select("state = ?", (state,))

    def reset(self, call_id: str) -> None:
        """Make a record pending again as if new: no owner, attempts, error or back-off."""
        self.connection.execute(
            "UPDATE calls SET state = 'pending', owner = NULL, lease_until = NULL, "
            "attempts = 0, recoveries = 0, error = NULL, reason = NULL, not_before = NULL, "
            "handoff_fallbacks = 0, updated = ? "
            "WHERE id = ?",
            (time.time(), call_id),
        )

    def reseal(self, call_id: str) -> None:
        """Sign a record again as it is now (an operator vouches for it)."""
        for row in self._select("id = ?", (call_id,)):
            if malformed(row) is not None:
                continue  # nothing to vouch for: it cannot be read as a call
            self.connection.execute(
                "UPDATE calls SET checksum = ? WHERE id = ?",
                (_sign(self.key, _signed_fields(row)), call_id),
            )

    def _select(self, where: str, parameters: Sequence[Any]) -> list[Row]:
        # Whole records matching one of this module's fixed conditions.
        return self.connection.execute(
            f"SELECT {_COLUMNS} FROM calls WHERE {where} ORDER BY created",  # noqa: S608
            parameters,
        ).fetchall()


def _signed_fields(row: Row) -> tuple[str, str, str, bytes, str]:
    return (row["id"], row["name"], row["serializer"], bytes(row["payload"]), row["options"])


_OWNERS_SQL = (
    "SELECT DISTINCT owner FROM calls WHERE state IN ('claimed', 'held') "
    "AND owner IS NOT NULL AND owner != ?"
)
_EXHAUSTED = "its owner died {} times while it ran or waited (last: {}); not run again"


def read_once(path: str, call_id: str) -> Row | None:
    """The record with this id, read through a connection made for it; None if unreadable."""
    try:
        store = Store.open(path, create=False)
    except engine.FILE_ERRORS:  # missing, not a journal, unreadable
        return None
    try:
        return store.record(call_id)
    except engine.FILE_ERRORS:
        return None
    finally:
        store.close()
