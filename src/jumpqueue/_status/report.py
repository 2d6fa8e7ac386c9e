"""The status report: this process's snapshot and the other workers' files, summed."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from .. import _snapshots
from .._journal.store import Store
from .._metrics import add, quantile
from .._runtime.reporting import worker_state, written

if TYPE_CHECKING:
    from .._runtime import Runtime

#: Journal states of calls not yet done: waiting, or held by a process that runs them.
_BACKLOG_STATES = ("pending", "claimed", "held")
#: The states a worker can be in, in the order they are shown.
STATES = ("alive", "unresponsive", "dead")


def collect(runtime: Runtime) -> dict[str, Any]:
    """The report of the server `runtime` serves in: sums, per-worker rows, journal backlog.

    Counters sum over every worker with a file (dead ones too, and those
    folded into `exited.json`), so they never go down; gauges sum over the
    workers that live. Without `status_dir`, only this process is shown.
    """
    now = time.time()
    own = runtime.status_snapshot()
    rows: list[tuple[str, dict[str, Any]]] = [("alive", own)]
    counters: dict[str, Any] = {}
    directory = runtime.config.status_dir
    if directory is not None:
        add(counters, _snapshots.exited(directory))
        for _, snapshot in _snapshots.workers(directory):
            if snapshot.get("pid") != own["pid"]:
                rows.append((worker_state(snapshot, now), snapshot))
    gauges: dict[str, Any] = {}
    for state, snapshot in rows:
        add(counters, snapshot.get("counters") or {})
        if state != "dead":
            add(gauges, snapshot.get("gauges") or {})
    return _report(runtime, now, rows, counters, gauges)


def _report(
    runtime: Runtime,
    now: float,
    rows: list[tuple[str, dict[str, Any]]],
    counters: dict[str, Any],
    gauges: dict[str, Any],
) -> dict[str, Any]:
    config = runtime.config
    live = sum(state != "dead" for state, _ in rows)
    started = min(float(snapshot.get("started") or now) for _, snapshot in rows)
    run, wait = (
        _all_tasks(counters.get("tasks") or {}, "run"),
        _all_tasks(counters.get("tasks") or {}, "wait"),
    )
    shed = counters.get("shed") or {}
    workers = int(gauges.get("workers", 0))
    running = int(gauges.get("running", 0))
    return {
        "pid": os.getpid(),
        "time": now,
        "start_time": started,
        "start_since": now - started,
        "accepted": int(counters.get("submitted", 0)),
        "held": int(gauges.get("held", 0)),
        "pending": int(gauges.get("pending", 0)),
        "max_pending": int(gauges.get("max_in_flight", 0)),
        "pending_limit": config.max_pending * live,
        "running": running,
        "idle_workers": max(0, workers - running),
        "active_workers": running,
        "total_workers": workers,
        "backlog_full": sum(shed.values())
        + int(counters.get("waited", 0))
        + int(counters.get("inlined", 0))
        + int(counters.get("spilled", 0)),
        "slow_calls": int(counters.get("slow", 0)),
        "stuck_threads": int(gauges.get("stuck_threads", 0)),
        "journal_backlog": _journal_backlog(config.journal),
        "journal_degraded": bool(gauges.get("journal_degraded", False)),
        "server_workers": {state: sum(s == state for s, _ in rows) for state in STATES},
        "status_dir": config.status_dir is not None,
        "counters": counters,
        "latency": {"run": _percentiles(run), "wait": _percentiles(wait)},
        "histograms": {"run": run, "wait": wait},
        "processes": [_row(state, snapshot, now) for state, snapshot in rows],
    }


def _all_tasks(tasks: dict[str, Any], key: str) -> list[int]:
    # One task's histogram, or all of them summed: the per-bucket counts.
    total: dict[str, Any] = {}
    for task in tasks.values():
        add(total, {"counts": (task.get(key) or {}).get("counts") or []})
    counts = total.get("counts") or []
    return [int(count) for count in counts]


def _percentiles(counts: list[int]) -> dict[str, float | None]:
    return {f"p{round(share * 100)}": quantile(counts, share) for share in (0.5, 0.9, 0.99)}


def _row(state: str, snapshot: dict[str, Any], now: float) -> dict[str, Any]:
    counters = snapshot.get("counters") or {}
    gauges = snapshot.get("gauges") or {}
    return {
        "pid": snapshot.get("pid"),
        "state": state,
        "start_time": snapshot.get("started"),
        "last_seen": round(max(0.0, now - written(snapshot)), 3),
        "accepted": counters.get("submitted", 0),
        "succeeded": counters.get("succeeded", 0),
        "failed": counters.get("failed", 0),
        "shed": sum((counters.get("shed") or {}).values()),
        # A dead worker's gauges are what it last said, not what is now.
        **{name: gauges.get(name, 0) for name in ("held", "pending", "running", "workers")},
        "stuck_threads": gauges.get("stuck_threads", 0),
    }


def _journal_backlog(path: str | None) -> int | None:
    # Calls waiting in the journal file (shared by the server's workers), or None.
    if path is None or not os.path.exists(path):
        return None
    with contextlib.suppress(Exception):
        store = Store.open(path, create=False)
        try:
            counts = store.counts()
        finally:
            store.close()
        return sum(counts.get(state, 0) for state in _BACKLOG_STATES)
    return None
