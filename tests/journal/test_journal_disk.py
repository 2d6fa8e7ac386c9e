from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from jumpqueue import Deferred, Runtime
from jumpqueue._journal import Journal, engine
from jumpqueue._journal.file import SCHEMA_VERSION
from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Store
from jumpqueue.cli import main
from jumpqueue.integration import RequestScope

from .conftest import JournaledFactory
from .journal_helpers import (
    RECORDER,
    connect,
    known_record,
    records,
    remember,
    remember_after_gate,
    states,
)


def _journal(runtime: Runtime) -> Journal:
    journal = runtime._journaling.journal
    assert journal is not None
    return journal


def _mount_tmpfs(directory: Path, request: pytest.FixtureRequest, options: str) -> None:
    directory.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        problem = mounted.stderr.strip() or f"exit status {mounted.returncode}"
    except FileNotFoundError:
        mounted, problem = None, "no mount command"
    if mounted is None or mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here ({problem}); root and CAP_SYS_ADMIN are needed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(directory)], check=False))


def _fill(path: Path) -> None:
    # Write until the file system says it is full.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while os.write(descriptor, chunk):
            pass
    except OSError as error:
        full = error
    finally:
        os.close(descriptor)
    assert full.errno == errno.ENOSPC


def _defer_mixed(runtime: Runtime, values: range) -> list[Deferred[object]]:
    # Half outside requests, half ten to a request: each kind of commit meets the full disk.
    handles: list[Deferred[object]] = []
    for value in values:
        if value % 20 < 10:
            handles.append(runtime.defer(remember, value))
            continue
        if value % 10 == 0:
            scope = RequestScope()
        token = scope.activate()
        handles.append(runtime.defer(remember, value))
        scope.deactivate(token)
        if value % 10 == 9:
            scope.seal()
            scope.release(succeeded=True)
    return handles


