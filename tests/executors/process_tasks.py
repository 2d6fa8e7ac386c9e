"""Functions the process executor's tests run in child processes: importable by name."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

from jumpqueue import task

#: How long a task waits for the test before it gives up (and the test fails).
PATIENCE = 20.0


def wait_for_file(path: str | Path, timeout: float = PATIENCE) -> str:
    """The text of `path` once it exists (written whole); TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    target = Path(path)
    while not target.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target} did not appear within {timeout} s")
        time.sleep(0.005)
    return target.read_text()


def write_file(path: str | Path, text: str) -> None:
    """Write text so that a reader never sees it half-written."""
    partial = Path(f"{path}.partial")
    partial.write_text(text)
    partial.replace(path)


def getpid() -> int:
    return os.getpid()


def getppid() -> int:
    return os.getppid()


def add(a: int, b: int) -> int:
    return a + b


def size_of(data: bytes) -> int:
    return len(data)


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(executor="process")
def square(n: int) -> int:
    return n * n


class Doubler:
    """A picklable object whose bound method can run in a child."""

    def __init__(self, n: int) -> None:
        self.n = n

    def double(self) -> int:
        return self.n * 2


class LockHolder:
    """An object that cannot be pickled: its bound methods cannot reach a child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def run(self) -> None:
        """Never runs in a child."""


def replaced() -> None:
    """Shadowed below: this function is not what its import path names."""


impostor = replaced


def replaced() -> None:  # type: ignore[no-redef]
    """The function the name `replaced` really names."""


def fail(message: str) -> None:
    raise ValueError(message)


class TwoArgumentError(Exception):
    """Pickles, but cannot be unpickled: its constructor wants two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def raise_unpicklable() -> None:
    raise TwoArgumentError(1, 2)


def return_lock() -> object:
    return threading.Lock()


def return_ghost() -> object:
    """An object of a class that only this child can import."""
    module = types.ModuleType("jumpqueue_test_ghost")
    sys.modules[module.__name__] = module
    ghost = type("Ghost", (), {"__module__": module.__name__})
    module.Ghost = ghost  # type: ignore[attr-defined]
    return ghost()


def die_while_starting(*args: Any) -> None:
    """Stands in for the child's main loop: dies before it says it is ready."""
    os._exit(3)


def hang_while_starting(*args: Any) -> None:
    """Stands in for the child's main loop: never says it is ready."""
    time.sleep(PATIENCE)


def hold(pid_file: str, release_file: str) -> int:
    """Report this child's pid, then wait until the test releases it."""
    write_file(pid_file, str(os.getpid()))
    wait_for_file(release_file)
    return os.getpid()


def hang_once(marker: str) -> str:
    """Hang on the first attempt (to be timed out), return on the next."""
    if Path(marker).exists():
        return "second attempt"
    write_file(marker, str(os.getpid()))
    wait_for_file(f"{marker}.never")
    return "first attempt"


def rendezvous(directory: str, count: int) -> int:
    """Return only once `count` calls run at the same time: proves `count` children serve."""
    Path(directory, f"{os.getpid()}.pid").write_text("")
    deadline = time.monotonic() + PATIENCE
    while len(list(Path(directory).glob("*.pid"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} calls ran at once")
        time.sleep(0.005)
    return os.getpid()


def segfault() -> None:
    ctypes.string_at(0)


def exit_now(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def allocate(size: int) -> int:
    return len(b"\x01" * size)


def hold_memory(size: int, ready_file: str) -> int:
    """Touch `size` bytes, say so, and keep them until killed (or PATIENCE runs out)."""
    data = b"\x01" * size
    write_file(ready_file, str(os.getpid()))
    wait_for_file(f"{ready_file}.never")
    return len(data)


def start_grandchild(pid_file: str) -> None:
    """Start a process of our own, report both pids, and wait forever."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    write_file(pid_file, f"{os.getpid()} {sleeper.pid}")
    wait_for_file(f"{pid_file}.never")


# A process that leaves its parent's session and its parent's tree: it forks, the
# first child starts a session of its own and forks again, and the middle one exits.
_DAEMON = """
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
with open(sys.argv[1] + ".partial", "w") as out:
    out.write(str(os.getpid()))
os.replace(sys.argv[1] + ".partial", sys.argv[1])
time.sleep(float(sys.argv[2]))
"""


def start_sessions(pid_file: str, hold: bool) -> None:
    """Start a process in a session of its own and a daemon; report pids; hold if asked.

    Writes `<child> <session leader> <daemon>` to `pid_file`.
    """
    quiet: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    leader = subprocess.Popen(sleep, start_new_session=True, **quiet)
    daemon_args = [sys.executable, "-c", _DAEMON, f"{pid_file}.daemon", "60"]
    subprocess.run(daemon_args, check=True, **quiet)
    daemon = wait_for_file(f"{pid_file}.daemon")
    write_file(pid_file, f"{os.getpid()} {leader.pid} {daemon}")
    if hold:
        wait_for_file(f"{pid_file}.never")


def orphan_that_ends(pid_file: str) -> int:
    """Start a daemon that ends at once; return its pid once it has ended."""
    quiet: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    subprocess.run([sys.executable, "-c", _DAEMON, pid_file, "0"], check=True, **quiet)
    daemon = int(wait_for_file(pid_file))
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{daemon}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            break  # reaped by another process: not ours to reap
        if fields[0] == "Z":
            break  # ended: left for its parent, or its reaper, to collect
        time.sleep(0.005)
    return daemon


_HOG = """
import os, sys, time
data = b"\\x01" * int(sys.argv[1])
with open(sys.argv[2] + ".partial", "w") as out:
    out.write(str(os.getpid()))
os.replace(sys.argv[2] + ".partial", sys.argv[2])
time.sleep(60)
"""


def spread_memory(size: int, count: int, pid_file: str) -> None:
    """Start `count` processes holding `size` bytes each, one after the other; wait to be killed.

    `pid_file` says `<child> <process> ...`, each process as soon as it starts.
    """
    quiet: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    pids = [str(os.getpid())]
    for index in range(count):
        ready = f"{pid_file}.{index}"
        hog = subprocess.Popen([sys.executable, "-c", _HOG, str(size), ready], **quiet)
        pids.append(str(hog.pid))
        write_file(pid_file, " ".join(pids))
        wait_for_file(ready)
    wait_for_file(f"{pid_file}.never")


def log_records() -> int:
    logging.getLogger("jumpqueue.tests").info("info from the child")
    logging.getLogger("tests.child").warning("warning from the child %d", 7)
    logging.getLogger("tests.child").info("an info record of the task's own stays in the child")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logging.getLogger("tests.child").exception("with a traceback")
    return os.getpid()


def scheduling() -> tuple[int, int, int | None]:
    """This process's scheduling policy, niceness, and its autogroup's niceness (if any)."""
    try:
        autogroup = int(Path("/proc/self/autogroup").read_text().split()[-1])
    except OSError:
        autogroup = None
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), autogroup
