from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest

import jumpqueue
from jumpqueue import (
    Config,
    ConfigurationError,
    InvalidCallError,
    MemoryLimitError,
    RemoteTaskError,
    Runtime,
    Status,
    Task,
    TaskTimeoutError,
    WorkerCrashedError,
    task,
)
from jumpqueue.executors import _process_os, _process_tree, process

from ..conftest import RuntimeFactory
from . import process_tasks as tasks

P = ParamSpec("P")
R = TypeVar("R")

START_METHODS = [
    method
    for method in ("forkserver", "spawn", "fork")
    if method in multiprocessing.get_all_start_methods()
]
ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def in_process(fn: Callable[P, R], **options: Any) -> Task[P, R]:
    return task(executor="process", **options)(fn)


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    method: str = request.param
    return method


def dead(pid: int) -> bool:
    """True once pid has exited (a zombie left for init to reap counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (FileNotFoundError), or going while we read (ProcessLookupError)
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def processes_below(root: int) -> list[int]:
    """Every live process below root: its children, theirs, and so on (reads all of /proc)."""
    below: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not dead(int(entry.name)):
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                below.setdefault(ppid, []).append(int(entry.name))
    found, parents = [], [root]
    while parents:
        for pid in below.get(parents.pop(), []):
            found.append(pid)
            parents.append(pid)
    return found


def settled_signal(pid: int, sig: int) -> bool:
    """True once sig, sent to pid, has had its effect: pid is dead, or it took the signal.

    A process that neither ignores nor catches sig must be dead (its default action).
    """
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    except OSError:
        return True
    if dead(pid):
        return True
    bit = 1 << (sig - 1)
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    handled = int(status["SigIgn"], 16) | int(status["SigCgt"], 16)
    return not pending & bit and bool(handled & bit)


def kill_leftovers(pids: list[int]) -> None:
    """SIGKILL whatever of pids outlived the test (so that a failing test leaks nothing)."""
    for pid in pids:
        if not dead(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def assert_full_strength(runtime: Runtime, directory: Path, count: int) -> list[int]:
    """`count` calls that can only return if `count` children serve at once."""
    directory.mkdir()
    meeting = in_process(tasks.rendezvous)
    handles = [runtime.defer(meeting, str(directory), count) for _ in range(count)]
    pids = [handle.result(timeout=30) for handle in handles]
    assert len(set(pids)) == count
    return pids


# -- results, errors, bad calls --------------------------------------------------------------


def test_process_runs_calls_in_child_processes(
    make_runtime: RuntimeFactory, start_method: str
) -> None:
    runtime = make_runtime(max_processes=2, start_method=start_method)
    pid = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    assert pid != os.getpid()
    assert runtime.defer(in_process(tasks.add), 2, 3).result(timeout=10) == 5
    assert runtime.defer(tasks.square, 4).result(timeout=10) == 16
    assert runtime.defer(in_process(tasks.async_add), 1, 2).result(timeout=10) == 3
    assert runtime.defer(in_process(tasks.Doubler(21).double)).result(timeout=10) == 42
    stats = runtime.stats()
    assert stats.succeeded == 5
    assert 1 <= stats.workers <= 2


def test_process_exception_comes_back_with_the_child_traceback(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1)
    handle = runtime.defer(in_process(tasks.fail), "boom")
    with pytest.raises(ValueError, match="boom") as raised:
        handle.result(timeout=20)
    assert handle.status is Status.FAILED
    assert "process_tasks.py" in str(raised.value.__cause__)
    assert "in fail" in str(raised.value.__cause__)


def test_process_unpicklable_exception_comes_back_as_a_summary(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1)
    with pytest.raises(RemoteTaskError) as raised:
        runtime.defer(in_process(tasks.raise_unpicklable)).result(timeout=20)
    assert raised.value.type_name == "tests.executors.process_tasks.TwoArgumentError"
    assert raised.value.message == "1/2"
    assert "in raise_unpicklable" in raised.value.traceback
    with pytest.raises(pickle.PicklingError, match="cannot be sent back"):
        runtime.defer(in_process(tasks.return_lock)).result(timeout=10)
    with pytest.raises(RuntimeError, match=r"cannot be unpickled.*jumpqueue_test_ghost"):
        runtime.defer(in_process(tasks.return_ghost)).result(timeout=10)
    assert runtime.defer(in_process(tasks.add), 1, 1).result(timeout=10) == 2


def _closure() -> Callable[[], None]:
    def inner() -> None:
        """A closure."""

    return inner


@pytest.mark.parametrize(
    ("fn", "args", "message"),
    [
        (lambda: None, (), "is a lambda"),
        (_closure(), (), "closure"),
        (tasks.LockHolder().run, (), "cannot be sent to a child process"),
        (tasks.impostor, (), "not importable as tests.executors.process_tasks.replaced"),
        (tasks.add, (threading.Lock(), 1), "arguments of .* cannot be sent"),
    ],
    ids=["lambda", "closure", "unpicklable-bound-method", "not-importable", "unpicklable-args"],
)
def test_process_defer_refuses_calls_that_cannot_cross_the_process_boundary(
    make_runtime: RuntimeFactory, fn: Callable[..., Any], args: tuple[Any, ...], message: str
) -> None:
    runtime = make_runtime()
    with pytest.raises(InvalidCallError, match=message):
        runtime.defer(in_process(fn), *args)
    assert runtime.stats().submitted == 0  # never accepted, so never lost


@linux_only
def test_process_oversized_arguments_fail_naming_the_memory_limit(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1, memory_limit="128MiB")
    size_of = in_process(tasks.size_of)
    with pytest.raises(InvalidCallError, match=r"memory_limit=134217728.*pass ids"):
        runtime.defer(size_of, b"x" * 100 * 1024**2)  # more than half the limit: refused
    # Less than half, but more than the child can receive under its address-space cap.
    handle = runtime.defer(size_of, b"x" * 60 * 1024**2)
    with pytest.raises(MemoryLimitError, match=r"arguments .* 134217728-byte address-space"):
        handle.result(timeout=20)
    assert handle.status is Status.FAILED
    assert runtime.defer(size_of, b"x" * 1024).result(timeout=20) == 1024


def test_process_defer_returns_while_no_child_can_start(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    unblock = threading.Event()
    start_child = _process_os.start_child

    def slow_start(*args: Any, **kwargs: Any) -> Any:
        unblock.wait(10)
        return start_child(*args, **kwargs)

    monkeypatch.setattr(_process_os, "start_child", slow_start)
    runtime = make_runtime(max_processes=1)
    began = time.monotonic()
    handle = runtime.defer(in_process(tasks.add), 1, 2)
    assert time.monotonic() - began < 5  # the supervisor waits (10 s), not the caller
    assert handle.status is Status.PENDING
    unblock.set()
    assert handle.result(timeout=20) == 3


def test_process_start_failures_back_off_and_heal(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[float] = []
    start_child = _process_os.start_child

    def failing_start(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return start_child(*args, **kwargs)

    monkeypatch.setattr(_process_os, "start_child", failing_start)
    runtime = make_runtime(max_processes=1)
    assert runtime.defer(in_process(tasks.add), 2, 2).result(timeout=20) == 4
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.5  # backing off, not spinning
    assert "could not start a child process (OSError" in caplog.text


@pytest.mark.parametrize("failure", ["dies", "hangs"])
def test_process_child_failing_to_start_is_retried_until_one_starts(
    make_runtime: RuntimeFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    stand_in = tasks.die_while_starting if failure == "dies" else tasks.hang_while_starting
    monkeypatch.setattr(_process_os, "serve", stand_in)
    monkeypatch.setattr(process, "STARTUP_TIMEOUT", 0.3)
    runtime = make_runtime(max_processes=1)
    handle = runtime.defer(in_process(tasks.add), 3, 4)
    assert wait_until(lambda: "while starting up" in caplog.text)
    assert handle.status is Status.PENDING  # the call waits, it is not failed
    monkeypatch.undo()  # the condition clears: the pool heals by itself
    assert handle.result(timeout=20) == 7
    expected = "exited with code 3" if failure == "dies" else "SIGKILL"
    assert expected in caplog.text


# -- timeouts, crashes, memory, recycling ----------------------------------------------------


def test_process_timeout_kills_only_its_child(
    make_runtime: RuntimeFactory, start_method: str, tmp_path: Path
) -> None:
    runtime = make_runtime(max_processes=2, start_method=start_method)
    sibling = runtime.defer(in_process(tasks.hold), str(tmp_path / "a"), str(tmp_path / "go"))
    hung = runtime.defer(
        in_process(tasks.hold, timeout=0.5), str(tmp_path / "b"), str(tmp_path / "never")
    )
    hung_pid = int(tasks.wait_for_file(tmp_path / "b"))
    with pytest.raises(TaskTimeoutError):
        hung.result(timeout=20)
    assert hung.status is Status.TIMED_OUT
    assert wait_until(lambda: dead(hung_pid))
    assert not sibling.done()
    tasks.write_file(tmp_path / "go", "")
    assert sibling.result(timeout=10) == int(tasks.wait_for_file(tmp_path / "a"))
    pids = assert_full_strength(runtime, tmp_path / "meet", 2)
    assert hung_pid not in pids
    assert runtime.stats().stuck_threads == 0


def test_process_timed_out_call_is_retried_in_a_fresh_child(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = make_runtime(max_processes=1)
    flaky = in_process(tasks.hang_once, timeout=0.5, retries=1, retry_backoff=0)
    handle = runtime.defer(flaky, str(tmp_path / "marker"))
    assert handle.result(timeout=20) == "second attempt"
    assert handle.attempts == 2
    assert runtime.stats().retried == 1


CRASHES: dict[str, tuple[Callable[..., object], tuple[Any, ...], int, str]] = {
    "segfault": (tasks.segfault, (), -signal.SIGSEGV, "SIGSEGV"),
    "os-exit": (tasks.exit_now, (3,), 3, "exited with code 3"),
    "sigkill": (tasks.hold, (), -signal.SIGKILL, "SIGKILL"),
}


@pytest.mark.parametrize("crash", list(CRASHES))
def test_process_child_death_fails_only_its_own_call(
    make_runtime: RuntimeFactory, start_method: str, crash: str, tmp_path: Path
) -> None:
    fn, args, exitcode, message = CRASHES[crash]
    runtime = make_runtime(max_processes=2, start_method=start_method)
    sibling = runtime.defer(in_process(tasks.hold), str(tmp_path / "a"), str(tmp_path / "go"))
    tasks.wait_for_file(tmp_path / "a")
    if crash == "sigkill":
        victim = runtime.defer(in_process(fn), str(tmp_path / "b"), str(tmp_path / "never"))
        os.kill(int(tasks.wait_for_file(tmp_path / "b")), signal.SIGKILL)
    else:
        victim = runtime.defer(in_process(fn), *args)
    with pytest.raises(WorkerCrashedError, match=message) as raised:
        victim.result(timeout=20)
    assert raised.value.exitcode == exitcode
    copy = pickle.loads(pickle.dumps(raised.value))  # noqa: S301 -- our own bytes
    assert (copy.pid, copy.exitcode, str(copy)) == (raised.value.pid, exitcode, str(raised.value))
    assert victim.status is Status.FAILED
    assert not sibling.done()
    tasks.write_file(tmp_path / "go", "")
    assert sibling.result(timeout=10) > 0
    assert raised.value.pid not in assert_full_strength(runtime, tmp_path / "meet", 2)
    assert runtime.stats().failed == 1


@linux_only
def test_process_memory_limit_raises_memory_error_in_the_child(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1, memory_limit="256MiB")
    before = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    handle = runtime.defer(in_process(tasks.allocate), 1024**3)
    with pytest.raises(MemoryLimitError, match="address-space limit") as raised:
        handle.result(timeout=20)
    assert isinstance(raised.value, MemoryError)
    assert raised.value.pid == before
    assert handle.status is Status.FAILED
    after = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    assert after != before  # the slot was refilled with a fresh child
    assert runtime.defer(in_process(tasks.allocate), 1024).result(timeout=10) == 1024


@linux_only
def test_process_memory_watchdog_kills_a_child_past_the_limit(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Without the in-child cap, only the parent's resident-memory watchdog stands guard.
    monkeypatch.setattr(process, "address_space_limit", lambda limit: None)
    runtime = make_runtime(max_processes=2, memory_limit="128MiB")
    sibling = runtime.defer(in_process(tasks.hold), str(tmp_path / "a"), str(tmp_path / "go"))
    tasks.wait_for_file(tmp_path / "a")
    hog = runtime.defer(in_process(tasks.hold_memory), 256 * 1024**2, str(tmp_path / "b"))
    with pytest.raises(MemoryLimitError, match="resident memory") as raised:
        hog.result(timeout=20)
    assert hog.status is Status.FAILED
    assert dead(raised.value.pid)
    tasks.write_file(tmp_path / "go", "")
    assert sibling.result(timeout=10) > 0
    assert raised.value.pid not in assert_full_strength(runtime, tmp_path / "meet", 2)


@linux_only
def test_process_memory_watchdog_counts_the_processes_a_call_started(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(process, "address_space_limit", lambda limit: None)
    runtime = make_runtime(max_processes=1, memory_limit="256MiB")
    # Two processes of 140 MiB each: one, with the child (under 100 MiB even when
    # coverage measures it), stays under the limit; the two of them alone are past it.
    pid_file = tmp_path / "pids"
    hog = runtime.defer(in_process(tasks.spread_memory), 140 * 1024**2, 2, str(pid_file))
    try:
        with pytest.raises(MemoryLimitError, match="resident memory") as raised:
            hog.result(timeout=20)
        child, *started = map(int, tasks.wait_for_file(pid_file).split())
        assert raised.value.pid == child
        assert len(started) == 2  # the second one took the tree past the limit
        assert wait_until(lambda: all(dead(pid) for pid in [child, *started]), timeout=5)
    finally:
        if pid_file.exists():
            kill_leftovers([int(pid) for pid in pid_file.read_text().split()])
    assert runtime.defer(in_process(tasks.add), 1, 2).result(timeout=20) == 3


@linux_only
def test_process_pool_heals_after_its_fork_server_is_killed(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1, start_method="forkserver")
    child = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    server = runtime.defer(in_process(tasks.getppid)).result(timeout=10)
    assert server != os.getpid()
    os.kill(server, signal.SIGKILL)
    assert wait_until(lambda: dead(child))  # its exit could no longer be reported: killed
    replacement = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    assert replacement != child
    assert runtime.defer(in_process(tasks.getppid)).result(timeout=10) != server


def test_process_child_is_replaced_after_max_tasks(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_processes=1, max_tasks_per_child=2)
    getpid = in_process(tasks.getpid)
    pids = [runtime.defer(getpid).result(timeout=20) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert len(set(pids)) == 3


@linux_only
def test_process_children_run_at_the_configured_priority(make_runtime: RuntimeFactory) -> None:
    server = os.getpriority(os.PRIO_PROCESS, 0)
    # A child's session is an autogroup of its own, where the kernel has them: niced too.
    groups = Path("/proc/self/autogroup").exists()
    expected = {
        "idle": (os.SCHED_IDLE, 19, 19 if groups else None),
        "low": (os.SCHED_OTHER, max(server, 10), max(server, 10) if groups else None),
        "normal": (os.SCHED_OTHER, server, 0 if groups else None),
    }
    seen = {}
    for priority in expected:
        runtime = make_runtime(max_processes=1, process_priority=priority)
        seen[priority] = runtime.defer(in_process(tasks.scheduling)).result(timeout=20)
    assert seen == expected
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the server itself is left as it was


@linux_only
def test_process_idle_child_retires_and_comes_back_on_demand(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_processes=1, process_idle_timeout=0.2)
    first = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    assert wait_until(lambda: dead(first) and runtime.stats().workers == 0)
    assert runtime.defer(in_process(tasks.getpid)).result(timeout=20) != first


# -- logging, shutdown, forks of the server ----------------------------------------------------


def test_process_child_logs_reach_the_parent_with_the_task_id(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jumpqueue")
    runtime = make_runtime(max_processes=1)
    handle = runtime.defer(in_process(tasks.log_records))
    child = handle.result(timeout=20)
    shipped = [r for r in caplog.records if getattr(r, "child_pid", None) == child]
    assert {r.name for r in shipped} == {"jumpqueue.tests", "tests.child"}
    for record in shipped:
        assert record.task_id == handle.id  # type: ignore[attr-defined]
        assert handle.id in record.getMessage()
    assert any("warning from the child 7" in r.getMessage() for r in shipped)
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in shipped)


@linux_only
def test_process_shutdown_leaves_no_process_behind(
    make_runtime: RuntimeFactory, start_method: str, tmp_path: Path
) -> None:
    runtime = make_runtime(max_processes=2, start_method=start_method)
    busy = runtime.defer(in_process(tasks.start_grandchild), str(tmp_path / "pids"))
    child, grandchild = map(int, tasks.wait_for_file(tmp_path / "pids").split())
    idle = runtime.defer(in_process(tasks.getpid)).result(timeout=20)
    assert not dead(grandchild)
    runtime.shutdown(timeout=0.2)
    assert busy.status is Status.ABANDONED
    assert multiprocessing.active_children() == []
    assert wait_until(lambda: dead(child) and dead(grandchild) and dead(idle), timeout=5)


@linux_only
@pytest.mark.parametrize("moment", ["busy-at-shutdown", "idle-at-shutdown", "timed-out"])
def test_process_processes_in_sessions_of_their_own_end_with_their_child(
    make_runtime: RuntimeFactory, tmp_path: Path, moment: str
) -> None:
    runtime = make_runtime(max_processes=1)
    options = {"timeout": 3.0} if moment == "timed-out" else {}
    pid_file = tmp_path / "pids"
    handle = runtime.defer(
        in_process(tasks.start_sessions, **options), str(pid_file), moment != "idle-at-shutdown"
    )
    pids = list(map(int, tasks.wait_for_file(pid_file).split()))  # child, leader, daemon
    try:
        assert not any(dead(pid) for pid in pids)
        if moment == "timed-out":
            with pytest.raises(TaskTimeoutError):
                handle.result(timeout=20)
        else:
            if moment == "idle-at-shutdown":
                handle.result(timeout=20)
            runtime.shutdown(timeout=0.2)
        assert wait_until(lambda: all(dead(pid) for pid in pids), timeout=5), [
            pid for pid in pids if not dead(pid)
        ]
    finally:
        kill_leftovers(pids)


@linux_only
def test_process_child_collects_the_orphans_it_takes_in(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = make_runtime(max_processes=1)
    ends = in_process(tasks.orphan_that_ends)
    orphan = runtime.defer(ends, str(tmp_path / "orphan")).result(timeout=20)
    # The child took the daemon in when its parent ended: no zombie is left below it.
    assert wait_until(lambda: not Path(f"/proc/{orphan}").exists(), timeout=5)


TWO_LEVELS = textwrap.dedent(
    """
    import subprocess, sys, time
    from tests.executors import process_tasks as tasks

    below = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tasks.write_file(sys.argv[1], str(below.pid))
    time.sleep(60)
    """
)


@linux_only
@pytest.mark.parametrize("listing", ["children-files", "all-of-proc"])
def test_process_tree_is_found_measured_and_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listing: str
) -> None:
    if listing == "children-files" and not _process_tree._CHILDREN_FILES:
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    monkeypatch.setattr(_process_tree, "_CHILDREN_FILES", listing == "children-files")
    top = subprocess.Popen(
        [sys.executable, "-c", TWO_LEVELS, str(tmp_path / "below")], cwd=ROOT, env={**os.environ}
    )
    below = int(tasks.wait_for_file(tmp_path / "below"))
    try:
        found = {member.pid for member in _process_tree.descendants(os.getpid())}
        assert {top.pid, below} <= found
        alone = _process_tree.TreeScanner().resident_bytes(below)
        with_below = _process_tree.TreeScanner().resident_bytes(top.pid)
        assert alone is not None
        assert with_below is not None
        assert with_below > alone
        _process_tree.kill_tree(top.pid, signal.SIGKILL)
        assert top.wait(timeout=10) == -signal.SIGKILL
        assert wait_until(lambda: dead(below), timeout=5)
    finally:
        top.kill()
        top.wait()
        kill_leftovers([below])


STOPPED_SERVER = textwrap.dedent(
    """
    import signal, sys, threading
    from jumpqueue import Config, Runtime, task
    from tests.executors import process_tasks as tasks

    method, out = sys.argv[1], sys.argv[2]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    runtime = Runtime(Config(max_processes=2, start_method=method))
    runtime.defer(task(executor="process")(tasks.getpid)).result(30)  # an idle child too
    busy = runtime.defer(task(executor="process")(tasks.hold), out + "/busy", out + "/go")
    tasks.wait_for_file(out + "/busy")
    tasks.write_file(out + "/ready", "")
    stopping.wait(30)  # a process manager stops the server: its calls get their grace
    runtime.shutdown(timeout=20)
    try:
        outcome = f"ok {busy.result(0)}"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    tasks.write_file(out + "/outcome", outcome)
    """
)


@linux_only
@pytest.mark.parametrize("stop", ["group", "every-process"])
def test_process_whole_group_stop_leaves_busy_calls_their_grace(
    start_method: str, stop: str, tmp_path: Path
) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", STOPPED_SERVER, start_method, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ},
        start_new_session=True,
    )
    everything: list[int] = []
    try:
        tasks.wait_for_file(tmp_path / "ready")
        everything = [server.pid, *processes_below(server.pid)]
        if stop == "group":  # `kill -TERM -PGID`: the children lead groups of their own
            targets = [pid for pid in everything if os.getpgid(pid) == server.pid]
            os.killpg(server.pid, signal.SIGTERM)
        else:  # systemd's KillMode=control-group: every process of the service
            targets = everything
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):  # ended by an earlier one's end
                    os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: all(settled_signal(pid, signal.SIGTERM) for pid in targets))
        tasks.write_file(tmp_path / "go", "")
        outcome = tasks.wait_for_file(tmp_path / "outcome")
        assert outcome == f"ok {tasks.wait_for_file(tmp_path / 'busy')}"
        assert server.wait(timeout=20) == 0
        assert wait_until(lambda: all(dead(pid) for pid in everything), timeout=5)
    finally:
        server.kill()
        server.wait()
        kill_leftovers(everything)


SERVER = textwrap.dedent(
    """
    import os, sys, time
    from jumpqueue import Config, Runtime, task
    from tests.executors import process_tasks as tasks

    preload, out = sys.argv[1] == "preload", sys.argv[2]
    runtime = Runtime(Config(max_processes=1))
    if preload:  # the master used the pool before it forked, as under gunicorn --preload
        master_child = runtime.defer(task(executor="process")(tasks.getpid)).result(30)
        tasks.write_file(out + "/master-child", str(master_child))
    worker = os.fork()
    if worker == 0:
        worker_runtime = Runtime(Config(max_processes=1))
        start = task(executor="process")(tasks.start_sessions)
        worker_runtime.defer(start, out + "/worker-child", True)
        time.sleep(60)  # until the test kills this server worker
        os._exit(0)
    tasks.write_file(out + "/worker", str(worker))
    os.waitpid(worker, 0)
    if preload:  # the master's own pool still works after its worker died
        add = task(executor="process")(tasks.add)
        tasks.write_file(out + "/after", str(runtime.defer(add, 1, 2).result(30)))
    runtime.shutdown()
    """
)


@linux_only
@pytest.mark.parametrize("preload", ["preload", "no-preload"])
def test_process_children_die_with_their_server_worker(preload: str, tmp_path: Path) -> None:
    master = subprocess.Popen(
        [sys.executable, "-c", SERVER, preload, str(tmp_path)], cwd=ROOT, env={**os.environ}
    )
    try:
        worker = int(tasks.wait_for_file(tmp_path / "worker"))
        # The child, and the processes its call started in sessions of their own.
        child, *started = map(int, tasks.wait_for_file(tmp_path / "worker-child").split())
        os.kill(worker, signal.SIGKILL)  # a server worker dies without any cleanup
        assert wait_until(lambda: all(dead(pid) for pid in [child, *started]), timeout=10)
        if preload == "preload":
            assert tasks.wait_for_file(tmp_path / "after") == "3"
            assert child != int(tasks.wait_for_file(tmp_path / "master-child"))
        assert master.wait(timeout=20) == 0
    finally:
        master.kill()
        master.wait()
        if (tmp_path / "worker-child").exists():
            kill_leftovers([int(pid) for pid in (tmp_path / "worker-child").read_text().split()])


# -- an oracle, and configuration ------------------------------------------------------------


def test_process_crash_isolation_matches_pebble(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    pebble = pytest.importorskip("pebble")
    context = multiprocessing.get_context("forkserver")

    def scenario(submit: Callable[..., Any], outcome: Callable[[Any], str], name: str) -> list[str]:
        directory = tmp_path / name
        directory.mkdir()
        sibling = submit(tasks.hold, str(directory / "a"), str(directory / "go"))
        tasks.wait_for_file(directory / "a")
        victim = submit(tasks.kill_self)
        victim_outcome = outcome(victim)
        queued = submit(tasks.add, 1, 2)
        queued_outcome = outcome(queued)
        tasks.write_file(directory / "go", "")
        return [outcome(sibling), victim_outcome, queued_outcome]

    def pebble_outcome(future: Any) -> str:
        try:
            future.result(timeout=20)
        except pebble.ProcessExpired:
            return "crashed"
        return "ok"

    def our_outcome(handle: Any) -> str:
        try:
            handle.result(timeout=20)
        except WorkerCrashedError:
            return "crashed"
        return "ok"

    pool = pebble.ProcessPool(max_workers=2, context=context)
    try:
        theirs = scenario(lambda fn, *args: pool.schedule(fn, args=args), pebble_outcome, "pebble")
    finally:
        pool.stop()
        pool.join()
    runtime = make_runtime(max_processes=2, start_method="forkserver")
    ours = scenario(
        lambda fn, *args: runtime.defer(in_process(fn), *args), our_outcome, "jumpqueue"
    )
    assert ours == theirs == ["ok", "crashed", "ok"]


def test_process_config_reads_sizes_and_refuses_bad_values() -> None:
    environ = {
        "JUMPQUEUE_MEMORY_LIMIT": "512MiB",
        "JUMPQUEUE_START_METHOD": "spawn",
        "JUMPQUEUE_PROCESS_PRIORITY": "low",
    }
    config = Config.from_env(environ)
    assert config.process_priority == "low"
    assert Config().process_priority == "idle"
    assert config.memory_limit == 512 * 1024**2
    assert config.start_method == "spawn"
    assert Config(memory_limit="1G").memory_limit == 1024**3  # type: ignore[arg-type]
    bad: list[dict[str, Any]] = [
        {"max_processes": 0},
        {"memory_limit": 1024},
        {"memory_limit": "lots"},
        {"max_tasks_per_child": 0},
        {"process_idle_timeout": 0},
        {"start_method": "vfork"},
        {"process_priority": "lowest"},
    ]
    for options in bad:
        with pytest.raises(ConfigurationError, match=next(iter(options))):
            Config(**options)
    assert jumpqueue.Config().max_processes >= 1
