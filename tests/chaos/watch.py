"""What the chaos tests watch besides results: threads that die, tracebacks logged, memory."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def no_thread_dies() -> Iterator[None]:
    """Fail, inside the test (so that hypothesis can shrink it), if a thread dies meanwhile.

    pytest reports a thread's death only after the test; a property needs it
    while the example still runs.
    """
    deaths: list[str] = []
    previous = threading.excepthook

    def record(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        deaths.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = record
    try:
        yield
    finally:
        threading.excepthook = previous
    assert not deaths, f"a thread died: {deaths}"


class TracebackCatcher(logging.Handler):
    """Catches what the `jumpqueue` logger logs with a traceback (a crash, not a verdict)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.crashes.append(record.getMessage())


@contextlib.contextmanager
def tracebacks_logged() -> Iterator[list[str]]:
    """The messages `jumpqueue` logs with a traceback while the block runs."""
    catcher = TracebackCatcher()
    logger = logging.getLogger("jumpqueue")
    logger.addHandler(catcher)
    try:
        yield catcher.crashes
    finally:
        logger.removeHandler(catcher)


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
