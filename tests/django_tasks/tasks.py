"""The Django tasks the backend's tests enqueue: module-level functions, as Django requires."""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
from typing import Any

from django.tasks import TaskContext, task


@task
def noop(*args: Any, **kwargs: Any) -> None:
    """Do nothing with any arguments."""


@task
async def anoop(*args: Any, **kwargs: Any) -> None:
    """Do nothing, as a coroutine."""


@task
def meaning() -> int:
    """A return value."""
    return 42


@task
async def ameaning() -> int:
    """A coroutine's return value."""
    return 42


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What it was called with, as a tuple JSON turns into a list."""
    return {"args": args, "kwargs": kwargs, "bytes": b"text"}


@task
def not_json() -> datetime.date:
    """A return value JSON cannot hold."""
    return datetime.date(2026, 1, 1)


@task
def fail_value_error() -> None:
    """Raise an exception."""
    raise ValueError("the task failed with ValueError")


@task
def fail_system_exit() -> None:
    """Raise SystemExit."""
    raise SystemExit("the task failed with SystemExit")


@task
def fail_keyboard_interrupt() -> None:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt("the task failed with KeyboardInterrupt")


@task
def fail_nested() -> None:
    """Raise an exception that holds another."""
    raise ValueError(ValueError("nested"))


@task(takes_context=True)
def own_id(context: TaskContext[..., Any]) -> str:
    """The id of its own result, as the context gives it."""
    return context.task_result.id


@task(takes_context=True)
def attempt_of(context: TaskContext[..., Any], fail_until: int) -> int:
    """Its attempt number; fails until attempt `fail_until`."""
    if context.attempt < fail_until:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


#: Opened by the test to let `wait_gate` return.
gate = threading.Event()
#: Set by `wait_gate` as it starts.
started = threading.Event()
#: What `record` was called with, in the order the calls ran.
recorded: list[str] = []


@task
def wait_gate() -> bool:
    """Hold a worker until the test opens the gate (at most 10 s)."""
    started.set()
    return gate.wait(10)


@task
def record(tag: str) -> str:
    """Note that it ran."""
    recorded.append(tag)
    return tag


@task
async def arecord(tag: str) -> int:
    """Note that it ran, on an event loop: which one (its id)."""
    recorded.append(tag)
    return id(asyncio.get_running_loop())


@task
def write(path: str, text: str) -> None:
    """Write a file, with the writer's pid: a side effect another process can see."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"{text} by {os.getpid()}")