@pytest.mark.timeout(60)
def test_journal_real_full_disk_fails_no_call_and_journaling_resumes_by_itself(
    make_journaled: JournaledFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, request, "size=4m,mode=0700")
    path = disk / "journal.db"
    runtime = make_journaled(journal=str(path), max_pending=100_000, max_workers=4)
    RECORDER.gate.clear()
    before = [runtime.defer(remember_after_gate, f"before-{n}") for n in range(20)]
    assert states(path) == {"claimed": 20}
    filler = disk / "filler"
    _fill(filler)
    handles: list[Deferred[object]] = []
    for start in range(0, 4000, 200):  # until the full disk shows, and a while after
        handles += _defer_mixed(runtime, range(start, start + 200))
        if runtime.stats().journal_fallbacks:
            handles += _defer_mixed(runtime, range(start + 200, start + 400))
            break
    stats = runtime.stats()
    assert stats.journal_fallbacks > 0
    RECORDER.gate.set()
    assert all(handle.exception(10) is None for handle in [*before, *handles])
    filler.unlink()
    journal = _journal(runtime)
    assert journal.wait_degraded(False, timeout=15)
    assert journal.flush()
    after = runtime.defer(remember, "after")
    assert after.id in records(path)
    assert after.result(5) == "after"
    assert runtime.stats().journal_fallbacks == stats.journal_fallbacks
    assert journal.flush()
    rows = records(path)
    assert {rows[handle.id]["state"] for handle in before} == {"done"}  # none lost
    with contextlib.closing(connect(path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_journal_full_by_max_page_count_falls_back_and_resumes(
    make_journaled: JournaledFactory, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumpqueue._journal import file as _journal_file

    limit = [16]
    real_connect = _journal_file._connect

    def limited(path: str) -> engine.Connection:
        connection = real_connect(path)
        connection.execute(f"PRAGMA max_page_count = {limit[0]}")
        return connection

    monkeypatch.setattr(_journal_file, "_connect", limited)
    runtime = make_journaled()
    handles = _defer_mixed(runtime, range(400))
    assert [handle.result(5) for handle in handles] == list(range(400))
    stats = runtime.stats()
    assert stats.journal_fallbacks > 0
    assert stats.succeeded == 400
    written = {handle.id for handle in handles} & set(records(journal_path))
    assert len(written) + stats.journal_fallbacks == 400
    limit[0] = 1_000_000
    journal = _journal(runtime)
    assert journal.wait_degraded(False, timeout=10)
    after = runtime.defer(remember, "after")
    assert after.id in records(journal_path)


def test_journal_in_a_read_only_directory_runs_calls_without_it(
    make_journaled: JournaledFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    read_only = tmp_path / "read-only"
    if os.geteuid() == 0:  # root writes through permission bits: a read-only file system
        _mount_tmpfs(read_only, request, "ro,size=1m")
    else:
        read_only.mkdir(mode=0o500)
        request.addfinalizer(lambda: read_only.chmod(0o700))
    runtime = make_journaled(journal=str(read_only / "journal.db"))
    assert runtime.defer(remember, 1).result(5) == 1
    scope = RequestScope()
    token = scope.activate()
    held = runtime.defer(remember, 2)
    scope.deactivate(token)
    scope.seal()
    scope.release(succeeded=True)
    assert held.result(5) == 2
    stats = runtime.stats()
    assert (stats.journal_fallbacks, stats.journal_degraded, stats.succeeded) == (2, True, 2)
    assert not (read_only / "journal.db").exists()


def test_journal_overload_fallback_applies_the_policy_while_the_journal_fails(
    make_journaled: JournaledFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a directory should be")
    runtime = make_journaled(
        journal=str(blocker / "journal.db"), on_journal_error="overload", on_overload="drop"
    )
    first = runtime.defer(remember, "discovers the failure")  # runs in memory
    assert first.result(5) == "discovers the failure"
    assert _journal(runtime).wait_degraded(True, timeout=5)
    dropped = runtime.defer(remember, "dropped")
    assert dropped.status.value == "shed"
    stats = runtime.stats()
    assert stats.shed == {"drop": 1}
    assert stats.journal_fallbacks == 1


def test_journal_files_are_private_whatever_the_umask(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    previous = os.umask(0)
    try:
        runtime = make_journaled()
        assert runtime.defer(remember, 1).result(5) == 1
    finally:
        os.umask(previous)
    for suffix in ("", "-wal", "-shm"):
        mode = stat.S_IMODE(os.stat(f"{journal_path}{suffix}").st_mode)
        assert mode == 0o600, (suffix, oct(mode))


def test_journal_existing_file_open_to_others_is_made_private(
    make_journaled: JournaledFactory, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal_path.touch()
    journal_path.chmod(0o666)
    runtime = make_journaled()
    assert runtime.defer(remember, 1).result(5) == 1
    assert stat.S_IMODE(journal_path.stat().st_mode) == 0o600
    assert "could be read by others" in caplog.text


def test_journal_path_that_is_a_symbolic_link_is_refused_and_calls_still_run(
    make_journaled: JournaledFactory, journal_path: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    journal_path.symlink_to(elsewhere)
    runtime = make_journaled()
    assert runtime.defer(remember, 1).result(5) == 1  # run without the journal
    assert runtime.stats().journal_fallbacks == 1
    assert not elsewhere.exists()


def test_journal_corrupt_file_is_moved_aside_and_a_fresh_one_started(
    make_journaled: JournaledFactory, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"certainly not a database " * 200
    journal_path.write_bytes(garbage)
    runtime = make_journaled()
    with caplog.at_level(logging.ERROR, logger="jumpqueue"):
        handle = runtime.defer(remember, 1)
    assert handle.result(5) == 1
    assert handle.id in records(journal_path)
    (aside,) = journal_path.parent.glob("journal.db.corrupt-*")
    assert aside.read_bytes() == garbage
    assert "moved it aside" in caplog.text


def test_journal_damaged_page_is_found_and_the_file_moved_aside(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    first = make_journaled()
    for value in range(200):
        first.defer(remember, "x" * 200 + str(value))
    first.shutdown()
    data = bytearray(journal_path.read_bytes())
    assert len(data) > 4 * 4096
    data[3 * 4096 : 3 * 4096 + 512] = os.urandom(512)
    journal_path.write_bytes(bytes(data))
    second = make_journaled()
    assert second.defer(remember, "fresh").result(5) == "fresh"
    assert len(list(journal_path.parent.glob("journal.db.corrupt-*"))) == 1
    assert states(journal_path) == {"done": 1} or states(journal_path) == {"claimed": 1}


def test_journal_foreign_sqlite_file_is_moved_aside(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    with contextlib.closing(sqlite3.connect(journal_path)) as foreign:
        foreign.execute("CREATE TABLE users (name TEXT)")
        foreign.commit()
    runtime = make_journaled()
    assert runtime.defer(remember, 1).result(5) == 1
    (aside,) = journal_path.parent.glob("journal.db.foreign-*")
    with contextlib.closing(sqlite3.connect(aside)) as moved:
        assert moved.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_journal_of_a_newer_jumpqueue_is_left_alone(
    make_journaled: JournaledFactory, journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_journaled()
    assert first.defer(remember, 1).result(5) == 1
    first.shutdown()
    with contextlib.closing(connect(journal_path)) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    second = make_journaled()
    assert second.defer(remember, 2).result(5) == 2  # without the journal
    assert second.stats().journal_fallbacks == 1
    assert not list(journal_path.parent.glob("journal.db.*-*"))
    assert main(["status", "--journal", str(journal_path)]) == 3
    assert f"schema version {SCHEMA_VERSION + 1}" in capsys.readouterr().err


def test_journal_file_deleted_while_open_is_noticed_and_opened_again(
    make_journaled: JournaledFactory, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_journaled()
    assert runtime.defer(remember, "before").result(5) == "before"
    journal_path.unlink()  # as `rm jumpqueue.db` does, leaving its -wal and -shm behind
    handle = runtime.defer(remember, "after")
    assert handle.id in records(journal_path)  # in the file at the path, not a deleted one
    assert "was deleted or replaced while open" in caplog.text
    assert handle.result(5) == "after"
    assert _journal(runtime).flush()
    assert records(journal_path)[handle.id]["state"] == "done"


def test_journal_file_replaced_while_open_is_noticed_and_what_it_holds_runs(
    make_journaled: JournaledFactory,
    journal_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = make_journaled()
    assert runtime.open_journal()
    restored = tmp_path / "restored.db"
    store = Store.open(str(restored))
    with store.transaction():
        store.insert([known_record("restored", "restored")], PENDING, None, None)
    store.close()
    os.replace(restored, journal_path)  # a backup put back while the service runs
    assert runtime.defer(remember, "now").result(5) == "now"
    assert RECORDER.wait_for(2)
    assert sorted(RECORDER.values) == ["now", "restored"]
    assert "was deleted or replaced while open" in caplog.text
    assert _journal(runtime).flush()
    assert states(journal_path) == {"done": 2}
