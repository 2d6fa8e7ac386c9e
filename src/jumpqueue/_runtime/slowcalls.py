"""The slow-call log (PHP-FPM's slowlog): an attempt running past its threshold, and where."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..executors._base import Attempt

logger = logging.getLogger("jumpqueue")

#: Innermost frames of a slow call's stack that the log line shows.
STACK_LIMIT = 30


def log_slow(attempt: Attempt, started: float, threshold: float) -> None:
    """Log, once, that the attempt has run past the threshold, with its stack where it can."""
    if attempt.worker is None:  # it returned as the timer fired
        return
    deferred = attempt.deferred
    logger.warning(
        "jumpqueue: slow call: %s [%s] attempt %d has run for %.3f s (slow_call_threshold=%s), %s",
        deferred.name,
        deferred.id,
        attempt.number,
        time.monotonic() - started,
        threshold,
        where(attempt.worker),
    )


def where(worker: object) -> str:
    """What the worker running a call is doing now: a thread's stack, a coroutine's."""
    if isinstance(worker, threading.Thread):
        # The thread may move on meanwhile: the frames read are those of this instant.
        frame = sys._current_frames().get(worker.ident or 0)
        if frame is None:
            return f"in thread {worker.name} (it has just ended)"
        stack = traceback.format_stack(frame)[-STACK_LIMIT:]
        return f"in thread {worker.name}:\n" + "".join(stack).rstrip()
    if isinstance(worker, asyncio.Task):
        return "in its coroutine:\n" + "".join(_awaited(worker.get_coro())).rstrip()
    pid = getattr(worker, "pid", None)
    return f"in child process {pid}" if pid is not None else f"in {worker!r}"


def _awaited(coroutine: Any) -> list[str]:
    # The chain of coroutines (and generators) the task's coroutine awaits, outermost first:
    # asyncio's own Task.get_stack() shows the outermost frame only.
    frames = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return traceback.format_list(traceback.StackSummary.extract(frames[-STACK_LIMIT:]))
