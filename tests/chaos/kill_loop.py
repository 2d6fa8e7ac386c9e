"""kill -9 loops under load: gunicorn workers share one journal and are killed again and again.

Clients keep sending requests that defer journaled calls; at random moments
(seeded) the whole server, master and workers, is killed with SIGKILL and
started again. At the end a last server runs what is left and stops
gracefully. Every call whose request was answered must have run (nothing
lost); a call runs again only after a kill (counted as a duplicate), never
twice within one server's life.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .gunicorn_chaos_app import create_effects

REPO = Path(__file__).resolve().parents[2]
#: The states of journal records that nobody will run again.
_FINAL = {"done", "failed", "quarantined", "skipped"}


@dataclasses.dataclass
class KillLoopReport:
    """What a kill loop did, and what became of the calls."""

    kills: int = 0
    seconds: float = 0.0
    requests_answered: int = 0
    requests_failed: int = 0
    acknowledged: int = 0
    done: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    runs: int = 0
    duplicates: int = 0
    twice_in_one_life: int = 0
    journal: dict[str, int] = dataclasses.field(default_factory=dict)
    failed_by_crash_loop: int = 0
    final_drain_seconds: float = 0.0

    def lines(self) -> list[str]:
        """The figures, one per line, for people."""
        return [
            f"kills (SIGKILL to master and workers): {self.kills} in {self.seconds:.0f} s",
            f"requests answered: {self.requests_answered}; cut by a kill: {self.requests_failed}",
            f"calls acknowledged: {self.acknowledged}; done: {self.done}; lost: {len(self.lost)}",
            f"runs: {self.runs}; calls run again after a kill (duplicates): {self.duplicates}",
            f"calls run twice within one server's life: {self.twice_in_one_life}",
            f"failed after their owner died too often (crash-loop guard): "
            f"{self.failed_by_crash_loop}",
            f"journal at the end: {self.journal}",
            f"last server ran what was left in {self.final_drain_seconds:.1f} s",
        ]


class _Clients:
    """Threads that send requests, each deferring `calls` journaled calls, until stopped."""

    def __init__(self, port: int, count: int, calls: int) -> None:
        self._port = port
        self._calls = calls
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.answered = self.failed = 0
        self._threads = [
            threading.Thread(target=self._run, args=(number,), daemon=True)
            for number in range(count)
        ]
        self._generation = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def generation(self, number: int) -> None:
        self._generation = number

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self, number: int) -> None:
        for sequence in range(sys.maxsize):
            if self._stop.is_set():
                return
            batch = f"g{self._generation}-c{number}-r{sequence}"
            url = f"http://127.0.0.1:{self._port}/defer?batch={batch}&n={self._calls}"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    ok = response.status == 200 and response.read() == b"ok"
            except (OSError, http.client.HTTPException):  # a kill cut the answer short
                ok = False
            with self._lock:
                if ok:
                    self.answered += 1
                    self.acknowledged += [f"{batch}-{index}" for index in range(self._calls)]
                else:
                    self.failed += 1
            if not ok:
                self._stop.wait(0.02)  # the server is down: do not spin


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(
    directory: Path, port: int, generation: int, *, workers: int, work: float
) -> subprocess.Popen[bytes]:
    """A gunicorn server with `workers` sync workers, sharing the journal in `directory`."""
    environment = {
        **os.environ,
        "JUMPQUEUE_JOURNAL": str(directory / "journal.db"),
        "JUMPQUEUE_MAX_WORKERS": "2",
        "CHAOS_EFFECTS": str(directory / "effects.db"),
        "CHAOS_WORK": str(work),
        "CHAOS_GENERATION": str(generation),
    }
    with (directory / f"gunicorn-{generation}.log").open("wb") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--workers", str(workers)),
                *("--worker-class", "sync", "--bind", f"127.0.0.1:{port}"),
                *("--graceful-timeout", "30", "--config", "python:jumpqueue.contrib.gunicorn"),
                "tests.chaos.gunicorn_chaos_app:application",
            ],
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the master and its workers in one group, killed together
        )


def wait_serving(port: int, timeout: float) -> bool:
    """Poll the server until it answers (another process: no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return True
        time.sleep(0.05)
    return False


def _keys_done(effects: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(effects, timeout=30)) as connection:
        return {key for (key,) in connection.execute("SELECT key FROM done")}


def run_kill_loop(
    directory: Path,
    *,
    seed: int,
    kills: int | None = None,
    seconds: float | None = None,
    interval: tuple[float, float] = (0.5, 1.5),
    workers: int = 3,
    clients: int = 4,
    calls: int = 5,
    work: float = 0.002,
    final_timeout: float = 60.0,
) -> KillLoopReport:
    """Kill a loaded server `kills` times, or for `seconds`; then let a last one run the rest."""
    if kills is None and seconds is None:
        raise ValueError("say how many kills, or for how long")
    rng = random.Random(seed)
    effects = directory / "effects.db"
    create_effects(str(effects))
    port = free_port()
    report = KillLoopReport()
    load = _Clients(port, clients, calls)
    started = time.monotonic()
    generation = 0
    load.start()
    try:
        while (kills is None or report.kills < kills) and (
            seconds is None or time.monotonic() - started < seconds
        ):
            generation += 1
            load.generation(generation)
            server = serve(directory, port, generation, workers=workers, work=work)
            try:
                if not wait_serving(port, timeout=30):
                    raise RuntimeError(f"gunicorn generation {generation} did not start")
                threading.Event().wait(rng.uniform(*interval))  # load meets the server
            finally:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(30)
            report.kills += 1
    finally:
        load.stop()
    report.seconds = time.monotonic() - started
    report.requests_answered, report.requests_failed = load.answered, load.failed
    acknowledged = set(load.acknowledged)
    report.acknowledged = len(acknowledged)
    drain_started = time.monotonic()
    last = serve(directory, port, generation + 1, workers=workers, work=work)
    try:
        # Until every record is final: those of answered requests, and those of requests a
        # kill cut short after their calls were written (they run too).
        deadline = time.monotonic() + final_timeout
        while time.monotonic() < deadline:
            if _journal_states(directory).keys() <= _FINAL:
                break
            time.sleep(0.1)
        report.final_drain_seconds = time.monotonic() - drain_started
    finally:
        os.killpg(last.pid, signal.SIGTERM)  # a graceful stop writes the last marks
        last.wait(60)
    _count(report, directory, acknowledged)
    return report


def _journal_states(directory: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(directory / "journal.db", timeout=30)) as connection:
        return dict(connection.execute("SELECT state, count(*) FROM calls GROUP BY state"))


def _count(report: KillLoopReport, directory: Path, acknowledged: set[str]) -> None:
    done = _keys_done(directory / "effects.db")
    report.done = len(done & acknowledged)
    with contextlib.closing(sqlite3.connect(directory / "effects.db", timeout=30)) as connection:
        runs = collections.Counter(key for (key,) in connection.execute("SELECT key FROM runs"))
        report.twice_in_one_life = connection.execute(
            "SELECT count(*) FROM (SELECT key FROM runs GROUP BY key, generation "
            "HAVING count(*) > 1)"
        ).fetchone()[0]
    report.runs = sum(runs.values())
    report.duplicates = sum(1 for count in runs.values() if count > 1)
    report.journal = _journal_states(directory)
    with contextlib.closing(sqlite3.connect(directory / "journal.db", timeout=30)) as connection:
        crash_looped = {
            json.loads(payload)[0][0]
            for (payload,) in connection.execute(
                "SELECT payload FROM calls WHERE state = 'failed' AND error LIKE '%owner died%'"
            )
        }
    report.failed_by_crash_loop = len(crash_looped & acknowledged)
    report.lost = sorted(acknowledged - done - crash_looped)
