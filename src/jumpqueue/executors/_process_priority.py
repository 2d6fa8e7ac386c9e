"""Where a process executor's child stands in the CPU scheduler: below the server, by default."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._choices import ProcessPriority

logger = logging.getLogger("jumpqueue")

#: The niceness each priority asks for where the scheduler has no idle class.
NICENESS: dict[ProcessPriority, int] = {"idle": 19, "low": 10, "normal": 0}


def lower_priority(priority: ProcessPriority) -> None:
    """Lower this process's CPU priority as `priority` says; what cannot be done is skipped.

    `SCHED_IDLE` (Linux) gives a CPU-bound call only the time no process of
    normal priority wants, whatever their niceness; elsewhere, and should it
    be refused, the niceness stands in. The niceness never drops below this
    process's own: a child never gets more than the server that started it.
    """
    if priority == "normal":
        return
    if priority == "idle" and has_idle_class():
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
        else:
            return
    if hasattr(os, "setpriority"):
        try:
            current = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(current, NICENESS[priority]))
        except OSError:
            pass


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
