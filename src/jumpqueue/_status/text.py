"""The report as text for people, laid out like PHP-FPM's status page, and as JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from .._metrics import BUCKETS

#: (label, key of the report) of the summary, in order.
_SUMMARY = (
    ("accepted calls", "accepted"),
    ("held calls", "held"),
    ("pending calls", "pending"),
    ("max pending calls", "max_pending"),
    ("pending limit", "pending_limit"),
    ("idle workers", "idle_workers"),
    ("active workers", "active_workers"),
    ("total workers", "total_workers"),
    ("backlog full", "backlog_full"),
    ("slow calls", "slow_calls"),
    ("stuck threads", "stuck_threads"),
)
_OUTCOMES = ("succeeded", "failed", "timed_out", "skipped", "abandoned", "handed_off", "journaled")
_ROW = (
    ("pid", "pid"),
    ("state", "state"),
    ("last seen (s)", "last_seen"),
    ("accepted calls", "accepted"),
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("shed", "shed"),
    ("held calls", "held"),
    ("pending calls", "pending"),
    ("running calls", "running"),
    ("total workers", "workers"),
    ("stuck threads", "stuck_threads"),
)


def as_json(report: dict[str, Any], *, full: bool) -> str:
    """The report as JSON; per-worker rows only with `full` (as `?full`)."""
    shown = {key: value for key, value in report.items() if full or key != "processes"}
    shown["buckets"] = list(BUCKETS)
    return json.dumps(shown, indent=None, separators=(",", ":"), default=str)


def as_text(report: dict[str, Any], *, full: bool) -> str:
    """The report as `label: value` lines; per-worker blocks only with `full`."""
    counters = report["counters"]
    lines = [
        ("pool", "jumpqueue"),
        ("pid", report["pid"]),
        ("start time", _when(report["start_time"])),
        ("start since", int(report["start_since"])),
    ]
    lines += [(label, report[key]) for label, key in _SUMMARY]
    lines += [(outcome.replace("_", " "), counters.get(outcome, 0)) for outcome in _OUTCOMES]
    shed = counters.get("shed") or {}
    lines.append(("shed", ", ".join(f"{p} {n}" for p, n in sorted(shed.items())) or 0))
    backlog = report["journal_backlog"]
    lines.append(("journal backlog", "-" if backlog is None else backlog))
    workers = ", ".join(f"{n} {s}" for s, n in report["server_workers"].items())
    if not report["status_dir"]:
        workers += " (this process only: set status_dir to see every worker)"
    lines.append(("server workers", workers))
    for kind in ("run", "wait"):
        for name, seconds in report["latency"][kind].items():
            lines.append((f"{kind} {name} (s)", "-" if seconds is None else f"{seconds:.4f}"))
    text = _block(lines)
    if full:
        for row in report["processes"]:
            text += "\n************************\n" + _block(
                [(label, row[key]) for label, key in _ROW]
            )
    return text


def _block(lines: list[tuple[str, object]]) -> str:
    return "".join(f"{label + ':':<22}{value}\n" for label, value in lines)


def _when(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(epoch))
