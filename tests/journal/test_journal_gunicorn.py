from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .gunicorn_app import create_effects
from .journal_helpers import eventually, states

REPO = Path(__file__).resolve().parents[2]
CALLS_PER_REQUEST, REQUESTS = 10, 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(
    port: int,
    journal: Path,
    effects: Path,
    *,
    run: int,
    delay: float,
    workers: int = 2,
    share_until: float = 0.0,
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "JUMPQUEUE_JOURNAL": str(journal),
        "JUMPQUEUE_MAX_WORKERS": "2",
        "JQ_EFFECTS": str(effects),
        "JQ_DELAY": str(delay),
        "JQ_RUN": str(run),
        "JQ_SHARE_UNTIL": str(share_until),
    }
    with (journal.parent / f"gunicorn-{run}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--preload",
                "--bind",
                f"127.0.0.1:{port}",
                "--graceful-timeout",
                "20",
                "--config",
                "python:tests.journal.gunicorn_conf",
                "tests.journal.gunicorn_app:application",
            ],
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the master and its workers in one group, killed together
        )


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return int(response.status)


def _serving(port: int) -> bool:
    with contextlib.suppress(OSError):
        return _get(port, "/health") == 200
    return False


def _count(effects: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(effects, timeout=10)) as connection:
        return int(connection.execute(sql).fetchone()[0])


@pytest.mark.timeout(90)
def test_journal_sigkilled_gunicorn_loses_no_call_and_runs_none_twice_while_its_owner_lives(
    tmp_path: Path,
) -> None:
    pytest.importorskip("gunicorn")
    journal, effects = tmp_path / "journal.db", tmp_path / "effects.db"
    create_effects(str(effects))
    port = _free_port()
    first = _serve(port, journal, effects, run=1, delay=0.1)
    try:
        assert eventually(lambda: _serving(port), timeout=30)
        for batch in range(REQUESTS):
            assert _get(port, f"/defer?batch=b{batch}&n={CALLS_PER_REQUEST}") == 200
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    total = CALLS_PER_REQUEST * REQUESTS
    on_disk = states(journal)
    assert sum(on_disk.values()) == total  # every acknowledged call
    assert on_disk.get("claimed", 0) >= total // 2  # hundreds were in flight at the kill
    second = _serve(port, journal, effects, run=2, delay=0)
    try:
        assert eventually(lambda: _count(effects, "SELECT count(*) FROM done") == total, 30)
        assert _serving(port)
    finally:
        os.killpg(second.pid, signal.SIGTERM)  # a graceful stop writes the last marks
        second.wait(30)
    assert states(journal) == {"done": total}
    twice_in_a_run = _count(
        effects,
        "SELECT count(*) FROM (SELECT key FROM attempts GROUP BY key, run HAVING count(*) > 1)",
    )
    assert twice_in_a_run == 0  # no call ran twice while its owner lived
    assert _count(effects, "SELECT count(DISTINCT run) FROM attempts") == 2
    # A call runs again only if its killed owner had started it and not marked it done.
    started_first = _count(effects, "SELECT count(DISTINCT key) FROM attempts WHERE run = 1")
    rerun = _count(
        effects,
        "SELECT count(*) FROM (SELECT key FROM attempts GROUP BY key HAVING count(*) > 1)",
    )
    assert rerun <= started_first - on_disk.get("done", 0)


def test_journal_records_a_killed_server_left_are_shared_by_every_worker_that_opens_it(
    tmp_path: Path,
) -> None:
    pytest.importorskip("gunicorn")
    journal, effects = tmp_path / "journal.db", tmp_path / "effects.db"
    create_effects(str(effects))
    port = _free_port()
    first = _serve(port, journal, effects, run=1, delay=0.5)
    try:
        assert eventually(lambda: _serving(port), timeout=30)
        for batch in range(REQUESTS):
            assert _get(port, f"/defer?batch=b{batch}&n={CALLS_PER_REQUEST}") == 200
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    total = CALLS_PER_REQUEST * REQUESTS
    left = total - _count(effects, "SELECT count(*) FROM done")
    assert left > 300
    # Each call of the next run waits (up to 10 s) until another worker has run one:
    # a worker that took every record would leave the others nothing to run.
    second = _serve(port, journal, effects, run=2, delay=0, workers=3, share_until=time.time() + 10)
    try:
        assert eventually(lambda: _count(effects, "SELECT count(*) FROM done") == total, 20)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(20)
    workers = _count(effects, "SELECT count(DISTINCT pid) FROM attempts WHERE run = 2")
    assert workers > 1
