"""Shared fixtures: a fresh default runtime per test, and runtimes that always shut down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Config, Runtime

RuntimeFactory = Callable[..., Runtime]


def wait_until_waiting_for_room(runtime: Runtime, count: int = 1, timeout: float = 5.0) -> None:
    """Block until `count` callers are blocked in the "wait" overload policy."""
    deadline = time.monotonic() + timeout
    while runtime._ledger.waiting_for_room < count:  # no public signal for this: read the gauge
        if time.monotonic() > deadline:
            raise AssertionError(f"no caller waited for room within {timeout} s")
        threading.Event().wait(0.001)


@pytest.fixture(autouse=True)
def default_runtime() -> Iterator[Runtime]:
    """Each test gets its own default runtime, shut down after it."""
    runtime = jumpqueue.configure(Config())
    yield runtime
    runtime.shutdown(timeout=5)


@pytest.fixture
def use_runtime() -> Iterator[RuntimeFactory]:
    """Make the default runtime one with these options; each is shut down after the test."""
    made: list[Runtime] = []

    def use(**options: Any) -> Runtime:
        runtime = jumpqueue.configure(Config(**options))
        made.append(runtime)
        return runtime

    yield use
    for runtime in made:
        runtime.shutdown(timeout=10)


@pytest.fixture
def make_runtime() -> Iterator[RuntimeFactory]:
    """Build runtimes from config options; every one is shut down after the test."""
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        runtime = Runtime(Config(**options))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.shutdown(timeout=5)
