"""Django Tasks backends side by side: enqueue cost and end-to-end latency, in one run.

    python benchmarks/django_tasks.py [--calls 500] [--rounds 7] [--samples 30]

Three backends of `django.tasks` in one Django project and one SQLite file (WAL):

- `ImmediateBackend` (Django's own): runs the task inside `enqueue()`;
- `JumpQueueBackend`: hands it to jumpqueue's pool, without a journal and
  with one (`JOURNAL`, `synchronous=FULL`: one commit per enqueue outside a
  request; inside one, the tasks of a request share one commit, as the row
  "10 per request" measures);
- django-tasks-db's `DatabaseBackend`: one row per enqueue, run by its
  `db_worker` process, which looks for new rows every second (its default
  `--interval`) when it has nothing to do.

Enqueue cost: microseconds per `enqueue()` of a no-op task, outside a request
(median over rounds, with the range), the pool's one thread kept busy so that
only the hand-off counts. Latency: from `enqueue()` to the task's first line,
one task at a time, each waited for (median and range over samples), measured
on the wall clock every process shares. Ratios are against jumpqueue without a
journal, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _load import median_range

APPS = Path(__file__).resolve().parent / "apps"


def setup(directory: Path) -> None:
    """Set Django up on the benchmark's project, with its database migrated."""
    os.environ["JQBENCH_DB"] = str(directory / "db.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_django_tasks_settings"
    sys.path.insert(0, str(APPS))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def enqueue_cost(
    backend: str, calls: int, rounds: int, *, per_request: int = 0
) -> tuple[float, float, float]:
    """Microseconds per enqueue() on `backend`: median, lowest, highest over rounds.

    With `per_request`, the enqueues are made that many at a time inside a request
    scope, sealed and released as the middleware does after the response.
    """
    from bench_django_tasks_work import noop

    from jumpqueue.integration import RequestScope

    task = noop.using(backend=backend)

    def run(count: int) -> None:
        if not per_request:
            for _ in range(count):
                task.enqueue()
            return
        for _ in range(count // per_request):
            scope = RequestScope()
            token = scope.activate()
            for _ in range(per_request):
                task.enqueue()
            scope.deactivate(token)
            scope.seal()
            scope.release(succeeded=True)

    run(min(calls, 100))  # warm up: connections, caches, the pool's thread
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(calls)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return median_range(samples)


def latency(backend: str, samples: int) -> tuple[float, float, float]:
    """Milliseconds from enqueue() to the task's start: median, lowest, highest."""
    from bench_django_tasks_work import started_at

    task = started_at.using(backend=backend)
    measured = []
    for _ in range(samples + 1):
        enqueued = time.time()
        result = task.enqueue()
        while not result.is_finished:
            time.sleep(0.001)  # another process's row, or the pool's thread: poll its result
            result.refresh()
        measured.append((result.return_value - enqueued) * 1e3)
    return median_range(measured[1:])  # the first one warms up


@contextlib.contextmanager
def db_worker(directory: Path) -> Iterator[None]:
    """django-tasks-db's worker for the "db" backend, stopped afterwards."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
    }
    log = (directory / "db_worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "db_worker", "--backend", "db", "--no-startup-delay"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


_gate = threading.Event()


def hold() -> None:
    """Keep the pool's thread busy until the measurement ends."""
    _gate.wait(600)


@contextlib.contextmanager
def busy_pool(*, journal: Path | None) -> Iterator[None]:
    """jumpqueue with one thread, held busy while enqueue() is measured; a journal if given."""
    import jumpqueue

    runtime = jumpqueue.configure(
        max_workers=1, max_pending=1_000_000, journal=None if journal is None else str(journal)
    )
    _gate.clear()
    runtime.defer(hold)
    try:
        yield
    finally:
        _gate.set()
        runtime.shutdown(60)


@contextlib.contextmanager
def idle_pool(*, journal: Path | None) -> Iterator[None]:
    """jumpqueue with its default pool, idle; a journal if given."""
    import jumpqueue

    runtime = jumpqueue.configure(journal=None if journal is None else str(journal))
    try:
        yield
    finally:
        runtime.shutdown(60)


def row(name: str, figures: tuple[float, float, float], peer: float, unit: str) -> str:
    """A table row: median (range) and the ratio to the peer's median."""
    median, low, high = figures
    return f"| {name} | {median:,.1f} {unit} ({low:,.1f}-{high:,.1f}) | {median / peer:,.2f}x |"


def main() -> None:
    """Measure every backend and print two Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=30)
    options = parser.parse_args()
    import django

    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        setup(directory)
        cost: dict[str, tuple[float, float, float]] = {}
        with busy_pool(journal=None):
            cost["JumpQueueBackend"] = enqueue_cost("jumpqueue", options.calls, options.rounds)
        with busy_pool(journal=directory / "journal.db"):
            cost["JumpQueueBackend, journal"] = enqueue_cost(
                "jumpqueue", options.calls, options.rounds
            )
            cost["JumpQueueBackend, journal, 10 per request"] = enqueue_cost(
                "jumpqueue", options.calls, options.rounds, per_request=10
            )
        cost["ImmediateBackend (runs the task)"] = enqueue_cost(
            "immediate", options.calls, options.rounds
        )
        cost["django-tasks-db DatabaseBackend"] = enqueue_cost("db", options.calls, options.rounds)
        waits: dict[str, tuple[float, float, float]] = {}
        with idle_pool(journal=None):
            waits["JumpQueueBackend"] = latency("jumpqueue", options.samples)
        with idle_pool(journal=directory / "journal-latency.db"):
            waits["JumpQueueBackend, journal"] = latency("jumpqueue", options.samples)
        waits["ImmediateBackend"] = latency("immediate", options.samples)
        with db_worker(directory):
            waits["django-tasks-db + db_worker (1 s interval)"] = latency("db", options.samples)

    print(f"Django {django.get_version()}, Python {sys.version.split()[0]}, SQLite (WAL)\n")
    print(f"Enqueue cost, per enqueue() ({options.calls} calls x {options.rounds} rounds)\n")
    print("| backend | median (range) | vs JumpQueueBackend |\n|---|---|---|")
    peer = cost["JumpQueueBackend"][0]
    for name, figures in cost.items():
        print(row(name, figures, peer, "µs"))
    print(f"\nEnd-to-end latency, enqueue() to the task's start ({options.samples} tasks)\n")
    print("| backend | median (range) | vs JumpQueueBackend |\n|---|---|---|")
    peer = waits["JumpQueueBackend"][0]
    for name, figures in waits.items():
        print(row(name, figures, peer, "ms"))


if __name__ == "__main__":
    main()
