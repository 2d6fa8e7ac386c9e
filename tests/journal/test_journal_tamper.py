"""Journal records edited outside jumpqueue: every column, every SQLite storage class."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import pytest

from jumpqueue import Config, Runtime
from jumpqueue._journal import engine
from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Store
from jumpqueue.cli import main

from .journal_helpers import RECORDER, connect, eventually, known_record, remember

#: Every column of a record, and the storage classes jumpqueue writes in it.
COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("text",),
    "name": ("text",),
    "serializer": ("text",),
    "payload": ("blob",),
    "options": ("text",),
    "state": ("text",),
    "owner": ("text", "null"),
    "lease_until": ("real", "null"),
    "attempts": ("integer",),
    "recoveries": ("integer",),
    "max_recoveries": ("integer",),
    "created": ("real",),
    "updated": ("real",),
    "error": ("text", "null"),
    "reason": ("text", "null"),
    "checksum": ("blob",),
    "not_before": ("real", "null"),
    "handoff_fallbacks": ("integer",),
}
#: A value of each SQLite storage class, and the extremes of each.
VALUES: dict[str, object] = {
    "null": None,
    "integer": 7,
    "largest integer": 2**63 - 1,
    "smallest integer": -(2**63),
    "real": 1.5,
    "infinity": float("inf"),
    "text": "hostile",
    "empty text": "",
    "blob": b"\x00\xff",
    "huge text": "x" * 2_000_000,
    "huge blob": b"\x00" * 2_000_000,
}


def _seed(path: Path) -> None:
    # Two pending records and a failed one, signed with the journal's key.
    store = Store.open(str(path))
    try:
        with store.transaction() as connection:
            records = [known_record(name, name) for name in ("good", "tampered", "tampered-failed")]
            store.insert(records, PENDING, None, None)
            connection.execute(
                "UPDATE calls SET state = 'failed', error = 'boom' WHERE id = 'tampered-failed'"
            )
    finally:
        store.close()


def _tamper(path: Path, column: str, value: object) -> bool:
    # What `sqlite3 jq.db "UPDATE calls SET column = value"` does; False if SQLite refuses it.
    with contextlib.closing(connect(path)) as connection:
        try:
            connection.execute(
                f"UPDATE calls SET {column} = ? WHERE id LIKE 'tampered%'",  # noqa: S608
                (value,),
            )
        except engine.IntegrityError:  # NOT NULL: that value cannot be stored there
            return False
    return True


def _row(path: Path, rowid: int) -> engine.Row:
    with contextlib.closing(connect(path)) as connection:
        row: engine.Row | None = connection.execute(
            "SELECT state, typeof(state) AS kind, reason FROM calls WHERE rowid = ?", (rowid,)
        ).fetchone()
    assert row is not None
    return row


def _fits(column: str, path: Path, rowid: int) -> bool:
    # Whether the value, as SQLite stored it (after the column's affinity), is of a
    # storage class jumpqueue writes there (no state jumpqueue writes is among VALUES).
    with contextlib.closing(connect(path)) as connection:
        kind = connection.execute(
            f"SELECT typeof({column}) FROM calls WHERE rowid = ?",  # noqa: S608
            (rowid,),
        ).fetchone()[0]
    return column != "state" and kind in COLUMNS[column]


def _open_and_check(path: Path, rowid: int, *, fits: bool) -> None:
    # The app opens the journal at once, runs the good record and new calls, and
    # quarantines the tampered one unless what it holds is of the right kind.
    runtime = Runtime(Config(journal=str(path)))
    try:
        started = time.monotonic()
        assert runtime.open_journal(timeout=10)
        assert time.monotonic() - started < 2
        # The good record ran; a tampered one that still fits may run first (created = 1.5).
        assert eventually(lambda: "good" in RECORDER.values, 5), RECORDER.values
        assert runtime.defer(remember, "after").result(5) == "after"
        assert not runtime.stats().journal_degraded
        assert eventually(lambda: runtime.stats().in_flight == 0, 5)
        row = _row(path, rowid)
        if not fits:
            assert (row["state"], row["reason"]) == ("quarantined", "tampered")
            assert "tampered" not in RECORDER.values
    finally:
        runtime.shutdown(timeout=5)


@pytest.mark.parametrize("column", list(COLUMNS))
def test_journal_any_value_in_any_column_is_quarantined_and_crashes_nothing(
    column: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="jumpqueue")
    for label, value in VALUES.items():
        RECORDER.reset()
        caplog.clear()
        path = tmp_path / f"{column}-{label.replace(' ', '-')}.db"
        _seed(path)
        with contextlib.closing(connect(path)) as connection:
            (rowid,) = connection.execute(
                "SELECT rowid FROM calls WHERE id = 'tampered'"
            ).fetchone()
        if not _tamper(path, column, value):
            continue
        # The command line reads what it finds, whatever it finds, before the app opens it.
        assert main(["status", "--journal", str(path)]) == 0, label
        try:
            _open_and_check(path, rowid, fits=_fits(column, path, rowid))
        except AssertionError as failure:
            raise AssertionError(f"{column} = {label}") from failure
        assert main(["status", "--journal", str(path)]) == 0, label
        crashes = [record for record in caplog.records if record.exc_info]
        assert not crashes, (label, crashes[0].getMessage())
        capsys.readouterr()
