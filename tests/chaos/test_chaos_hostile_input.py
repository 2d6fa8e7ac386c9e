"""Hostile input: numbers past any clock, arguments past any codec, paths and URLs that cannot work.

Each is refused at once with a `JumpQueueError` naming it, or served; none
kills a thread of jumpqueue or keeps a caller waiting.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import jumpqueue
from jumpqueue import Config, Deferred, Runtime

from ..conftest import wait_until_waiting_for_room
from . import chaos_tasks
from .test_chaos_api import PROMPT, attempt
from .watch import no_thread_dies


@given(maximum=st.sampled_from([sys.maxsize, 2**63, 10**30]))
def test_chaos_huge_int_bounds_defer_and_run(maximum: int) -> None:
    with no_thread_dies():
        runtime = jumpqueue.configure(max_pending=maximum, max_workers=maximum, max_async=maximum)
        handle = jumpqueue.defer(chaos_tasks.identity, 1)
        assert handle.result(5) == 1
        runtime.shutdown(timeout=5)


def test_chaos_wait_policy_with_an_overload_wait_past_any_clock_waits_for_room() -> None:
    chaos_tasks.reset()
    chaos_tasks.GATE.clear()
    runtime = Runtime(Config(max_workers=1, max_pending=1, overload_wait=1e300))
    outcome: list[object] = []
    try:
        with no_thread_dies():
            first = runtime.defer(chaos_tasks.wait_for_gate, "first")
            waiter = threading.Thread(
                target=lambda: outcome.append(attempt(runtime.defer, chaos_tasks.succeed, "next"))
            )
            waiter.start()
            wait_until_waiting_for_room(runtime)  # as long as it takes: 1e300 s once overflowed
            chaos_tasks.GATE.set()
            waiter.join(10)
            assert first.result(5) == "first"
    finally:
        chaos_tasks.GATE.set()
        runtime.shutdown(timeout=5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], Deferred), outcome
    assert outcome[0].result(5) == "next"


def test_chaos_shutdown_timeout_past_any_clock_drains_and_returns() -> None:
    runtime = Runtime(Config(shutdown_timeout=1e300))
    handle = runtime.defer(chaos_tasks.identity, 1)
    with no_thread_dies():
        runtime.shutdown()
    assert handle.result(1) == 1


def test_chaos_journal_lease_past_any_clock_keeps_the_journal_serving(tmp_path: Path) -> None:
    runtime = Runtime(Config(journal=str(tmp_path / "journal.db"), journal_lease=1e300))
    try:
        with no_thread_dies():
            started = time.monotonic()
            handle = runtime.defer(chaos_tasks.identity, 1)
            assert time.monotonic() - started < PROMPT
            assert handle.result(5) == 1
            assert runtime.open_journal(timeout=5)
    finally:
        runtime.shutdown(timeout=5)
