"""The stats invariant under random mixes of success, failure, timeout, retry, shed and shutdown.

At every step `submitted == finished + in_flight`; at the end, each accepted
call is counted once, in exactly one final state, and ran no more often than
its task allows.
"""

from __future__ import annotations

import collections
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from jumpqueue import Config, Deferred, OverloadedError, Runtime, RuntimeClosedError, Status, Task
from jumpqueue.integration import RequestScope

from . import chaos_tasks
from .test_chaos_api import account_for

#: What a call does, by name: its task, and the most runs it may make.
KINDS: dict[str, tuple[Task[..., Any], int]] = {
    "succeed": (chaos_tasks.succeed, 1),
    "fail": (chaos_tasks.fail, 1),
    "retry then succeed": (chaos_tasks.fail_then_succeed, 2),
    "retry and fail": (chaos_tasks.fail_twice, 2),
    "time out": (chaos_tasks.outlive_timeout, 1),
    "wait for the gate": (chaos_tasks.wait_for_gate, 1),
    "coroutine": (chaos_tasks.succeed_async, 1),
}
#: Kinds that may block whoever runs them (the "inline" policy would block the test).
_BLOCKING = {"time out", "wait for the gate"}


class StatsMix(RuleBasedStateMachine):
    """Calls of every kind, in and out of requests, against a small backlog, then a shutdown."""

    #: Subclasses with a journal add the "spill" policy.
    journaled: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        chaos_tasks.reset()
        self.directory = Path(tempfile.mkdtemp(prefix="jumpqueue-stats-"))
        self.handles: list[tuple[str, str, Deferred[Any]]] = []
        self.rejected = 0
        self.requests: list[RequestScope] = []
        self.tokens = (f"call-{n}" for n in itertools.count())
        self.closed = False

    @initialize(
        workers=st.integers(1, 3),
        pending=st.integers(1, 6),
        policy=st.sampled_from(["reject", "drop", "wait"]),
        stuck=st.integers(0, 2),
    )
    def start(self, workers: int, pending: int, policy: str, stuck: int) -> None:
        journal = str(self.directory / "journal.db") if self.journaled else None
        self.runtime = Runtime(
            Config(
                max_workers=workers,
                max_async=workers,
                max_pending=pending,
                on_overload=policy,  # type: ignore[arg-type]
                overload_wait=0.01,
                max_queue_wait=None,
                max_stuck_threads=stuck,
                journal=journal,
            )
        )

    @rule(
        kind=st.sampled_from(sorted(KINDS)),
        policy=st.sampled_from([None, "reject", "drop", "inline", "wait", "spill"]),
        in_request=st.booleans(),
        submit=st.booleans(),
    )
    def call(self, kind: str, policy: str | None, in_request: bool, submit: bool) -> None:
        task, _ = KINDS[kind]
        if policy == "spill" and not self.journaled:
            policy = "drop"
        if policy == "inline" and kind in _BLOCKING:
            policy = "reject"
        if policy is not None:
            task = task.options(on_overload=policy)  # type: ignore[arg-type]
        token = next(self.tokens)
        scope = self.requests[-1] if in_request and self.requests else None
        context = scope.activate() if scope is not None else None
        try:
            how = self.runtime.submit if submit else self.runtime.defer
            self.handles.append((kind, token, how(task, token)))
        except OverloadedError:
            self.rejected += 1
        except RuntimeClosedError:
            assert self.closed
        finally:
            if scope is not None and context is not None:
                scope.deactivate(context)

    @rule()
    def open_request(self) -> None:
        self.requests.append(RequestScope())

    @precondition(lambda self: self.requests)
    @rule(succeeded=st.booleans(), first=st.booleans())
    def end_request(self, succeeded: bool, first: bool) -> None:
        scope = self.requests.pop(0 if first else -1)
        scope.seal()
        scope.release(succeeded=succeeded)

    @rule(open_it=st.booleans())
    def gate(self, open_it: bool) -> None:
        if open_it:
            chaos_tasks.GATE.set()
        else:
            chaos_tasks.GATE.clear()

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def wait_for_one(self, index: int) -> None:
        _, _, handle = self.handles[index % len(self.handles)]
        handle.wait(0.2)  # lets timeouts and retries happen between steps

    @rule(timeout=st.sampled_from([0.0, 0.05]))
    def shutdown(self, timeout: float) -> None:
        self.closed = True
        self.runtime.shutdown(timeout=timeout)
        stats = self.runtime.stats()
        assert stats.in_flight == stats.held, stats  # what requests still hold waits for them

    @invariant()
    def adds_up(self) -> None:
        if hasattr(self, "runtime"):
            stats = self.runtime.stats()
            assert stats.submitted == stats.finished + stats.in_flight, stats

    def teardown(self) -> None:
        try:
            if hasattr(self, "runtime"):
                self._settle()
        finally:
            chaos_tasks.GATE.set()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _settle(self) -> None:
        chaos_tasks.GATE.set()
        for scope in self.requests:
            scope.release(succeeded=True)
        self.runtime.shutdown(timeout=10)
        handles = [handle for _, _, handle in self.handles]
        account_for(self.runtime, handles, self.rejected)
        runs = collections.Counter(chaos_tasks.RUNS)
        for kind, token, handle in self.handles:
            allowed = KINDS[kind][1]
            assert runs[token] <= allowed, (kind, handle, runs[token])
            if handle.status in (Status.SHED, Status.SKIPPED):
                assert runs[token] == 0, (kind, handle, runs[token])
            if handle.status is Status.SUCCEEDED:
                assert runs[token] >= 1, (kind, handle)


TestStatsMix = StatsMix.TestCase
