"""How a call becomes a journal record, and a record a call again, if it may run here.

A record names its task and carries its arguments encoded (`_codec`) and the
options a process that takes it up needs. Taken up, it runs only if it is as
its writer signed it, its task is known to this application, and its pickled
arguments (if any) belong to a task that opted in to pickle.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import time
from typing import TYPE_CHECKING, Any

from .._codec import decode_arguments, encode_arguments, known_task, registered_name
from .._deferred import Deferred, Status
from .._results import CallFailure, CallResult, aware
from .schema import (
    CLAIMED,
    DONE,
    FAILED,
    FINISHED,
    HELD,
    QUARANTINED,
    SKIPPED,
    TAMPERED,
    UNKNOWN,
    malformed,
)
from .store import Record

if TYPE_CHECKING:
    from .._choices import ExecutorName
    from .._tasks import TaskOptions
    from .engine import Row
    from .store import Store

#: Times a record may be taken from a dead owner beyond its retries (a call that
#: kills its process must not crash-loop the service forever).
EXTRA_RECOVERIES = 3


class Quarantine(Exception):  # noqa: N818 -- a verdict on a record, never raised to users
    """A record that must not run: set aside, with the reason."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason


def make_record(deferred: Deferred[Any], serializer: str) -> Record:
    """The call as the journal stores it; `serializer` unless its task says otherwise.

    Raises:
        InvalidCallError: the function cannot be named, or its arguments encoded.
    """
    options = deferred.options
    name = registered_name(deferred.fn, deferred.name)
    serializer = options.serializer or serializer
    payload = encode_arguments(name, deferred.args, deferred.kwargs, serializer=serializer)
    record = Record(
        deferred.id,
        name,
        serializer,
        payload,
        _options_text(options, deferred.executor),
        options.retries + EXTRA_RECOVERIES,
    )
    record.not_before = record.run_after = deferred.start_at
    record.priority = options.priority
    record.keep_result = options.keep_result
    return record


def decode(store: Store, row: Row, serializer_default: str) -> Deferred[Any]:
    """The call a journal record stands for, if it may run in this process.

    Raises:
        Quarantine: it must not run (altered, unknown here, or undecodable).
    """
    try:
        return _decode(store, row, serializer_default)
    except Quarantine:
        raise
    except Exception as error:  # noqa: BLE001 -- whatever is wrong, the record is set aside
        raise Quarantine(
            TAMPERED, f"it cannot be decoded ({type(error).__name__}: {error})"
        ) from None


def _decode(store: Store, row: Row, serializer_default: str) -> Deferred[Any]:
    call_id, name, serializer = row["id"], row["name"], row["serializer"]
    problem = malformed(row)
    if problem is not None:
        raise Quarantine(TAMPERED, f"it was changed outside jumpqueue ({problem})")
    if not store.verify(row):
        raise Quarantine(TAMPERED, "its checksum does not match: it was changed outside jumpqueue")
    task = known_task(name)
    if task is None:
        raise Quarantine(
            UNKNOWN,
            f"{name} is not known to this application (decorate it with @jumpqueue.task, "
            f"or defer it once in this process); it runs once known, or with "
            f"`jumpqueue retry {call_id}`",
        )
    if serializer == "pickle" and "pickle" not in (
        task.task_options.serializer,
        serializer_default,
    ):
        raise Quarantine(TAMPERED, "its arguments are pickled, and its task does not opt in")
    options, executor = _options_from(task.task_options, row["options"])
    args, kwargs = decode_arguments(bytes(row["payload"]), serializer=serializer)
    deferred: Deferred[Any] = Deferred(
        name, task.fn, args, kwargs, options, executor, contextvars.Context(), call_id=call_id
    )
    deferred.attempts = row["attempts"]
    # Its time, if still to come, is the record's, not one counted from now.
    not_before = row["not_before"]
    deferred.start_at = not_before if not_before is not None and not_before > time.time() else None
    # What earlier attempts (in any process) left of the outcome.
    deferred.enqueued_at, deferred.started_at = row["created"], row["started"] or 0.0
    deferred.attempted_at = row["attempted"] or 0.0
    deferred.worker_ids = tuple(json.loads(row["workers"] or "[]"))
    deferred._failures = tuple((path, text) for path, text in json.loads(row["errors"] or "[]"))
    record = Record(call_id, name, serializer, b"", "", row["max_recoveries"])
    record.not_before = deferred.start_at
    record.priority, record.keep_result = options.priority, options.keep_result
    record.written = True
    record.handoff_fallbacks = row["handoff_fallbacks"]
    deferred._record = record
    return deferred


@functools.lru_cache(maxsize=256)
def _options_text(options: TaskOptions, executor: str) -> str:
    # What a process that takes the record up needs beyond the registered task.
    return json.dumps(
        {
            "executor": executor,
            "timeout": options.timeout,
            "retries": options.retries,
            "retry_backoff": options.retry_backoff,
            "retry_schedule": options.retry_schedule,
            "always": options.always,
            "on_handoff_error": options.on_handoff_error,
            "priority": options.priority,
            "keep_result": options.keep_result,
        },
        sort_keys=True,
    )


def _options_from(registered: TaskOptions, text: str) -> tuple[TaskOptions, ExecutorName]:
    stored = json.loads(text)
    executor = stored.pop("executor")
    # Its time is the record's `not_before`: the task's own delay is not counted again.
    options = dataclasses.replace(
        registered, delay=None, run_after=None, executor=executor, **stored
    )
    return options, executor


def read_result(row: Row) -> CallResult:
    """A record as `jumpqueue.result()` gives it, read from any process."""
    state, now = row["state"], time.time()
    status_text = row["status"]
    if status_text is not None and state in FINISHED:
        status = Status(status_text)
    elif state in _STATUS_OF_STATE:
        status = _STATUS_OF_STATE[state]
    elif row["not_before"] is not None and row["not_before"] > now:
        status = Status.SCHEDULED
    elif (
        state == CLAIMED and row["attempts"] > 0  # or between two attempts
    ):
        status = Status.RUNNING
    else:
        status = Status.PENDING
    failures = tuple(CallFailure(*failure) for failure in json.loads(row["errors"] or "[]"))
    if not failures and row["error"] is not None and status.final:
        failures = (CallFailure("jumpqueue.JumpQueueError", row["error"]),)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    if row["serializer"] == "json":  # never unpickled here: reading is not running
        with contextlib.suppress(Exception):
            args, kwargs = decode_arguments(bytes(row["payload"]), serializer="json")
    return CallResult(
        id=row["id"],
        name=row["name"],
        status=status,
        return_value=None if row["result"] is None else json.loads(row["result"]),
        errors=failures,
        attempts=row["attempts"],
        worker_ids=tuple(json.loads(row["workers"] or "[]")),
        enqueued_at=aware(row["created"]),
        started_at=aware(row["started"]),
        finished_at=aware(row["finished"]) if status.final else None,
        last_attempted_at=aware(row["attempted"]),
        args=args,
        kwargs=kwargs,
    )


_STATUS_OF_STATE = {
    DONE: Status.SUCCEEDED,
    FAILED: Status.FAILED,
    SKIPPED: Status.SKIPPED,
    QUARANTINED: Status.FAILED,
    HELD: Status.HELD,
}
