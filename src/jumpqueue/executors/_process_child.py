"""What runs inside a process executor's child: receive one call at a time, run it, answer."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._results import running_call
from ._base import call_to_completion
from ._process_priority import lower_priority
from ._process_tree import become_subreaper, kill_tree, reap_adopted

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .._choices import ProcessPriority

#: Replies and log records go back as pickles of these tuples:
#:   ("ready", pid)  ("ok", result)  ("raised", exception, traceback text)
#:   ("memory", message)  ("log", record attributes)
Message = tuple[Any, ...]

_PICKLE = pickle.HIGHEST_PROTOCOL
# The call running now, for the log records it emits: (name, id).
_current: tuple[str, str] | None = None
# True while the main thread reads a message: a signal then must not look at the pipe.
_receiving = False


class FunctionRef(NamedTuple):
    """A function named by its import path; the child imports it instead of unpickling it."""

    module: str
    qualname: str


def resolve(ref: FunctionRef) -> Any:
    """The object `ref` names; a `@task` stands for the function it wraps."""
    from .._tasks import Task  # noqa: PLC0415 -- the executors package is imported by _tasks

    found: Any = importlib.import_module(ref.module)
    for part in ref.qualname.split("."):
        found = getattr(found, part)
    return found.fn if isinstance(found, Task) else found


def serve(
    conn: Connection,
    parent_pid: int,
    memory_limit: int | None,
    log_level: int,
    priority: ProcessPriority = "normal",
) -> None:
    """The child's main loop, until its parent closes the pipe or sends an empty message."""
    global _receiving  # noqa: PLW0603 -- read by the signal handler, in this same thread
    _leave_stops_to_the_parent(conn)
    if hasattr(os, "setsid"):
        os.setsid()  # a group of its own, so that the parent can kill what the call started
    lower_priority(priority)  # after setsid(): on Linux the new session is a new autogroup
    # Orphans of what a call started stay below this process, where the parent finds them.
    adopting = become_subreaper()
    _watch_parent(parent_pid)
    lock = threading.Lock()

    def send(message: Message) -> None:
        data = pickle.dumps(message, _PICKLE)
        with lock:  # log records come from any thread of the call
            conn.send_bytes(data)

    _ship_logs(send, log_level)
    if memory_limit is not None:
        _limit_address_space(memory_limit)
    send(("ready", os.getpid()))
    functions: dict[FunctionRef, Callable[..., Any]] = {}
    while True:
        _receiving = True
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        except MemoryError:
            # The rest of that message is still in the pipe: no later one can be read.
            with contextlib.suppress(Exception):
                send(_too_big_to_receive(memory_limit))
            return
        finally:
            _receiving = False
        if not data:
            return
        reply = _run(data, functions, memory_limit)
        if adopting:
            # Between calls: a status a later call still waits for (a process left
            # running across calls) would be collected here, and seen as exit code 0.
            reap_adopted()
        try:
            send(reply)
        except OSError:
            return  # the parent is gone or closed the pipe
        except Exception as error:  # noqa: BLE001 -- the result cannot be pickled
            send(_raised(pickle.PicklingError(f"the result cannot be sent back: {error}")))


def _run(
    data: bytes, functions: dict[FunctionRef, Callable[..., Any]], limit: int | None
) -> Message:
    global _current  # noqa: PLW0603 -- one call at a time per process
    try:
        call_id, attempt, name, target, args, kwargs = pickle.loads(data)  # noqa: S301 -- from our parent
        running_call.set((call_id, attempt))
        _current = (name, call_id)
        if isinstance(target, FunctionRef):
            fn = functions.get(target)
            if fn is None:
                fn = functions[target] = resolve(target)
        else:
            fn = target
        result = call_to_completion(fn, args, kwargs)
    except MemoryError as error:
        if limit is None:
            return _raised(error)
        return ("memory", f"an allocation failed under the {limit}-byte address-space limit")
    except BaseException as error:  # noqa: BLE001 -- every outcome goes back to the parent
        return _raised(error)
    finally:
        _current = None
        running_call.set(None)
    return ("ok", result)


