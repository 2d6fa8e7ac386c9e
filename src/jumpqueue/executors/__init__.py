"""Executors by name: the one registry that `executor="..."` spellings go through."""

from __future__ import annotations

# Imported before any runtime registers its exit handler, so that multiprocessing's own
# (which joins child processes) runs after the runtimes have stopped theirs: atexit runs
# handlers in reverse order. The rest of multiprocessing loads with the process executor.
import multiprocessing.util  # noqa: F401
from collections.abc import Callable

from .._choices import ExecutorName
from .._config import Config
from ._base import Attempt, Executor, ExecutorHost
from .asyncio import AsyncExecutor
from .thread import ThreadExecutor


def _process_executor(config: Config, host: ExecutorHost) -> Executor:
    # Loaded on first use: `import jumpqueue` stays light for those who never need it.
    from .process import ProcessExecutor  # noqa: PLC0415

    return ProcessExecutor(config, host)


#: How each executor is built, by the names `_choices.EXECUTOR_NAMES` lists.
EXECUTORS: dict[ExecutorName, Callable[[Config, ExecutorHost], Executor]] = {
    "thread": ThreadExecutor,
    "async": AsyncExecutor,
    "process": _process_executor,
}

__all__ = ["EXECUTORS", "AsyncExecutor", "Attempt", "Executor", "ExecutorHost", "ThreadExecutor"]
