"""The journal's SQLite file: made private, checked, migrated, repaired; never shared by a fork.

Connections are made per process and never cross a `fork()`: a child drops
what it inherited without closing it (closing could checkpoint or unlock the
parent's file). A damaged or foreign file is moved aside, never overwritten.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time

from .._exceptions import JournalError
from . import engine
from .engine import Connection

logger = logging.getLogger("jumpqueue")

#: SQLite releases before this one have the WAL-reset bug (fixed 2026-03-13).
WAL_RESET_FIXED = (3, 51, 3)
_warned_about_sqlite = False

#: PRAGMA application_id of a jumpqueue journal ("JQJL").
APPLICATION_ID = 0x4A514A4C
SCHEMA_VERSION = 2
#: Seconds a write waits for another process's transaction before it fails.
BUSY_TIMEOUT = 2.0

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version 0 (an empty file) -> 1
    0: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        """CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            serializer TEXT NOT NULL,
            payload BLOB NOT NULL,
            options TEXT NOT NULL,
            state TEXT NOT NULL,
            owner TEXT,
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            recoveries INTEGER NOT NULL DEFAULT 0,
            max_recoveries INTEGER NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            error TEXT,
            reason TEXT,
            checksum BLOB NOT NULL,
            not_before REAL,
            handoff_fallbacks INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX calls_by_state ON calls (state, created)",
    ),
    # 1 -> 2: priorities, times to start after, and outcomes readable by id.
    1: (
        "ALTER TABLE calls ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE calls ADD COLUMN run_after REAL",
        "ALTER TABLE calls ADD COLUMN keep_result INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE calls ADD COLUMN status TEXT",
        "ALTER TABLE calls ADD COLUMN result TEXT",
        "ALTER TABLE calls ADD COLUMN errors TEXT",
        "ALTER TABLE calls ADD COLUMN started REAL",
        "ALTER TABLE calls ADD COLUMN attempted REAL",
        "ALTER TABLE calls ADD COLUMN finished REAL",
        "ALTER TABLE calls ADD COLUMN workers TEXT",
    ),
}
# Connections open in this process, by id, so that none is closed by the garbage
# collector of a forked child; `_inherited` keeps a child's copies alive forever,
# and those to a file deleted or replaced while open (see `abandon`).
_connections: dict[int, Connection] = {}
_inherited: list[Connection] = []
#: What a journal file is, by the suffix of each of its files ("", "-wal", "-shm"):
#: (device, inode).
Identity = dict[str, tuple[int, int]]
_COMPANIONS = ("-wal", "-shm")


def _drop_inherited() -> None:
    _inherited.extend(_connections.values())
    _connections.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited)


def describe(error: BaseException) -> str:
    """The SQLite error name and message of an error (or the OS error), for a log line."""
    name = engine.errorname(error)
    return f"{name}: {error}" if name else f"{type(error).__name__}: {error}"


def is_corrupt(error: BaseException) -> bool:
    """True if SQLite says the file is damaged or not a database at all."""
    name = engine.errorname(error)
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


def announce(path: str, synchronous: str) -> None:
    """Log that a journal is open; warn once per process about an SQLite with known bugs."""
    global _warned_about_sqlite  # noqa: PLW0603 -- once per process
    logger.info(
        "jumpqueue: journal %s open (SQLite %s through %s, synchronous=%s)",
        path,
        engine.sqlite_version,
        engine.LIBRARY,
        synchronous,
    )
    if engine.sqlite_version_info < WAL_RESET_FIXED and not _warned_about_sqlite:
        _warned_about_sqlite = True
        logger.warning(
            "jumpqueue: this Python uses SQLite %s; releases before 3.51.3 (2026-03-13) "
            "have the WAL-reset bug, which can, rarely, corrupt a WAL database that "
            "several connections write or checkpoint at once, as the server's processes "
            "do with the journal (https://sqlite.org/wal.html#walresetbug). Install "
            "jumpqueue[%s] (apsw, which ships a current SQLite): the journal uses it "
            "by itself",
            engine.sqlite_version,
            engine.EXTRA,
        )


def open_file(path: str, *, synchronous: str, create: bool) -> tuple[Connection, bytes]:
    """A connection to the journal at path, and the journal's signing key.

    With `create`, the file is made (0600) if missing, and a corrupt or
    foreign file is moved aside (renamed with a timestamp) for a fresh one;
    without it, these raise.

    Raises:
        JournalError: no journal there (without `create`), not a journal
            (without `create`), or a journal of a newer jumpqueue.
        engine.Error, OSError: the file cannot be opened or written.
    """
    for _ in range(3):  # a moved-aside file is replaced once; more means something odd
        if create:
            _create_private(path)
        elif not os.path.exists(path):
            raise JournalError(f"no journal at {path}")
        connection = _connect(path)
        try:
            key = _prepare(connection, path, synchronous=synchronous, create=create)
        except engine.DatabaseError as error:
            _close(connection)
            if not is_corrupt(error):
                raise
            if not create:
                raise JournalError(f"{path} is not a jumpqueue journal ({error})") from None
            _move_aside(path, "corrupt", describe(error))
            continue
        except _Foreign as foreign:
            _close(connection)
            if not create:
                raise JournalError(f"{path} is not a jumpqueue journal ({foreign})") from None
            _move_aside(path, "foreign", str(foreign))
            continue
        except BaseException:
            _close(connection)
            raise
        return connection, key
    raise JournalError(f"{path} keeps turning out damaged; giving up")


