"""Signal handlers that call jumpqueue: a lock the interrupted code may hold is never waited for.

A Python signal handler runs in the main thread, between two bytecodes of
whatever the main thread was doing, which may be jumpqueue's own code holding
one of its locks (`threading.Lock`, not reentrant): a `defer()` in the handler
that waited for that lock would wait for ever. So each lock on the way of
`defer()` is first taken without waiting, which costs what `with lock:` costs;
only when that fails is `take()` asked. In the main thread, with the handler
on top of jumpqueue's code, it does not wait: the caller hands the rest of its
step to a thread of its own (`hand_over()`), which waits for the lock instead
once the handler has returned. Anywhere else, `take()` waits as `with` would.
"""

from __future__ import annotations

import _thread
import contextvars
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("jumpqueue")

#: jumpqueue's modules that hold none of the locks `defer()` takes: the web layer and glue.
_LOCK_FREE_MODULES = (
    "jumpqueue.asgi",
    "jumpqueue.wsgi",
    "jumpqueue.integration",
    "jumpqueue.testing",
    "jumpqueue.pytest_plugin",
    "jumpqueue.cli",
    "jumpqueue.demo",
    "jumpqueue.contrib",
    "jumpqueue._web",
)

_steps: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.SimpleQueue()
_serving = False


def take(lock: threading.Lock) -> bool:
    """Take `lock`, which a try without waiting did not get; False if waiting might never end.

    That is in the main thread when a signal handler (or a finalizer) calls
    jumpqueue on top of jumpqueue's own code, which may hold the lock: the
    caller then leaves the lock alone and hands its step over (`hand_over()`).
    """
    if reentered():
        return False
    lock.acquire()
    return True


def reentered() -> bool:
    """True in the main thread when a signal handler (or finalizer) calls on top of jumpqueue.

    For a step whose locks are not taken here (the journal's commit): it is
    then handed over whole.
    """
    return threading.get_ident() == threading.main_thread().ident and _on_top_of_jumpqueue(
        sys._getframe(1)
    )


def hand_over(step: Callable[..., object], *args: Any) -> None:
    """Run `step(*args)` soon on the hand-over thread, where waiting for a lock is safe.

    (Arguments rather than a closure: a lambda in the caller would make its
    variables cells, which costs the caller's every call, not just this one.)

    Nothing here takes a lock the interrupted code could hold: the queue is a
    `SimpleQueue` (reentrant), and the thread is started by `_thread`, which
    takes none of `threading`'s locks.
    """
    global _serving  # noqa: PLW0603 -- one hand-over thread per process
    _steps.put((step, args))
    if not _serving:
        _serving = True
        # With a context of its own: nothing of the interrupted request stays reachable.
        _thread.start_new_thread(contextvars.Context().run, (_serve,))


def _serve() -> None:
    while True:
        step, args = _steps.get()
        try:
            step(*args)
        except Exception:  # one failing step must not stop the ones after it
            logger.exception("jumpqueue: a step handed over from a signal handler failed")
        del step, args  # nothing of the last step stays reachable while this thread waits


def _on_top_of_jumpqueue(frame: FrameType | None) -> bool:
    # Leave the call in progress (jumpqueue's frames up to its caller), then look past
    # the caller (a handler, what it calls, what it interrupted) for jumpqueue's code.
    while frame is not None and _module(frame).startswith("jumpqueue."):
        frame = frame.f_back
    while frame is not None:
        module = _module(frame)
        if module.startswith("jumpqueue."):
            return not module.startswith(_LOCK_FREE_MODULES)
        frame = frame.f_back
    return False


def _module(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__")
    return name if isinstance(name, str) else ""


def _after_fork_in_child() -> None:
    # The hand-over thread did not survive the fork; steps queued in the parent are its own.
    global _steps, _serving  # noqa: PLW0603 -- state of the one hand-over thread
    _steps = queue.SimpleQueue()
    _serving = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
