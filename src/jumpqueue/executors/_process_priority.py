"""Where a process executor's child stands in the CPU scheduler: below the server, by default."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._choices import ProcessPriority

logger = logging.getLogger("jumpqueue")

#: Attempts to set the autogroup's niceness, 100 ms apart (the kernel's rate limit).
AUTOGROUP_TRIES = 5

#: The niceness each priority sets ("idle" also asks for SCHED_IDLE where there is one).
NICENESS: dict[ProcessPriority, int] = {"idle": 19, "low": 10, "normal": 0}


def lower_priority(priority: ProcessPriority) -> None:
    """Lower this process's CPU priority as `priority` says; what cannot be done is skipped.

    `SCHED_IDLE` (Linux) gives a CPU-bound call only the time no process of
    normal priority wants, whatever their niceness; elsewhere, and should it
    be refused, the niceness stands in. The niceness never drops below this
    process's own: a child never gets more than the server that started it.
    Call it once the process is in its own session (see `_lower_autogroup`).
    """
    if priority == "normal":
        return
    niceness = NICENESS[priority]
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            niceness = max(os.getpriority(os.PRIO_PROCESS, 0), niceness)
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    if priority == "idle" and has_idle_class():
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _lower_autogroup(niceness)


def _lower_autogroup(niceness: int) -> None:
    """Give this process's autogroup (Linux) the niceness: it weighs against the server's.

    With autogroups on (most desktop and container kernels), each session is
    scheduled as one group, with the group's niceness, against the others;
    a child in a session of its own would get a full share beside the server
    whatever its own priority. The kernel lets a process without
    CAP_SYS_ADMIN change an autogroup's niceness once per 100 ms: children
    starting together try again.
    """
    path = "/proc/self/autogroup"
    if not os.path.exists(path):
        return
    for _ in range(AUTOGROUP_TRIES):
        if _write_autogroup(path, niceness):
            return
        time.sleep(0.1)


def _write_autogroup(path: str, niceness: int) -> bool:
    # False if the kernel's rate limit refused it (EAGAIN): worth another try.
    try:
        with open(path, "w") as autogroup:
            autogroup.write(str(niceness))
    except BlockingIOError:
        return False
    except OSError:
        pass  # not ours to change: the process's own niceness stands
    return True


def has_idle_class() -> bool:
    """True where the scheduler has `SCHED_IDLE` (Linux)."""
    return hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")


_said: set[str] = set()


def say_shortfall(priority: ProcessPriority) -> None:
    """Log once, at debug, what this platform cannot do of `priority`."""
    if priority == "normal" or (priority == "idle" and has_idle_class()):
        return
    if not hasattr(os, "setpriority"):
        what = "this platform has no niceness: children run as the server does"
    elif priority == "idle":
        what = "this platform has no SCHED_IDLE: children run at nice 19"
    else:
        return
    if what not in _said:
        _said.add(what)
        logger.debug("jumpqueue: process_priority=%r: %s", priority, what)
