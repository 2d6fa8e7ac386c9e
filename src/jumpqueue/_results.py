"""What a call ended with, readable by its id (`CallResult`), and the call running now."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import json
import os
import socket
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._deferred import Status
from ._exceptions import ResultNotPortableError

if TYPE_CHECKING:
    from ._deferred import Deferred

#: The call running in this context, as (id, attempt number); set around each attempt.
running_call: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "jumpqueue_running_call", default=None
)


def current_call_id() -> str | None:
    """The id of the deferred call running here, or None outside one."""
    running = running_call.get()
    return None if running is None else running[0]


def current_attempt() -> int | None:
    """The attempt number (1 for the first) of the call running here, or None outside one."""
    running = running_call.get()
    return None if running is None else running[1]


@dataclasses.dataclass(frozen=True)
class CallFailure:
    """How one attempt of a call failed.

    Attributes:
        exception_class_path: the import path of the exception's class.
        traceback: the formatted traceback, as the process that ran it wrote it.
    """

    exception_class_path: str
    traceback: str

    @classmethod
    def of(cls, error: BaseException) -> CallFailure:
        """The failure an exception stands for."""
        kind = type(error)
        text = getattr(error, "traceback", None)  # a child process's, carried back
        if not isinstance(text, str):
            text = "".join(traceback.format_exception(kind, error, error.__traceback__))
        return cls(f"{kind.__module__}.{kind.__qualname__}", text)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallResult:
    """A call's outcome as known by its id (see `jumpqueue.result`).

    Attributes:
        id: the call's id (`Deferred.id`).
        name: its task's name.
        status: where it is now (`Status`); final once `status.final`.
        return_value: what it returned, as JSON gives it back (a tuple becomes
            a list); None until it succeeded.
        errors: how each failed attempt failed, oldest first.
        attempts: attempts started.
        worker_ids: who ran its attempts ("host:pid"), oldest first.
        enqueued_at, started_at, finished_at, last_attempted_at: timezone-aware
            (UTC) times; None until it happened. `started_at` is the first
            attempt's start, `last_attempted_at` the last one's.
        args, kwargs: what it was called with, when known here.
    """

    id: str
    name: str
    status: Status
    return_value: Any = None
    errors: tuple[CallFailure, ...] = ()
    attempts: int = 0
    worker_ids: tuple[str, ...] = ()
    enqueued_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    last_attempted_at: datetime.datetime | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def to_json(value: object) -> str:
    """The return value of a `keep_result` call as JSON.

    Raises:
        ResultNotPortableError: JSON cannot hold it; the message names the type.
    """
    try:
        return json.dumps(value, allow_nan=False, default=_refuse)
    except ResultNotPortableError:
        raise
    except (TypeError, ValueError, RecursionError) as error:  # keys, NaN, a cycle
        raise ResultNotPortableError(
            f"a kept result must be JSON, and this one is not ({error})",
            type_name=_path(type(value)),
        ) from None


def _refuse(value: object) -> object:
    kind = _path(type(value))
    raise ResultNotPortableError(
        f"a kept result must be JSON, and it holds a {kind}; return plain data "
        "(dict, list, str, int, float, bool, None)",
        type_name=kind,
    )


def _path(kind: type) -> str:
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


#: This host's name and this process's worker id, once looked up (again in a forked child).
_this_worker: tuple[str, str] | None = None


def worker_id(pid: int | None = None) -> str:
    """Who runs an attempt: "host:pid" (this process unless `pid` says which)."""
    global _this_worker  # noqa: PLW0603 -- looked up once per process
    if _this_worker is None:
        host = socket.gethostname()
        _this_worker = (host, f"{host}:{os.getpid()}")
    return _this_worker[1] if pid is None else f"{_this_worker[0]}:{pid}"


def _forget_worker() -> None:
    global _this_worker  # noqa: PLW0603 -- a forked child has a pid of its own
    _this_worker = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


def aware(timestamp: float | None) -> datetime.datetime | None:
    """A `time.time()` value as an aware UTC datetime; None for None or 0 (not yet)."""
    if not timestamp:
        return None
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


def from_memory(deferred: Deferred[Any]) -> CallResult:
    """What a call this process knows says of itself."""
    status = deferred.status
    value = None
    if status is Status.SUCCEEDED and deferred.options.keep_result:
        value = json.loads(to_json(deferred._result))
    return CallResult(
        id=deferred.id,
        name=deferred.name,
        status=status,
        return_value=value,
        errors=tuple(CallFailure(*failure) for failure in deferred._failures),
        attempts=deferred.attempts,
        worker_ids=deferred.worker_ids,
        enqueued_at=aware(deferred.enqueued_at),
        started_at=aware(deferred.started_at),
        finished_at=aware(deferred.finished_at),
        last_attempted_at=aware(deferred.attempted_at),
        args=deferred.args,
        kwargs=dict(deferred.kwargs),
    )
