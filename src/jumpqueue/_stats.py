"""A snapshot of what a runtime has done and is doing."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats:
    """Counters since the runtime started, and gauges of this moment.

    Each call is counted once in `submitted`, and is at any moment either in
    flight (held, pending or running) or in exactly one final state, so
    `submitted == finished + in_flight` always holds. A scheduled call
    (`delay`, `run_after`) is in flight, and holds a slot of `max_pending`,
    while it waits for its time. A call this runtime
    left to the journal (spilled, or handed back by a failed hand-off) and
    then takes up again is the same call: it leaves `journaled` for in flight
    and its next outcome, and counts again only in `recovered`, which counts
    take-ups.

    Attributes:
        submitted: calls accepted by `defer()` or `submit()` (including those then
            shed), and calls new to this runtime taken up from the journal (left by
            a process that died or shut down).
        started: attempts started (a retried call starts more than once).
        succeeded, failed, timed_out, skipped, abandoned: calls in that final state.
        handed_off: calls handed to a backend (final here; the engine runs them).
        journaled: calls whose outcome here is "journaled": spilled, handed
            back by a failed hand-off, or left in the journal by a shutdown;
            they run from the journal (and leave this count if they run here).
        retried: retries scheduled.
        shed: calls shed by a full backlog, by the policy that shed them.
        inlined: calls the "inline" policy ran in the caller.
        waited: calls the "wait" policy admitted after waiting for room.
        spilled: calls the "spill" policy wrote to the journal.
        recovered: take-ups of journal records to run here, one per take-up:
            records left by a process that died or shut down, spilled ones,
            and calls handed back by a failed hand-off.
        journal_fallbacks: calls that could not be journaled (full disk,
            unwritable file): run without the journal, or given the overload policy.
        journal_degraded: True while journal writes fail.
        held, scheduled, pending, running: calls in that state now.
        workers: threads and child processes serving now.
        stuck_threads: threads still running calls that timed out.
        backends: per backend name ("rq", "celery"), its hand-off counters:
            `handed_off`, `handoff_failures` (sends the broker did not take) and
            `handoff_fallbacks` (calls that took the task's fallback instead).
    """

    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    timed_out: int = 0
    skipped: int = 0
    abandoned: int = 0
    handed_off: int = 0
    journaled: int = 0
    shed: Mapping[str, int] = dataclasses.field(default_factory=dict)
    inlined: int = 0
    waited: int = 0
    spilled: int = 0
    recovered: int = 0
    journal_fallbacks: int = 0
    journal_degraded: bool = False
    held: int = 0
    scheduled: int = 0
    pending: int = 0
    running: int = 0
    workers: int = 0
    stuck_threads: int = 0
    backends: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        """Calls held, scheduled, pending or running."""
        return self.held + self.scheduled + self.pending + self.running

    @property
    def finished(self) -> int:
        """Calls in a final state."""
        return (
            self.succeeded
            + self.failed
            + self.timed_out
            + sum(self.shed.values())
            + self.skipped
            + self.abandoned
            + self.handed_off
            + self.journaled
        )

    def as_dict(self) -> dict[str, object]:
        """The snapshot as plain data (for JSON, logs, a status page)."""
        return {
            **dataclasses.asdict(self),
            "shed": dict(self.shed),
            "backends": {name: dict(counts) for name, counts in self.backends.items()},
        }
