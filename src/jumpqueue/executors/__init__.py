"""Executors by name: the one registry that `executor="..."` spellings go through."""

from __future__ import annotations

from collections.abc import Callable

from .._config import Config
from ._base import Attempt, Executor, ExecutorHost
from .asyncio import AsyncExecutor
from .thread import ThreadExecutor

#: How each executor name is built; a later executor adds itself here.
EXECUTORS: dict[str, Callable[[Config, ExecutorHost], Executor]] = {
    "thread": ThreadExecutor,
    "async": AsyncExecutor,
}

__all__ = ["EXECUTORS", "AsyncExecutor", "Attempt", "Executor", "ExecutorHost", "ThreadExecutor"]
