"""Functions and tasks the chaos tests defer: quick ones that succeed, fail, retry or wait.

Each records its runs by a token, so that a test can tell a call that ran
twice from one that ran once. They are module-level, so that the journal and
a backend may name them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import jumpqueue

_lock = threading.Lock()
#: Runs (attempts included) by token.
RUNS: collections.Counter[str] = collections.Counter()
#: What calls that wait for it wait on; set by default, cleared by a test that holds them.
GATE = threading.Event()
GATE.set()


def ran(token: str) -> None:
    with _lock:
        RUNS[token] += 1


def reset() -> None:
    with _lock:
        RUNS.clear()
    GATE.set()


def identity(value: Any = None) -> Any:
    return value


def add(a: Any, b: Any) -> Any:
    return a + b


def fails(*args: Any, **kwargs: Any) -> None:
    raise ValueError(f"fails on purpose: {args!r} {kwargs!r}")


async def coroutine_identity(value: Any = None) -> Any:
    await asyncio.sleep(0)
    return value


def generator(value: Any = None) -> Any:
    yield value


class BrokenRepr:
    """A value whose repr() raises, as some users' objects do."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("BrokenRepr()")  # how hypothesis shows it in a failing example


class CallableObject:
    def __call__(self, value: Any = None) -> Any:
        return value

    def method(self, value: Any = None) -> Any:
        return value


@jumpqueue.task
def succeed(token: str) -> str:
    ran(token)
    return token


@jumpqueue.task
def fail(token: str) -> None:
    ran(token)
    raise ValueError(f"fail {token}")


@jumpqueue.task(retries=2, retry_backoff=0)
def fail_then_succeed(token: str) -> str:
    ran(token)
    if RUNS[token] < 2:
        raise ValueError(f"first attempt of {token}")
    return token


@jumpqueue.task(retries=1, retry_backoff=0)
def fail_twice(token: str) -> None:
    ran(token)
    raise ValueError(f"fail_twice {token}")


@jumpqueue.task(timeout=0.05)
def outlive_timeout(token: str) -> None:
    ran(token)
    GATE.wait(2)


@jumpqueue.task
def wait_for_gate(token: str) -> str:
    ran(token)
    GATE.wait(10)
    return token


@jumpqueue.task
async def succeed_async(token: str) -> str:
    ran(token)
    await asyncio.sleep(0)
    return token
