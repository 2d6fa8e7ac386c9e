"""A full disk, and a file system gone read-only, in the middle of a load (real mounts; root only).

Threads keep deferring calls, in requests and outside them, while the
journal's disk fills up (tmpfs) or its file system turns read-only under it
(ext4 on a loop device, aborted as the kernel does after an I/O error). No
defer() fails or waits long, every call runs once, the journal falls back to
memory and, once the disk is fixed, resumes by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jumpqueue import Config, Deferred, JumpQueueError, Runtime, Status
from jumpqueue._journal import Journal
from jumpqueue.integration import RequestScope

from . import chaos_tasks
from .test_chaos_api import PROMPT
from .watch import no_thread_dies, tracebacks_logged


class Load:
    """Threads that defer calls until stopped: half in requests of five calls, half outside."""

    def __init__(self, runtime: Runtime, threads: int = 3) -> None:
        self._runtime = runtime
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self.handles: list[Deferred[Any]] = []
        self.errors: list[BaseException] = []
        self.slowest = 0.0
        self._threads = [
            threading.Thread(target=self._run, args=(number,), daemon=True)
            for number in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` calls more than now have been deferred."""
        with self._lock:
            target = len(self.handles) + count
            assert self._lock.wait_for(
                lambda: len(self.handles) >= target or bool(self.errors), timeout
            ), f"the load stalled at {len(self.handles)} calls"
        assert not self.errors, self.errors

    def _run(self, number: int) -> None:
        for sequence in range(10**9):
            if self._stop.is_set():
                return
            tokens = [f"t{number}-{sequence}-{index}" for index in range(5)]
            try:
                if sequence % 2:
                    handles = [self._defer(token) for token in tokens]
                else:
                    handles = self._request(tokens)
            except JumpQueueError as error:
                with self._lock:
                    self.errors.append(error)
                    self._lock.notify_all()
                return
            with self._lock:
                self.handles += handles
                self._lock.notify_all()

    def _defer(self, token: str) -> Deferred[Any]:
        started = time.monotonic()
        handle = self._runtime.defer(chaos_tasks.succeed, token)
        self.slowest = max(self.slowest, time.monotonic() - started)
        return handle

    def _request(self, tokens: list[str]) -> list[Deferred[Any]]:
        scope = RequestScope()
        context = scope.activate()
        try:
            handles = [self._defer(token) for token in tokens]
        finally:
            scope.deactivate(context)
        started = time.monotonic()
        scope.seal()  # the group commit before the last byte
        self.slowest = max(self.slowest, time.monotonic() - started)
        scope.release(succeeded=True)
        return handles


def _root_mount(arguments: list[str]) -> None:
    try:
        done = subprocess.run(["mount", *arguments], capture_output=True, text=True, check=False)
        problem = done.stderr.strip() or f"exit status {done.returncode}"
    except FileNotFoundError:
        done, problem = None, "no mount command"
    if done is None or done.returncode != 0:
        reason = f"cannot mount here ({problem}); root and CAP_SYS_ADMIN are needed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def _mounted(arguments: list[str], directory: Path) -> Iterator[None]:
    _root_mount([*arguments, str(directory)])
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _journal(runtime: Runtime) -> Journal:
    journal = runtime._journaling.journal  # the journal's own waits: no public signal for them
    assert journal is not None
    return journal