def _too_big_to_receive(limit: int | None) -> Message:
    if limit is None:
        return ("memory", "the call's arguments could not be received: out of memory")
    return (
        "memory",
        f"the call's arguments could not be received under the {limit}-byte "
        "address-space limit (memory_limit)",
    )


def _raised(error: BaseException) -> Message:
    from .._exceptions import RemoteTaskError  # noqa: PLC0415 -- only on this path

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        # Many exceptions pickle but fail to unpickle (a constructor with other arguments).
        pickle.loads(pickle.dumps(error, _PICKLE))  # noqa: S301 -- our own bytes
    except Exception:  # noqa: BLE001 -- then a faithful summary goes instead
        kind = type(error)
        error = RemoteTaskError(f"{kind.__module__}.{kind.__qualname__}", str(error), text)
    return ("raised", error, text)


def _limit_address_space(limit: int) -> None:
    try:
        import resource  # noqa: PLC0415 -- POSIX only

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        logging.getLogger("jumpqueue").warning(
            "jumpqueue: this platform cannot limit a child's address space; "
            "only the parent's resident-memory watchdog applies"
        )


def _leave_stops_to_the_parent(conn: Connection) -> None:
    """Let SIGTERM and SIGINT end this process only when the parent sends them.

    A process manager stopping a service signals its whole process group, or
    every process of its cgroup: the children must not die before the server
    that gives their calls a grace period. The parent asks a child to stop
    with an empty message before it sends SIGTERM; a signal with no message
    waiting is left to the parent, which ends the child when it stops itself.
    A handler rather than SIG_IGN: ignoring would carry over to the programs
    that a call executes.
    """

    def on_signal(signum: int, _frame: object) -> None:
        if _receiving or not conn.poll():
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # Under fork, the parent's event loop may have left its wake-up descriptor here: a
    # signal this process takes must not reach that loop as if the parent had taken it.
    signal.set_wakeup_fd(-1)


def _watch_parent(pid: int) -> None:
    """End this process and everything below it when the parent dies, however it dies."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux >= 5.3: readable once the process has exited
            poller = select.poll()
        except (AttributeError, OSError):
            while alive(pid):
                time.sleep(0.5)
        else:
            poller.register(fd, select.POLLIN)
            poller.poll()
        kill_tree(os.getpid(), signal.SIGKILL)  # this process last: its orphans stay below it
        os._exit(1)

    previous = threading.stack_size(256 * 1024)  # a small stack: the address space may be capped
    try:
        threading.Thread(target=watch, name="jumpqueue-parent-watch", daemon=True).start()
    finally:
        threading.stack_size(previous)


def alive(pid: int) -> bool:
    """True while a process of that pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but not ours to signal
    return True


class _LogShipper(logging.Handler):
    """Sends jumpqueue's records, and any record at WARNING or above, to the parent."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == "jumpqueue" or record.name.startswith("jumpqueue.")
        if not ours and record.levelno < logging.WARNING:
            return
        try:
            data = {
                key: value
                for key, value in vars(record).items()
                if isinstance(value, (str, int, float, bool, type(None)))
            }
            data.update(msg=record.getMessage(), args=None, exc_info=None)
            if record.exc_info:
                data["exc_text"] = logging.Formatter().formatException(record.exc_info)
            if _current is not None:
                data["task_name"], data["task_id"] = _current
            self._send(("log", data))
        except Exception:  # noqa: BLE001 -- logging must never break the call
            self.handleError(record)


def _ship_logs(send: Callable[[Message], None], level: int) -> None:
    # Inherited handlers (under fork) would write from here directly: the parent writes instead.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LogShipper(send))
    ours = logging.getLogger("jumpqueue")
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    ours.setLevel(level)
    ours.propagate = True
