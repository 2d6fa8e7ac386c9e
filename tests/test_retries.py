from __future__ import annotations

import threading
import time

import pytest

import jumpqueue
import jumpqueue.testing
from jumpqueue import Status, TaskTimeoutError, task

from .conftest import RuntimeFactory


class Flaky:
    """Fails `failures` times with `error`, then returns the attempt number."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.times: list[float] = []

    def __call__(self) -> int:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.calls <= self.failures:
            raise self.error(f"attempt {self.calls}")
        return self.calls


def test_retries_until_success(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    flaky = Flaky(failures=2)
    deferred = runtime.defer(task(flaky).options(retries=3, retry_backoff=0))
    assert deferred.result(timeout=5) == 3
    assert deferred.attempts == 3
    stats = runtime.stats()
    assert stats.retried == 2
    assert stats.started == 3
    assert stats.succeeded == 1
    assert stats.failed == 0


def test_retries_n_means_n_more_attempts_then_failed(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    flaky = Flaky(failures=100)
    deferred = runtime.defer(task(flaky).options(retries=2, retry_backoff=0))
    with pytest.raises(ConnectionError, match="attempt 3"):
        deferred.result(timeout=5)
    assert flaky.calls == 3
    assert deferred.status is Status.FAILED
    assert runtime.stats().retried == 2


def test_retries_only_for_the_named_exceptions(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    flaky = Flaky(failures=5, error=ValueError)
    retrying = task(flaky).options(retries=3, retry_backoff=0, retry_on=(ConnectionError,))
    with pytest.raises(ValueError, match="attempt 1"):
        runtime.defer(retrying).result(timeout=5)
    assert flaky.calls == 1
    assert runtime.stats().retried == 0


def test_retries_back_off_exponentially_with_jitter(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    flaky = Flaky(failures=2)
    runtime.defer(task(flaky).options(retries=2, retry_backoff=0.04)).result(timeout=5)
    first_gap = flaky.times[1] - flaky.times[0]
    second_gap = flaky.times[2] - flaky.times[1]
    # Jitter keeps each delay within [0.5, 1] x backoff * 2**(n-1).
    assert first_gap >= 0.02
    assert second_gap >= 0.04


def test_retries_wait_without_holding_a_worker(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=1)
    flaky = Flaky(failures=1)
    retrying = runtime.defer(task(flaky).options(retries=1, retry_backoff=10))
    while flaky.calls == 0:
        retrying.wait(0.005)
    # The only worker is free while the retry waits its backoff.
    assert runtime.defer(int, "3").result(timeout=5) == 3
    stats = runtime.stats()
    assert stats.pending == 1  # the retry wait counts as pending
    assert retrying.status is Status.PENDING
    runtime.shutdown(timeout=0)  # not the backoff, nor a drain's seconds: abandoned now
    assert (retrying.status, runtime.stats().abandoned) == (Status.ABANDONED, 1)


def test_retries_apply_to_timeouts(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_stuck_threads=4)
    release = threading.Event()
    attempts: list[int] = []

    def slow_first() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            release.wait(10)
        return "ok"

    deferred = runtime.defer(task(slow_first).options(timeout=0.1, retries=1, retry_backoff=0))
    assert deferred.result(timeout=5) == "ok"
    assert deferred.attempts == 2
    release.set()


def test_retries_exhausted_on_timeouts_end_timed_out(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_stuck_threads=4)
    release = threading.Event()
    deferred = runtime.defer(
        task(release.wait).options(timeout=0.05, retries=1, retry_backoff=0), 10
    )
    with pytest.raises(TaskTimeoutError):
        deferred.result(timeout=5)
    assert deferred.attempts == 2
    assert runtime.stats().timed_out == 1
    release.set()


def test_retries_fixed_schedule_waits_the_same_backoff_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    attempts: list[int] = []

    @jumpqueue.task(retries=3, retry_backoff=1.0, retry_schedule="fixed")
    def send() -> None:
        attempts.append(1)
        if len(attempts) <= 3:
            raise ConnectionError("the SMTP server is down")

    with jumpqueue.testing.immediate(sleep_backoff=True):
        handle = send.defer()
    assert (handle.status, handle.attempts) == (Status.SUCCEEDED, 4)  # retries=3: 4 in all
    assert slept == [1.0, 1.0, 1.0]


def test_retries_exponential_schedule_doubles_with_jitter() -> None:
    options = jumpqueue.TaskOptions(retry_backoff=2.0)
    assert [options.retry_delay(n, jitter=False) for n in range(4)] == [2.0, 4.0, 8.0, 16.0]
    assert all(1.0 <= options.retry_delay(0) <= 2.0 for _ in range(50))
    with pytest.raises(jumpqueue.ConfigurationError, match="retry_schedule"):
        jumpqueue.TaskOptions(retry_schedule="linear")  # type: ignore[arg-type]


def test_retries_exponential_backoff_is_capped_however_many_retries_were_done() -> None:
    options = jumpqueue.TaskOptions(retry_backoff=0.0)
    assert options.retry_delay(5000, jitter=False) == 0.0
    options = jumpqueue.TaskOptions(retry_backoff=1.0)
    assert options.retry_delay(1024, jitter=False) == options.retry_delay(10**9, jitter=False)
    assert options.retry_delay(10**9, jitter=False) == 300.0


def test_retries_above_a_thousand_run_to_their_end(make_runtime: RuntimeFactory) -> None:
    # Past 1024 retries the doubling once overflowed a float, killed the worker thread
    # and left the call running for ever.
    runtime = make_runtime(max_workers=1)
    flaky = Flaky(failures=1100)
    deferred = runtime.defer(task(flaky).options(retries=1100, retry_backoff=0.0))
    assert deferred.result(timeout=20) == 1101
    assert runtime.stats().retried == 1100
