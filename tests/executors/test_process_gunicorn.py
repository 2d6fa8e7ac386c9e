"""The process executor under a real gunicorn: two sync workers, with and without `--preload`.

Each server worker must have children of its own, and no child may outlive its
worker, whether the worker is killed outright or the server is stopped. The
application (`gunicorn_process_app.py`) uses the pool as it is imported too:
under `--preload` the master has a pool of its own when it forks the workers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from ..conftest import TEST_PROCESS_PRIORITY
from ..web.harness import PY, Coordinator, RunningServer, ServerSpec, running
from .gunicorn_process_app import proc_stat
from .test_process import settled_signal, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

#: The servers' `max_processes`: children a worker may have at once.
MAX_PROCESSES = 2
#: How long the processes of a dead worker or server may take to follow it.
FOLLOW_LIMIT = 10.0


class Process(NamedTuple):
    """One process: a pid that the system hands out again later names another one."""

    pid: int
    start: int


def alive(process: Process) -> bool:
    """True while the process runs (a zombie left for its reaper counts as dead)."""
    stat = proc_stat(process.pid)
    return stat is not None and stat.start == process.start and stat.state not in ("Z", "X")


def descendants(root: int) -> set[Process]:
    """Every live process below root: its children, theirs, and so on."""
    below: dict[int, list[Process]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            below.setdefault(stat.ppid, []).append(Process(int(entry.name), stat.start))
    found: set[Process] = set()
    parents = [root]
    while parents:
        for child in below.get(parents.pop(), []):
            found.add(child)
            parents.append(child.pid)
    return found


def still_alive(processes: Iterable[Process]) -> list[Process]:
    return [process for process in processes if alive(process)]


@dataclasses.dataclass(frozen=True)
class Report:
    """Where one deferred call ran, as the call itself said (see `gunicorn_process_app.where`)."""

    tag: str
    pid: int
    start: int
    ppid: int
    ancestors: list[int]
    deferred_by: int

    @property
    def process(self) -> Process:
        return Process(self.pid, self.start)

    def line_below(self, top: int) -> list[int]:
        """Its ancestors from its parent up to, not including, top."""
        assert top in self.ancestors, f"{self} does not descend from {top}"
        return self.ancestors[: self.ancestors.index(top)]


@dataclasses.dataclass
class Gunicorn:
    """A gunicorn serving `gunicorn_process_app`, and the processes seen under it."""

    server: RunningServer
    coordinator: Coordinator
    out: Path
    preload: bool
    #: Every process seen under the master: whatever outlives the test is killed after it.
    seen: set[Process]

    @property
    def master(self) -> int:
        return self.server.process.pid

    def remember(self) -> set[Process]:
        """The processes under the master now (also kept in `seen`)."""
        now = descendants(self.master)
        self.seen.update(now)
        return now

    def defer(self, tag: str) -> int:
        """A request that defers `where`; the pid of the worker that served it."""
        response = self.server.get(f"/defer?tag={tag}")
        response.raise_for_status()
        worker: int = json.loads(response.content)["worker"]
        return worker

    def defer_in_different_workers(self, *tags: str, hold: str = "") -> dict[str, int]:
        """One request per tag, all in flight at once: each in another worker.

        Each handler waits for the test before it answers; a sync worker serves one
        request at a time, so the requests all waiting at once are in different
        workers. The call deferred by the request tagged `hold` holds its child.
        """
        paths = [f"/defer?tag={tag}&gate=1{'&hold=1' * (tag == hold)}" for tag in tags]
        with concurrent.futures.ThreadPoolExecutor(len(tags)) as pool:
            responses = pool.map(self.server.get, paths)
            for tag in tags:
                self.coordinator.wait_for(f"ready {tag}-handler")
            for tag in tags:
                self.coordinator.allow(f"{tag}-handler")
            workers: dict[str, int] = {}
            for tag, response in zip(tags, responses, strict=True):
                response.raise_for_status()
                workers[tag] = json.loads(response.content)["worker"]
        assert len(set(workers.values())) == len(tags), workers
        return workers

    def report(self, tag: str) -> Report:
        """What the call tagged `tag` said, once it has run."""
        self.coordinator.wait_for(f"ran {tag}")
        report = Report(**json.loads((self.out / f"{tag}.json").read_text()))
        self.seen.add(report.process)
        return report

    def assert_worker(self, pid: int) -> None:
        """pid is one of gunicorn's workers, not its master."""
        stat = proc_stat(pid)
        assert pid != self.master
        assert stat is not None
        assert stat.ppid == self.master

    def assert_child_of(self, report: Report, worker: int) -> None:
        """The call ran in a child of worker's own (or of the fork server worker started)."""
        assert report.deferred_by == worker
        assert report.pid not in (worker, self.master)
        line = report.line_below(self.master)
        # The worker is the gunicorn process nearest above the child; the child's parent
        # is the worker itself (fork, spawn) or the fork server the worker started.
        assert line[-1] == worker, report
        assert 1 <= len(line) <= 2, report