def close(connection: Connection) -> None:
    """Close a connection this process opened."""
    _close(connection)


def identify(path: str) -> Identity:
    """The device and inode of the journal file and of its companions, those that exist."""
    identity = {}
    for suffix in ("", *_COMPANIONS):
        found = _identity(path + suffix)
        if found is not None:
            identity[suffix] = found
    return identity


def replaced(path: str, identity: Identity) -> bool:
    """True if the file at path is no longer the one identified (deleted, or replaced)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:  # cannot tell (a directory made unreadable): assume it is still there
        return False
    return (info.st_dev, info.st_ino) != identity.get("")


def abandon(connection: Connection, path: str, identity: Identity) -> None:
    """Let go of a connection to a file that is no longer at path.

    The connection is never closed: closing the last connection of a WAL file
    deletes, by name, the -wal and -shm files at the path, which may be a new
    file's now. The companions still at the path that are the old file's are
    removed instead, lest a new file at the path be read with the old one's WAL.
    """
    _connections.pop(id(connection), None)
    _inherited.append(connection)
    for suffix in _COMPANIONS:
        known = identity.get(suffix)
        if known is not None and _identity(path + suffix) == known:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _Foreign(Exception):  # noqa: N818 -- private signal, never raised to users
    """A valid SQLite file that is not a jumpqueue journal."""


def _create_private(path: str) -> None:
    # Created by us, before SQLite, with mode 0600: SQLite then gives its -wal and
    # -shm files the mode of the database file. A file that exists already is made
    # private too; one that is a symbolic link, or someone else's, is refused.
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _make_private(path, create=True)
    for companion in (path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            _make_private(companion, create=False)


def _make_private(path: str, *, create: bool) -> None:
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    try:
        info = os.fstat(descriptor)
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise PermissionError(f"{path} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077 and hasattr(os, "fchmod"):
            os.fchmod(descriptor, 0o600)
            logger.warning(
                "jumpqueue: %s could be read by others (mode %o); it is 0600 now",
                path,
                info.st_mode & 0o777,
            )
    finally:
        os.close(descriptor)


def _connect(path: str) -> Connection:
    connection = engine.connect(path, timeout=BUSY_TIMEOUT)
    _connections[id(connection)] = connection
    return connection


def _close(connection: Connection) -> None:
    _connections.pop(id(connection), None)
    with contextlib.suppress(*engine.Error):
        connection.close()


def _prepare(connection: Connection, path: str, *, synchronous: str, create: bool) -> bytes:
    # Check what the file is, bring its schema up to date, set the pragmas; its key.
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    objects = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if application_id != APPLICATION_ID and (objects or application_id):
        raise _Foreign(f"application_id {application_id:#x}, {objects} schema objects")
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"{path} has journal schema version {version}; this jumpqueue knows "
            f"up to {SCHEMA_VERSION}: upgrade jumpqueue, or point it at another file"
        )
    if objects:
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        if not create:
            raise JournalError(f"{path} is not in WAL mode")
        connection.execute("PRAGMA journal_mode = WAL")
    if version < SCHEMA_VERSION:
        if not create:
            raise JournalError(f"{path} needs a schema upgrade; open it from the application first")
        _migrate(connection)
    # journal_size_limit and a short autocheckpoint keep the WAL small on a small disk.
    for pragma in ("journal_size_limit = 1048576", "wal_autocheckpoint = 100"):
        connection.execute(f"PRAGMA {pragma}")
    connection.execute(f"PRAGMA synchronous = {'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    row = connection.execute("SELECT value FROM meta WHERE key = 'key'").fetchone()
    if row is None:
        raise _Foreign("no journal key in its meta table")
    return bytes(row[0])


def _migrate(connection: Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Read again inside the transaction: another process may have migrated meanwhile.
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                connection.execute(statement)
            if version == 0:
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('key', ?)", (os.urandom(32),)
                )
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            version += 1
            connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(*engine.Error):
            connection.execute("ROLLBACK")
        raise


def _move_aside(path: str, why: str, detail: str) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = f"{path}.{why}-{stamp}"
    number = 1
    while os.path.exists(target):
        number += 1
        target = f"{path}.{why}-{stamp}-{number}"
    os.replace(path, target)
    for suffix in ("-wal", "-shm", "-journal"):
        # A WAL left beside a damaged file must not be replayed into the fresh one.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, target + suffix)
    logger.error(
        "jumpqueue: the journal file %s is %s (%s); moved it aside to %s and started a fresh one",
        path,
        "damaged" if why == "corrupt" else "not a jumpqueue journal",
        detail,
        target,
    )
