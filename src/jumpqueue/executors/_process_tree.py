"""The processes below a child process (Linux, through /proc): found, measured and signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import NamedTuple

__all__ = [
    "Member",
    "TreeScanner",
    "become_subreaper",
    "descendants",
    "kill_group",
    "kill_tree",
    "reap_adopted",
    "signal_members",
    "trees",
]

#: Rounds `kill_tree` makes at most: each kills what the last round's survivors started.
KILL_ROUNDS = 20
#: Without /proc/<pid>/task/<tid>/children, finding a tree reads all of /proc: at most this
#: share of the time goes to it, and at least this long passes between two reads.
SCAN_SHARE, SCAN_INTERVAL = 0.01, 1.0
_PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_DEAD = ("Z", "X")


class Member(NamedTuple):
    """One process: a pid that the system hands out again later names another process."""

    pid: int
    start: int


class _Stat(NamedTuple):
    state: str
    ppid: int
    start: int
    rss: int


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except OSError:  # gone, or going while we read
        return None
    # The command name, in parentheses, may hold spaces and parentheses of its own.
    fields = text.rsplit(b")", 1)[-1].split()
    try:
        return _Stat(fields[0].decode(), int(fields[1]), int(fields[19]), int(fields[21]) * _PAGE)
    except (IndexError, ValueError):
        return None


def _has_children_files() -> bool:
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


_CHILDREN_FILES = sys.platform == "linux" and _has_children_files()


def _children(pid: int) -> list[int]:
    """The children of pid, from the `children` file of each of its threads."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        with (
            contextlib.suppress(OSError, ValueError),
            open(f"/proc/{pid}/task/{thread}/children", "rb") as file,
        ):
            found.extend(map(int, file.read().split()))
    return found


def _parents() -> dict[int, list[int]]:
    """Every process's children, read from all of /proc."""
    below: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return below
    for name in names:
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            below.setdefault(stat.ppid, []).append(int(name))
    return below


def _walk(pid: int, parents: dict[int, list[int]] | None) -> list[tuple[Member, _Stat]]:
    found: list[tuple[Member, _Stat]] = []
    seen = {pid}
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = _children(parent) if parents is None else parents.get(parent, [])
        for kid in kids:
            if kid in seen or (stat := _stat(kid)) is None or stat.state in _DEAD:
                continue
            if stat.ppid != parent:
                continue  # ended, and its pid taken by another process, since it was listed
            seen.add(kid)
            found.append((Member(kid, stat.start), stat))
            todo.append(kid)
    return found


def descendants(pid: int) -> list[Member]:
    """Every live process below pid: its children, theirs, and so on; [] without /proc."""
    return trees([pid])[pid]


def trees(pids: list[int]) -> dict[int, list[Member]]:
    """The descendants of each of pids, found in one pass over /proc where that is needed."""
    if sys.platform != "linux":
        return {pid: [] for pid in pids}
    parents = None if _CHILDREN_FILES else _parents()
    return {pid: [member for member, _ in _walk(pid, parents)] for pid in pids}


class TreeScanner:
    """Measures the resident memory of a process and everything below it, repeatedly.

    Where the kernel lists each thread's children, every measure walks the tree
    afresh. Elsewhere finding the tree reads all of /proc, so the tree found is
    kept for a while (`SCAN_SHARE`, `SCAN_INTERVAL`), and only measured afresh.
    """

    def __init__(self) -> None:
        self._parents: dict[int, list[int]] = {}
        self._next_scan = 0.0

    def resident_bytes(self, pid: int) -> int | None:
        """The resident memory of pid and its descendants, summed; None once pid is gone."""
        root = _stat(pid)
        if root is None or root.state in _DEAD:
            return None
        if _CHILDREN_FILES:
            tree = _walk(pid, None)
        else:
            self._rescan()
            tree = _walk(pid, self._parents)
        return root.rss + sum(stat.rss for _, stat in tree)

    def _rescan(self) -> None:
        now = time.monotonic()
        if now < self._next_scan:
            return
        self._parents = _parents()
        spent = time.monotonic() - now
        self._next_scan = now + max(SCAN_INTERVAL, spent / SCAN_SHARE)


def _alive_as(member: Member) -> bool:
    stat = _stat(member.pid)
    return stat is not None and stat.start == member.start and stat.state not in _DEAD


def signal_members(members: list[Member], sig: signal.Signals) -> None:
    """Send sig to each member that is still the process it was."""
    for member in members:
        if _alive_as(member):
            with contextlib.suppress(OSError):
                os.kill(member.pid, sig)


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Send sig to the process group that pid leads, and to pid itself."""
    if pid <= 0:
        return
    if hasattr(os, "killpg"):
        with contextlib.suppress(OSError):
            os.killpg(pid, sig)
    with contextlib.suppress(OSError):
        os.kill(pid, sig)  # not yet a group leader, or no process groups here


def kill_tree(pid: int, sig: signal.Signals) -> None:
    """Send sig to every process below pid, then to pid's process group and pid.

    The processes below go first: pid, a subreaper (`become_subreaper`), keeps
    their orphans below it until it dies itself. A process that leads a session
    of its own is reached too, where /proc lists it; elsewhere the group alone.
    """
    if pid <= 0:
        return
    if sig == signal.SIGKILL and pid != os.getpid() and hasattr(signal, "SIGSTOP"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGSTOP)  # a stopped process starts no more while we look
    signalled: set[Member] = set()
    for _ in range(KILL_ROUNDS if sig == signal.SIGKILL else 1):
        fresh = [member for member in descendants(pid) if member not in signalled]
        if not fresh:
            break
        signal_members(fresh, sig)
        signalled.update(fresh)
    kill_group(pid, sig)


def become_subreaper() -> bool:
    """Make this process the reaper of orphans below it (Linux), so that they stay in its tree."""
    if sys.platform != "linux":
        return False
    try:
        import ctypes  # noqa: PLC0415 -- in a child process, on Linux only

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False


def reap_adopted(limit: int = 1000) -> None:
    """Collect every child that has ended: orphans a subreaper took in never are otherwise.

    Only ended children are touched, never a running one.
    """
    for _ in range(limit):
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except (ChildProcessError, OSError):
            return
        if pid == 0:
            return
