"""jumpqueue: respond now, work after, with no queue server.

Defer the slow part of a request until its response has been sent, and run it
in bounded pools with timeouts, retries, an overload policy and a graceful
shutdown.
"""

from __future__ import annotations

from ._config import Config
from ._default import configure, defer, get_runtime, result, shutdown, stats, submit
from ._deferred import Deferred, Status
from ._exceptions import (
    ConfigurationError,
    HandOffError,
    InvalidCallError,
    InvalidResponseError,
    JournalError,
    JumpQueueError,
    MemoryLimitError,
    MiddlewareMissingError,
    OverloadedError,
    RemoteTaskError,
    ResponseStartedError,
    ResultNotPortableError,
    RuntimeClosedError,
    TaskExitError,
    TaskNotRunError,
    TaskTimeoutError,
    WaitDeadlockError,
    WorkerCrashedError,
)
from ._results import CallFailure, CallResult, current_attempt, current_call_id
from ._runtime import Runtime
from ._stats import Stats
from ._tasks import Task, TaskOptions, task
from ._web.finish import afinish_request, finish_request

__all__ = [
    "CallFailure",
    "CallResult",
    "Config",
    "ConfigurationError",
    "Deferred",
    "HandOffError",
    "InvalidCallError",
    "InvalidResponseError",
    "JournalError",
    "JumpQueueError",
    "MemoryLimitError",
    "MiddlewareMissingError",
    "OverloadedError",
    "RemoteTaskError",
    "ResponseStartedError",
    "ResultNotPortableError",
    "Runtime",
    "RuntimeClosedError",
    "Stats",
    "Status",
    "Task",
    "TaskExitError",
    "TaskNotRunError",
    "TaskOptions",
    "TaskTimeoutError",
    "WaitDeadlockError",
    "WorkerCrashedError",
    "afinish_request",
    "configure",
    "current_attempt",
    "current_call_id",
    "defer",
    "finish_request",
    "get_runtime",
    "result",
    "shutdown",
    "stats",
    "submit",
    "task",
]

__version__ = "0.1.0"
