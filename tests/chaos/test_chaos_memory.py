"""A long mix of calls keeps the resident memory flat and the stats adding up (bounded here).

`make soak` runs a million calls of the same mix (tests/chaos/soak.py).
"""

from __future__ import annotations

import logging

import pytest

from .soak import run_calls


@pytest.mark.timeout(60)
def test_chaos_mixed_calls_keep_memory_flat_and_every_call_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jumpqueue")  # a tenth fail on purpose
    report = run_calls(40_000, seed=3, margin=0.10, samples=40)
    print("\n".join(report.lines()))  # the figures, with -s
    assert report.adds_up, report.lines()
    assert report.flat, report.lines()
    stats = report.stats
    assert min(stats.failed, stats.timed_out, stats.skipped) > 0, stats  # the mix is mixed
    # Whether the backlog ever fills is timing: what was shed is counted, by its own policy.
    assert stats.shed.keys() <= {"drop", "reject"}, stats
    assert stats.shed.get("reject", 0) == report.rejected, stats
