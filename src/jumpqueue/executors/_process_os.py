"""The process executor's dealings with the system: children, signals, memory, the fork server."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import os
import select
import selectors
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from . import _process_child
from ._process_child import alive, serve
from ._process_tree import TreeScanner, kill_group, kill_tree, signal_members, trees

__all__ = [
    "Child",
    "ChildTraceback",
    "TreeScanner",
    "Watcher",
    "alive",
    "describe_exit",
    "emit_log",
    "forget_inherited_forkserver",
    "kill_group",
    "kill_tree",
    "open_pidfd",
    "start_child",
    "stop_children",
    "watch_memory",
]

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from .._choices import ProcessPriority
    from ._base import Attempt

logger = logging.getLogger("jumpqueue")


class Child:
    """The parent's view of one child: its process, its pipe, and the attempt it runs."""

    __slots__ = (
        "attempt",
        "conn",
        "idle_since",
        "killed",
        "pid",
        "pidfd",
        "process",
        "ready",
        "reason",
        "served",
        "started",
    )

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid: int = process.pid or 0
        #: True once the child has said it is ready: a child that dies before is a failed start.
        self.ready = False
        self.attempt: Attempt | None = None
        self.served = 0
        self.started = self.idle_since = time.monotonic()
        #: Killed by the parent (timeout, memory): its call was settled, or gets `reason`.
        self.killed = False
        self.reason: BaseException | None = None
        #: Set once its fork server died: the child is watched through this descriptor instead.
        self.pidfd: int | None = None

    def __repr__(self) -> str:
        return f"<Child {self.pid} served={self.served}>"

    def join(self, timeout: float) -> None:
        """Wait at most timeout seconds for the child to end."""
        if self.pidfd is None:
            self.process.join(timeout)
        else:
            with contextlib.suppress(OSError, ValueError):
                select.select([self.pidfd], [], [], timeout)

    def ended(self) -> bool:
        """True once the child has exited (its pid may then name another process)."""
        if self.pidfd is None:
            return self.process.exitcode is not None
        try:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """Release what the parent holds for the child, once it has ended."""
        self.conn.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None
        with contextlib.suppress(ValueError):
            self.process.close()


def open_pidfd(pid: int) -> int | None:
    """A descriptor readable once process pid has ended (Linux), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def start_child(
    context: Any, *, memory_limit: int | None, log_level: int, priority: ProcessPriority
) -> Child:
    """Start one child process running `serve`, and return it (not yet ready)."""
    if context.get_start_method() == "forkserver":
        _preload_in_forkserver()
    parent_end, child_end = context.Pipe()
    process = context.Process(
        target=serve,
        args=(child_end, os.getpid(), memory_limit, log_level, priority),
        name="jumpqueue-process-child",
    )
    try:
        process.start()
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return Child(process, parent_end)


class Watcher:
    """Waits until a pipe or a process sentinel among those registered is ready to read."""

    def __init__(self) -> None:
        self._items: dict[Any, object] = {}
        # A selector kept from one wait to the next; Windows pipes need multiprocessing's wait.
        self._selector = selectors.DefaultSelector() if sys.platform != "win32" else None

    def add(self, item: Any, data: object) -> None:
        """Watch item (a connection, a socket or a file descriptor); `wait` returns data."""
        self._items[item] = data
        if self._selector is not None:
            self._selector.register(item, selectors.EVENT_READ, data)

    def discard(self, item: Any) -> None:
        """Stop watching item; call it before item is closed."""
        if self._items.pop(item, None) is not None and self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(item)

    def wait(self, timeout: float | None) -> list[Any]:
        """The data of the items ready to read, after at most `timeout` seconds."""
        if self._selector is None:
            ready = multiprocessing.connection.wait(list(self._items), timeout)
            return [self._items[item] for item in ready]
        return [key.data for key, _ in self._selector.select(timeout)]

    def close(self) -> None:
        """Release the selector (in a forked process, without touching the parent's)."""
        self._items.clear()
        if self._selector is not None:
            self._selector.close()


class ChildTraceback(Exception):  # noqa: N818 -- a traceback shown as a cause, not an error
    """The traceback of an exception raised in a child process, attached as its cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def emit_log(child: Child, data: dict[str, Any]) -> None:
    """Re-emit a record shipped by a child on the `jumpqueue` logger, with its task id."""
    record = logging.makeLogRecord(data)
    if not logger.isEnabledFor(record.levelno):
        return
    record.child_pid = child.pid
    if "task_id" in data:
        record.msg = f"{data['task_name']} [{data['task_id']}]: {record.msg}"
    logger.handle(record)


def watch_memory(children: list[Child], limit: int, scanner: TreeScanner) -> None:
    """Kill each child whose tree's resident memory is past limit, with its tree; say why.

    A child's tree is the child and every process below it: what its calls started.
    """
    from .._exceptions import MemoryLimitError  # noqa: PLC0415 -- only when memory is limited

    for child in children:
        if child.killed:
            continue
        rss = scanner.resident_bytes(child.pid)
        if rss is None or rss <= limit:
            continue
        child.killed = True
        attempt = child.attempt
        what = "idle" if attempt is None else f"running {attempt.deferred.name}"
        child.reason = MemoryLimitError(
            f"child process {child.pid} ({what}) and the processes below it used {rss} bytes "
            f"of resident memory, past memory_limit={limit}; they were killed",
            pid=child.pid,
        )
        logger.warning("jumpqueue: %s", child.reason)
        kill_tree(child.pid, signal.SIGKILL)


def stop_children(children: list[Child], *, grace: float) -> None:
    """Stop children for good, each with what its calls started.

    Idle children exit on their own; running ones are terminated, then killed
    after `grace` seconds, with the processes below them.
    """
    # Found before the children exit: their orphans would leave their trees.
    found = trees([child.pid for child in children])
    below = {child: found[child.pid] for child in children}
    for child in children:
        with contextlib.suppress(OSError):
            child.conn.send_bytes(b"")  # the child's SIGTERM handler sees it: the stop is ours
        child.conn.close()
        if child.attempt is not None or not child.ready:
            kill_group(child.pid, signal.SIGTERM)
            signal_members(below[child], signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        # Stragglers, and what their calls started.
        if child.ended():
            kill_group(child.pid, signal.SIGKILL)
        else:
            kill_tree(child.pid, signal.SIGKILL)
        signal_members(below[child], signal.SIGKILL)
        child.join(1.0)
        child.close()


def describe_exit(exitcode: int | None) -> str:
    """How a child ended, for an error message."""
    if exitcode is None:
        return "vanished"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == getattr(signal, "SIGKILL", 9):
        name += " (by the OOM killer, or another process)"
    return f"was killed by {name}"


_preloaded = False


def _preload_in_forkserver() -> None:
    # The fork server imports the child's module once, so each child starts in milliseconds.
    global _preloaded  # noqa: PLW0603 -- once per process
    if _preloaded:
        return
    _preloaded = True
    from multiprocessing import forkserver  # noqa: PLC0415

    server = getattr(forkserver, "_forkserver", None)
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if _process_child.__name__ not in modules:
        forkserver.set_forkserver_preload([*modules, _process_child.__name__])


def forget_inherited_forkserver() -> None:
    """In a forked process, drop the parent's fork server so that a new one starts here.

    multiprocessing does not expect `os.fork()` (gunicorn's workers): the inherited
    server is not this process's child, and starting a process would fail.
    """
    server: Any = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    if getattr(server, "_forkserver_pid", None) is None:
        return
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)
    preload = server._preload_modules
    server.__init__()
    server._preload_modules = preload
