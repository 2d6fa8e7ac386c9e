"""Snapshot files: what each server worker process last said about itself, in a shared directory.

Each worker writes `worker-<pid>.json` (a temporary file renamed over it, so a
reader never sees half of one). The counters of a worker that is gone are
folded into `exited.json` before its file is removed, so the sums a reader
makes never go down.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ._metrics import add

#: The format of a snapshot; a reader skips files of another one.
VERSION = 1
PREFIX = "worker-"
SUFFIX = ".json"
EXITED = "exited.json"
_LOCK = "exited.lock"


def prepare(directory: str) -> None:
    """Make the directory (private to this user) if it does not exist yet."""
    os.makedirs(directory, mode=0o700, exist_ok=True)


def path_for(directory: str, pid: int) -> str:
    """Where the worker with that pid writes its snapshot."""
    return os.path.join(directory, f"{PREFIX}{pid}{SUFFIX}")


def write(path: str, snapshot: dict[str, Any]) -> None:
    """Replace the file at path with the snapshot, atomically.

    Raises:
        OSError: the directory cannot be written.
    """
    # Per process and thread: two writers in one process must not share a temporary file.
    temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(snapshot, file, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read(path: str) -> dict[str, Any] | None:
    """The snapshot in a file, or None if it is gone, unreadable or of another format."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    return data


def workers(directory: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each worker's file in the directory with its snapshot (unreadable ones left out)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            path = os.path.join(directory, name)
            snapshot = read(path)
            if snapshot is not None:
                yield path, snapshot


def exited(directory: str) -> dict[str, Any]:
    """The counters of workers that are gone, summed ({} if none yet)."""
    snapshot = read(os.path.join(directory, EXITED))
    counters = snapshot.get("counters") if snapshot is not None else None
    return counters if isinstance(counters, dict) else {}


def fold(directory: str, path: str, snapshot: dict[str, Any]) -> bool:
    """Add a gone worker's counters to `exited.json` and remove its file; False if another did.

    Claiming the file by renaming it lets only one of the workers that found
    it fold it; the lock keeps their writes of `exited.json` apart.
    """
    claimed = f"{path}.{os.getpid()}.folding"
    try:
        os.rename(path, claimed)
    except OSError:
        return False
    try:
        with _locked(directory):
            counters = exited(directory)
            add(counters, snapshot.get("counters") or {})
            write(os.path.join(directory, EXITED), {"version": VERSION, "counters": counters})
    finally:
        with contextlib.suppress(OSError):
            os.unlink(claimed)
    return True


def sweep(directory: str, older_than: float) -> None:
    """Remove files a process left as it died writing or folding, last changed before then.

    A claimed file whose fold was cut short may or may not be in `exited.json`:
    it goes, rather than be counted twice.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.endswith((".tmp", ".folding")):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    descriptor = os.open(os.path.join(directory, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":  # elsewhere the claim by rename alone keeps folds apart
            import fcntl  # noqa: PLC0415 -- POSIX only

            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