def _spec(preload: bool) -> ServerSpec:
    def command(port: int) -> list[str]:
        return [
            *(PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
            *("--workers", "2", "--worker-class", "sync", "--graceful-timeout", "10"),
            *(["--preload"] if preload else []),
            "tests.executors.gunicorn_process_app:app",
        ]

    name = "gunicorn-sync-preload" if preload else "gunicorn-sync"
    return ServerSpec(name, command, "wsgi", ("gunicorn",))


def _group(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat.pgrp


def _kill(process: Process) -> None:
    stat = proc_stat(process.pid)
    if stat is None or stat.start != process.start:
        return
    with contextlib.suppress(ProcessLookupError):
        if stat.pgrp == process.pid:  # a child leads a group of its own: end what it started
            os.killpg(process.pid, signal.SIGKILL)
        else:
            os.kill(process.pid, signal.SIGKILL)


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    hub = Coordinator()
    yield hub
    hub.close()


@pytest.fixture(params=[True, False], ids=["preload", "no-preload"])
def gunicorn(
    request: pytest.FixtureRequest, coordinator: Coordinator, tmp_path: Path
) -> Iterator[Gunicorn]:
    # A call still running at a graceful stop is abandoned after 1 s, not 5.
    with _serving(request.param, coordinator, tmp_path, shutdown_timeout=1) as served:
        yield served


@pytest.fixture(params=[True, False], ids=["preload", "no-preload"])
def patient_gunicorn(
    request: pytest.FixtureRequest, coordinator: Coordinator, tmp_path: Path
) -> Iterator[Gunicorn]:
    """A gunicorn whose workers give a running call 5 s at a graceful stop."""
    with _serving(request.param, coordinator, tmp_path, shutdown_timeout=5) as served:
        yield served


@contextlib.contextmanager
def _serving(
    preload: bool, coordinator: Coordinator, tmp_path: Path, *, shutdown_timeout: float
) -> Iterator[Gunicorn]:
    spec = _spec(preload)
    if (missing := spec.missing()) is not None:
        pytest.skip(f"{missing} is not installed")
    out = tmp_path / "reports"
    out.mkdir()
    seen: set[Process] = set()
    try:
        with running(
            spec,
            coordinator,
            tmp_path,
            JQTEST_OUT=str(out),
            JQTEST_WARM_UP="1",
            JUMPQUEUE_MAX_PROCESSES=str(MAX_PROCESSES),
            JUMPQUEUE_SHUTDOWN_TIMEOUT=str(shutdown_timeout),
            JUMPQUEUE_PROCESS_PRIORITY=TEST_PROCESS_PRIORITY,
        ) as server:
            served = Gunicorn(server, coordinator, out, preload, seen)
            served.remember()
            yield served
            served.remember()
    finally:
        # `running` kills gunicorn's process group; the children lead groups of their own.
        for process in seen:
            _kill(process)


def test_process_gunicorn_workers_each_run_calls_in_children_of_their_own(
    gunicorn: Gunicorn,
) -> None:
    workers = gunicorn.defer_in_different_workers("a", "b")
    tags = dict(workers)
    for index in range(6):  # more calls, to whichever worker the kernel picks
        tags[f"c{index}"] = gunicorn.defer(f"c{index}")
    children: dict[int, set[int]] = {worker: set() for worker in workers.values()}
    for tag, worker in tags.items():
        gunicorn.assert_worker(worker)
        report = gunicorn.report(tag)
        gunicorn.assert_child_of(report, worker)
        children[worker].add(report.pid)
    first, second = children.values()  # each worker's, both with one call or more
    assert not first & second
    assert all(len(pids) <= MAX_PROCESSES for pids in children.values())
    if gunicorn.preload:
        # The master's own child, from the import: no worker's call runs in it.
        master = gunicorn.report(f"warm-up-{gunicorn.master}")
        assert len(master.line_below(gunicorn.master)) <= 1
        assert master.pid not in first | second
    else:
        for worker in workers.values():
            gunicorn.assert_child_of(gunicorn.report(f"warm-up-{worker}"), worker)


@pytest.mark.timeout(60)
def test_process_gunicorn_killed_worker_takes_its_children_along(gunicorn: Gunicorn) -> None:
    workers = gunicorn.defer_in_different_workers("a", "b", hold="a")
    victim, survivor = workers["a"], workers["b"]
    held, idle = gunicorn.report("a"), gunicorn.report("b")
    gunicorn.coordinator.wait_for("ready a-task")  # the victim's child is busy with its call
    gunicorn.remember()
    doomed = descendants(victim)  # its children, and its fork server if it has one
    spared = descendants(survivor)
    assert held.process in doomed
    assert idle.process in spared
    os.kill(victim, signal.SIGKILL)  # a worker dies without any cleanup (OOM killer, timeout)
    assert wait_until(lambda: not still_alive(doomed), timeout=FOLLOW_LIMIT), still_alive(doomed)
    assert set(still_alive(spared)) == spared  # the other worker's processes live on
    # The master replaces the worker; the new one's calls run in children of its own.
    again = gunicorn.defer_in_different_workers("c", "d")
    assert survivor in again.values(), again
    (newcomer,) = set(again.values()) - {survivor}
    assert newcomer != victim
    for tag, worker in again.items():
        gunicorn.assert_worker(worker)
        report = gunicorn.report(tag)
        gunicorn.assert_child_of(report, worker)
        assert report.process not in doomed
        if worker == newcomer:
            assert report.process not in spared
    gunicorn.remember()


def test_process_gunicorn_stopped_server_leaves_no_child_alive(gunicorn: Gunicorn) -> None:
    workers = gunicorn.defer_in_different_workers("a", "b", hold="a")
    reports = [gunicorn.report(tag) for tag in workers]
    gunicorn.coordinator.wait_for("ready a-task")  # one child is busy with its call
    everything = gunicorn.remember()  # workers, fork servers, children, the master's own
    assert {report.process for report in reports} <= everything
    gunicorn.server.terminate()  # SIGTERM to the master, as a process manager stops it
    assert gunicorn.server.wait(timeout=20) == 0
    assert wait_until(lambda: not still_alive(everything), timeout=FOLLOW_LIMIT), still_alive(
        everything
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", ["group", "every-process"])
def test_process_gunicorn_whole_group_stop_leaves_busy_calls_their_grace(
    patient_gunicorn: Gunicorn, stop: str
) -> None:
    gunicorn = patient_gunicorn
    gunicorn.defer_in_different_workers("a", "b", hold="a")
    gunicorn.report("a")
    gunicorn.report("b")
    gunicorn.coordinator.wait_for("ready a-task")  # one child is busy with its call
    master = proc_stat(gunicorn.master)
    assert master is not None
    # The master, and its workers, fork servers and children, and the master's own.
    everything = {Process(gunicorn.master, master.start), *gunicorn.remember()}
    if stop == "group":  # `kill -TERM -PGID`: the children lead groups of their own
        targets = [process.pid for process in everything if _group(process.pid) == master.pgrp]
        os.killpg(master.pgrp, signal.SIGTERM)
    else:  # systemd's KillMode=control-group: every process of the service
        targets = [process.pid for process in everything]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):  # ended by an earlier one's end
                os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: all(settled_signal(pid, signal.SIGTERM) for pid in targets))
    gunicorn.coordinator.allow("a-task")  # the call ends within the workers' grace period
    gunicorn.coordinator.wait_for("done a-task")
    assert gunicorn.server.wait(timeout=20) == 0
    assert wait_until(lambda: not still_alive(everything), timeout=FOLLOW_LIMIT), still_alive(
        everything
    )
    log = gunicorn.server.log()
    for failure in ("WorkerCrashedError", "failed after", "abandoned"):
        assert failure not in log
