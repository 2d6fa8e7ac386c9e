"""kill -9 loops under load, with several gunicorn workers sharing one journal (bounded here).

`make soak` runs the same loop for ten minutes (tests/chaos/soak.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .kill_loop import run_kill_loop


@pytest.mark.timeout(90)
def test_chaos_kill_loop_under_load_loses_no_acknowledged_call(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    report = run_kill_loop(tmp_path, seed=11, kills=2, interval=(0.8, 1.5), final_timeout=30)
    print("\n".join(report.lines()))  # the figures, with -s
    assert report.kills == 2
    assert report.acknowledged > 0
    assert report.lost == [], report.lost[:10]
    assert report.failed_by_crash_loop == 0  # two kills cannot exhaust the crash-loop guard
    assert report.done == report.acknowledged
    assert report.twice_in_one_life == 0  # a call runs again only after its owner was killed
    assert report.runs >= report.done
    assert set(report.journal) <= {"done"}, report.journal
