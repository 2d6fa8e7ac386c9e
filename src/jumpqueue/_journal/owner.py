"""Who owns a journal record: a process named so that others can tell whether it still lives.

An owner is `pid@node#start`: the process id, the node it runs on (host name,
boot and pid namespace, so that a container or a reboot is another node), and
the process's start time (so that a reused pid is not taken for the owner).
On its own node an owner is alive while that process is; elsewhere only its
lease tells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import socket

#: Process ids are below this everywhere (Linux's is 2**22).
_PID_LIMIT = 2**31
_PID_DIGITS = len(str(_PID_LIMIT)) + 1


@dataclasses.dataclass(frozen=True)
class Owner:
    """A process that may own journal records."""

    pid: int
    node: str
    start: str

    def __str__(self) -> str:
        return f"{self.pid}@{self.node}#{self.start}"

    @classmethod
    def parse(cls, text: object) -> Owner | None:
        """The owner written as `str(owner)`, or None if text is not one (or not text)."""
        if not isinstance(text, str):
            return None
        pid, _, rest = text.partition("@")
        node, _, start = rest.rpartition("#")
        # A pid another tool wrote may be anything: 0 names a process group, and one
        # past the platform's range makes os.kill() overflow.
        if not (pid.isascii() and pid.isdigit() and len(pid) < _PID_DIGITS) or not node:
            return None
        number = int(pid)
        return cls(number, node, start) if 0 < number < _PID_LIMIT else None

    @property
    def host(self) -> str:
        """The host name part of the node, for people."""
        return self.node.split("/", 1)[0]


def current_owner() -> Owner:
    """This process, as an owner (computed anew after a fork: the pid changes)."""
    pid = os.getpid()
    return Owner(pid, this_node(), start_time(pid))


@functools.lru_cache(maxsize=1)
def this_node() -> str:
    """This host, boot and pid namespace: processes on one node can see each other's pids."""
    parts = []
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as boot:
        parts.append(boot.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    return f"{socket.gethostname()}/{digest}"


def start_time(pid: int) -> str:
    """When the process started, in clock ticks since boot ("" where /proc cannot tell)."""
    return _stat(pid)[1]


def _stat(pid: int) -> tuple[str, str]:
    # The state letter and start time of a process, from stat(5); ("", "") if unknown.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return "", ""
    # The split starts at field 3 (state), after "(comm)"; field 22 is starttime.
    if len(fields) < 20:  # noqa: PLR2004
        return "", ""
    return fields[0].decode(), fields[19].decode()


def is_alive(owner: Owner) -> bool | None:
    """True or False for an owner on this node; None when only its lease can tell."""
    if owner.node != this_node():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user
    except OSError:
        return False
    state, start = _stat(owner.pid)
    if state in ("Z", "X"):  # a zombie has finished; nobody has reaped it yet
        return False
    return not owner.start or not start or start == owner.start
