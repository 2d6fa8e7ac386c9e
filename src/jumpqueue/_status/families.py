"""The report as metric families named the Prometheus way, and their OpenMetrics text.

One list of families serves both the status page's `?openmetrics` (written
here, without any library) and `jumpqueue.prometheus.JumpQueueCollector`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Literal

from .._metrics import BUCKETS

#: Final outcomes, as `Stats` names them.
OUTCOMES = (
    "succeeded",
    "failed",
    "timed_out",
    "skipped",
    "abandoned",
    "handed_off",
    "journaled",
)
#: Counters of `Stats` exposed as they are: (name, field, help).
_COUNTERS = (
    ("jumpqueue_submitted", "submitted", "Calls accepted by defer() or submit()."),
    ("jumpqueue_attempts_started", "started", "Attempts started (a retried call starts again)."),
    ("jumpqueue_retries", "retried", "Retries scheduled."),
    ("jumpqueue_recovered", "recovered", "Calls taken up from the journal."),
    ("jumpqueue_journal_fallbacks", "journal_fallbacks", "Calls that could not be journaled."),
    (
        "jumpqueue_slow_calls",
        "slow",
        "Attempts that ran past slow_call_threshold (counted as they end).",
    ),
)
#: Gauges summed over live workers, and shown per worker: (name, key in the report, help).
_GAUGES = (
    ("held", "held", "Calls held until their request's response is sent."),
    ("pending", "pending", "Calls admitted and waiting for a worker."),
    ("running", "running", "Calls running."),
    ("workers", "total_workers", "Threads and child processes serving."),
    ("stuck_threads", "stuck_threads", "Threads still running calls that timed out."),
)

Labels = dict[str, str]


@dataclasses.dataclass
class Family:
    """One metric: its name (without `_total`), type, help, and samples by labels.

    A counter's or a gauge's sample is a number; a histogram's is its
    per-bucket counts (`BUCKETS`, then +Inf) and their sum.
    """

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    samples: list[tuple[Labels, Any]] = dataclasses.field(default_factory=list)


def families(report: dict[str, Any]) -> list[Family]:
    """The report's metric families."""
    counters = report["counters"]
    found = [_calls(counters)]
    shed = Family("jumpqueue_shed", "counter", "Calls shed by a full backlog, by policy.")
    shed.samples = [({"policy": p}, n) for p, n in sorted((counters.get("shed") or {}).items())]
    found.append(shed)
    for name, key, text in _COUNTERS:
        found.append(Family(name, "counter", text, [({}, counters.get(key, 0))]))
    for key, text in (
        ("run", "Seconds an attempt ran, by task."),
        ("wait", "Seconds a call waited for a worker before it started, by task."),
    ):
        histogram = Family(f"jumpqueue_{key}_seconds", "histogram", text)
        for task, data in sorted((counters.get("tasks") or {}).items()):
            if key in data:
                histogram.samples.append(({"task": task}, (data[key]["counts"], data[key]["sum"])))
        found.append(histogram)
    found.extend(_gauges(report))
    return found


def _calls(counters: dict[str, Any]) -> Family:
    # By task where the metrics know it; the rest (calls before reporting began) with task="".
    family = Family("jumpqueue_calls", "counter", "Calls that ended, by outcome and task.")
    by_outcome = {outcome: int(counters.get(outcome, 0)) for outcome in OUTCOMES}
    by_outcome["shed"] = sum((counters.get("shed") or {}).values())
    for task, data in sorted((counters.get("tasks") or {}).items()):
        for outcome, count in sorted((data.get("outcomes") or {}).items()):
            family.samples.append(({"outcome": outcome, "task": task}, count))
            by_outcome[outcome] = by_outcome.get(outcome, 0) - count
    for outcome, rest in by_outcome.items():
        if rest > 0:
            family.samples.append(({"outcome": outcome, "task": ""}, rest))
    return family


def _gauges(report: dict[str, Any]) -> list[Family]:
    found = []
    for name, key, text in _GAUGES:
        found.append(Family(f"jumpqueue_{name}", "gauge", text, [({}, report[key])]))
    live = [row for row in report["processes"] if row["state"] != "dead"]
    for name, _, text in _GAUGES:
        samples = [({"pid": str(row["pid"])}, row[name]) for row in live]
        found.append(Family(f"jumpqueue_worker_{name}", "gauge", f"{text} Per worker.", samples))
    up = Family("jumpqueue_worker_up", "gauge", "1 for a worker that reports, 0 if it stopped.")
    up.samples = [
        ({"pid": str(row["pid"])}, int(row["state"] == "alive")) for row in report["processes"]
    ]
    found.append(up)
    states = Family("jumpqueue_server_workers", "gauge", "Server worker processes, by state.")
    states.samples = [({"state": s}, n) for s, n in report["server_workers"].items()]
    found.append(states)
    if report["journal_backlog"] is not None:
        text = "Calls in the journal not yet done (waiting, or held by a worker)."
        found.append(
            Family("jumpqueue_journal_backlog", "gauge", text, [({}, report["journal_backlog"])])
        )
    return found


def openmetrics(found: list[Family]) -> str:
    """The families in the OpenMetrics text format (`application/openmetrics-text`)."""
    lines = []
    for family in found:
        lines.append(f"# TYPE {family.name} {family.kind}")
        lines.append(f"# HELP {family.name} {_escape(family.help)}")
        for labels, value in family.samples:
            if family.kind == "counter":
                lines.append(f"{family.name}_total{_labels(labels)} {_number(value)}")
            elif family.kind == "gauge":
                lines.append(f"{family.name}{_labels(labels)} {_number(value)}")
            else:
                lines.extend(_histogram(family.name, labels, *value))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def cumulative(counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus buckets: (upper bound, count up to it), +Inf last."""
    bounds = [repr(float(bound)) for bound in BUCKETS] + ["+Inf"]
    return list(zip(bounds, itertools.accumulate(counts), strict=False))


def _histogram(name: str, labels: Labels, counts: list[int], total: float) -> list[str]:
    lines = [
        f"{name}_bucket{_labels({**labels, 'le': bound})} {count}"
        for bound, count in cumulative(counts)
    ]
    lines.append(f"{name}_count{_labels(labels)} {sum(counts)}")
    lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
    return lines


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
