"""The SQLite the journal runs on: apsw's own when the `sqlite` extra is installed, else Python's.

Python's `sqlite3` links the SQLite the interpreter was built with, often a
release with the WAL-reset bug (fixed in 3.51.3); apsw ships a current one.
The journal uses either through one small surface: `connect()`, a
connection's `execute`, `executemany`, `in_transaction` and `close`, rows read
by name or by position, and the error classes below. Every connection of a
process to one file must come from one SQLite library: two copies in one
process drop each other's POSIX locks on it.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._exceptions import JournalError

if TYPE_CHECKING:
    from types import ModuleType

#: The extra that brings a current SQLite: `pip install jumpqueue[sqlite]`.
EXTRA = "sqlite"


class Row(Protocol):
    """A record read from the journal: by column name, by position, or unpacked."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """The rows of one statement, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection in autocommit mode: transactions are begun and ended by statements."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    def close(self) -> None: ...


def _load_apsw() -> ModuleType | None:
    try:  # by name: type checkers need not know the optional module
        return importlib.import_module("apsw")
    except ImportError:
        return None


_apsw = _load_apsw()

if _apsw is None:
    #: The library in use: "apsw" or "sqlite3".
    LIBRARY = "sqlite3"
    sqlite_version: str = sqlite3.sqlite_version
    #: Every error the library raises.
    Error: tuple[type[Exception], ...] = (sqlite3.Error,)
    #: Errors about the database file itself (damaged, not a database, ...), and more.
    DatabaseError: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
    #: A constraint refused a write (NOT NULL, UNIQUE, ...).
    IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
else:
    LIBRARY = "apsw"
    sqlite_version = _apsw.sqlite_lib_version()
    # Python's errors too: a test, or a bug, may raise them through the journal.
    Error = (sqlite3.Error, _apsw.Error)
    DatabaseError = (sqlite3.DatabaseError, _apsw.Error)
    IntegrityError = (sqlite3.IntegrityError, _apsw.ConstraintError)

#: What opening or writing a journal file may raise: the library's errors, the OS's,
#: and `JournalError` (a file that is not a journal).
FILE_ERRORS: tuple[type[Exception], ...] = (*Error, OSError, JournalError)
sqlite_version_info: tuple[int, ...] = tuple(int(part) for part in sqlite_version.split(".")[:3])


def connect(path: str, *, timeout: float) -> Connection:
    """A connection to the file at path (made if missing), waiting `timeout` s for locks."""
    if _apsw is None:
        connection = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        return connection
    return _ApswConnection(_apsw.Connection(path), timeout)


def errorname(error: BaseException) -> str | None:
    """SQLite's name of an error's code ("SQLITE_FULL"), if it is SQLite's error."""
    name = getattr(error, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return str(name)
    if _apsw is not None and isinstance(error, _apsw.Error):
        code = getattr(error, "extendedresult", None) or getattr(error, "result", None)
        if code is not None:
            found = _apsw.mapping_extended_result_codes.get(code)
            found = found or _apsw.mapping_result_codes.get(code & 0xFF)
            return str(found) if found else None
    return None


class _ApswRow:
    """A row of apsw's, read as `sqlite3.Row` reads: by name, by position, unpacked."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: tuple[Any, ...]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return tuple(self._values) == (other if isinstance(other, tuple) else None)

    def __hash__(self) -> int:
        return hash(self._values)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)


def _row(cursor: Any, values: tuple[Any, ...]) -> _ApswRow:
    names = {column[0]: index for index, column in enumerate(cursor.get_description())}
    return _ApswRow(names, values)


class _ApswCursor:
    """An apsw cursor as much of `sqlite3.Cursor` as the journal reads."""

    __slots__ = ("_cursor", "rowcount")

    def __init__(self, cursor: Any, rowcount: int) -> None:
        self._cursor = cursor
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


class _ApswConnection:
    """An apsw connection as much of `sqlite3.Connection` (autocommit) as the journal uses."""

    def __init__(self, connection: Any, timeout: float) -> None:
        connection.setbusytimeout(int(timeout * 1000))
        connection.row_trace = _row
        self._connection = connection

    @property
    def in_transaction(self) -> bool:
        return bool(self._connection.in_transaction)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        before = self._connection.total_changes()
        cursor = self._connection.execute(sql, tuple(parameters))
        return _ApswCursor(cursor, self._connection.total_changes() - before)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        before = self._connection.total_changes()
        cursor = self._connection.executemany(sql, [tuple(row) for row in parameters])
        return _ApswCursor(cursor, self._connection.total_changes() - before)

    def close(self) -> None:
        self._connection.close()