def _fill(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    full: OSError | None = None
    try:
        while os.write(descriptor, b"\0" * 65536):
            pass
    except OSError as error:
        full = error
    finally:
        os.close(descriptor)
    assert full is not None
    assert full.errno == errno.ENOSPC, full


def _check_every_call(runtime: Runtime, load: Load, journal: Path) -> None:
    # Every call ran once and succeeded; what the journal holds is done; its file is sound.
    assert not load.errors, load.errors
    assert load.slowest < PROMPT, f"a defer() or seal waited {load.slowest:.2f} s"
    assert all(handle.wait(10) for handle in load.handles)
    assert {handle.status for handle in load.handles} == {Status.SUCCEEDED}
    assert all(count == 1 for count in chaos_tasks.RUNS.values())
    assert _journal(runtime).flush()
    runtime.shutdown(timeout=10)
    stats = runtime.stats()
    assert stats.submitted == stats.finished == len(load.handles), stats
    with contextlib.closing(sqlite3.connect(journal)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        states = dict(connection.execute("SELECT state, count(*) FROM calls GROUP BY state"))
    assert set(states) == {"done"}, states
    assert states["done"] + stats.journal_fallbacks == len(load.handles), (states, stats)


@pytest.mark.timeout(60)
def test_chaos_disk_full_mid_load_fails_no_call_and_the_journal_resumes(tmp_path: Path) -> None:
    chaos_tasks.reset()
    disk = tmp_path / "disk"
    disk.mkdir()
    with _mounted(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"], disk):
        path = disk / "journal.db"
        runtime = Runtime(Config(journal=str(path), max_pending=100_000, max_workers=4))
        with no_thread_dies(), tracebacks_logged() as crashes, Load(runtime) as load:
            load.wait_for(300)
            _fill(disk / "filler")
            assert _journal(runtime).wait_degraded(True, timeout=20)
            load.wait_for(300)  # served from memory meanwhile
            (disk / "filler").unlink()
            assert _journal(runtime).wait_degraded(False, timeout=20)
            fallbacks = runtime.stats().journal_fallbacks
            load.wait_for(300)
        assert fallbacks > 0
        assert crashes == [], crashes
        _check_every_call(runtime, load, path)


def _released(image: Path, timeout: float) -> bool:
    # The loop device goes away with the last user of the file system (an unmount is lazy
    # while files are open); another process's state, so polled.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attached = subprocess.run(
            ["losetup", "-j", str(image)], check=False, capture_output=True, text=True
        )
        if not attached.stdout.strip():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(60)
def test_chaos_file_system_gone_read_only_mid_load_fails_no_call_and_resumes_once_fixed(
    tmp_path: Path,
) -> None:
    if not all(shutil.which(tool) for tool in ("mkfs.ext4", "e2fsck", "losetup")):
        pytest.skip("no mkfs.ext4, e2fsck or losetup here")
    chaos_tasks.reset()
    image, outer = tmp_path / "disk.img", tmp_path / "outer"
    with image.open("wb") as file:
        file.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    outer.mkdir()
    # The mount point sits on a read-only file system: while the disk is away, nothing can
    # make a fresh journal in its place.
    with _mounted(["-t", "tmpfs", "-o", "size=1m", "tmpfs"], outer):
        disk = outer / "disk"
        disk.mkdir()
        _root_mount(["-o", "remount,ro", str(outer)])
        mount = ["-t", "ext4", "-o", "loop,errors=remount-ro", str(image)]
        with _mounted(mount, disk):
            path = disk / "journal.db"
            runtime = Runtime(Config(journal=str(path), max_pending=100_000, max_workers=4))
            with no_thread_dies(), tracebacks_logged() as crashes, Load(runtime) as load:
                load.wait_for(300)
                # What the kernel does after an I/O error: the file system turns read-only.
                _root_mount(["-o", "remount,abort", str(disk)])
                assert _journal(runtime).wait_degraded(True, timeout=20)
                load.wait_for(300)  # served from memory meanwhile
                # The operator's fix: unmount, check, mount again; the journal finds it.
                subprocess.run(["umount", "-l", str(disk)], check=True)
                assert _released(image, timeout=20), "the journal kept the broken disk open"
                subprocess.run(["e2fsck", "-fy", str(image)], check=False, capture_output=True)
                _root_mount([*mount, str(disk)])
                assert _journal(runtime).wait_degraded(False, timeout=20)
                load.wait_for(300)
            assert runtime.stats().journal_fallbacks > 0
            assert crashes == [], crashes
            _check_every_call(runtime, load, path)
