"""The `sqlite` extra: apsw, and the current SQLite it ships, used by itself when installed."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from jumpqueue._journal import engine
from jumpqueue._journal.file import WAL_RESET_FIXED

from .conftest import JournaledFactory
from .journal_helpers import connect, remember


def test_journal_runs_on_apsw_when_the_extra_is_installed(
    make_journaled: JournaledFactory, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apsw = pytest.importorskip("apsw", reason="the `sqlite` extra (apsw) is not installed")
    caplog.set_level(logging.INFO, logger="jumpqueue")
    assert (engine.LIBRARY, engine.sqlite_version) == ("apsw", apsw.sqlite_lib_version())
    assert engine.sqlite_version_info >= WAL_RESET_FIXED
    runtime = make_journaled()
    assert runtime.defer(remember, 1).result(5) == 1
    assert f"(SQLite {engine.sqlite_version} through apsw," in caplog.text
    assert "WAL-reset" not in caplog.text


def test_journal_rows_and_errors_read_the_same_through_either_library(
    journal_path: Path,
) -> None:
    with contextlib.closing(connect(journal_path)) as connection:
        connection.execute("CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL, payload BLOB)")
        connection.execute("BEGIN IMMEDIATE")
        assert connection.in_transaction
        connection.executemany("INSERT INTO t VALUES (?, ?)", [("a", b"\x00"), ("b", None)])
        connection.execute("COMMIT")
        row = connection.execute("SELECT id, payload FROM t WHERE id = ?", ("a",)).fetchone()
        assert (row["id"], row[1], tuple(row), len(row)) == ("a", b"\x00", ("a", b"\x00"), 2)
        assert dict(connection.execute("SELECT id, payload FROM t")) == {"a": b"\x00", "b": None}
        assert connection.execute("DELETE FROM t").rowcount == 2
        assert connection.execute("SELECT 1 WHERE 0").fetchone() is None
        with pytest.raises(engine.IntegrityError) as refused:
            connection.execute("INSERT INTO t VALUES (NULL, NULL)")
        assert engine.errorname(refused.value) in ("SQLITE_CONSTRAINT_NOTNULL", None)
        with pytest.raises(engine.Error):
            connection.execute("SELECT * FROM no_such_table")
