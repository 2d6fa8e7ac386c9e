"""A call's outcome as Django's `TaskResult`: statuses, errors naming why, attempts and times."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.tasks import TaskResult
from django.tasks.base import TaskError
from django.tasks.exceptions import TaskResultDoesNotExist

from jumpqueue import Status

from ._running import FAILED, READY, RUNNING, SUCCESSFUL, local_time, task_errors, task_of

if TYPE_CHECKING:
    from jumpqueue import CallResult

#: jumpqueue's statuses as Django's. A call waiting in the journal, or handed to a
#: distributed engine (whose worker now runs it), has not run here: READY.
STATUSES = {
    Status.HELD: READY,
    Status.SCHEDULED: READY,
    Status.PENDING: READY,
    Status.JOURNALED: READY,
    Status.HANDED_OFF: READY,
    Status.RUNNING: RUNNING,
    Status.SUCCEEDED: SUCCESSFUL,
    Status.FAILED: FAILED,
    Status.TIMED_OUT: FAILED,
    Status.SHED: FAILED,
    Status.SKIPPED: FAILED,
    Status.ABANDONED: FAILED,
}

#: Why a call that never ended by raising failed: the error its result then carries.
REASONS = {
    Status.TIMED_OUT: ("jumpqueue.TaskTimeoutError", "the task ran past its timeout"),
    Status.SHED: (
        "jumpqueue.TaskNotRunError",
        "the task was shed: jumpqueue's backlog was full (its queue's ON_OVERLOAD policy)",
    ),
    Status.SKIPPED: (
        "jumpqueue.TaskNotRunError",
        "the task was skipped: the request that enqueued it failed, or its "
        "transaction rolled back (a queue with ALWAYS runs them anyway)",
    ),
    Status.ABANDONED: (
        "jumpqueue.TaskNotRunError",
        "the task was abandoned: the server shut down before it ran, and no journal kept it",
    ),
}


def task_result(call: CallResult) -> TaskResult[..., Any]:
    """The `TaskResult` of a call that runs a Django task.

    Raises:
        TaskResultDoesNotExist: the call is not a Django task's, or what it was
            called with is not known here.
    """
    if len(call.args) != 3 or not isinstance(call.args[0], dict):  # noqa: PLR2004 -- run_task's
        raise TaskResultDoesNotExist(call.id)
    spec, args, kwargs = call.args
    try:
        task = task_of(spec)
    except (KeyError, TypeError, ValueError, ImportError) as error:
        raise TaskResultDoesNotExist(f"{call.id}: {error}") from error
    errors = task_errors(call.errors)
    reason = REASONS.get(call.status)
    if reason is not None and not (errors and _same_class(errors[-1], reason[0])):
        errors.append(TaskError(exception_class_path=reason[0], traceback=f"{reason[1]}\n"))
    status = STATUSES[call.status]
    finished = status in {SUCCESSFUL, FAILED}
    result = TaskResult(
        task=task,
        id=call.id,
        status=status,
        enqueued_at=local_time(call.enqueued_at),
        started_at=local_time(call.started_at),
        finished_at=local_time(call.finished_at) if finished else None,
        last_attempted_at=local_time(call.last_attempted_at),
        args=args,
        kwargs=kwargs,
        backend=spec["backend"],
        errors=errors,
        worker_ids=list(call.worker_ids),
    )
    if call.status is Status.SUCCEEDED:
        set_return_value(result, call.return_value)
    return result


def _same_class(error: TaskError, path: str) -> bool:
    # The core records its own exceptions by their private module's path.
    return error.exception_class_path.rpartition(".")[2] == path.rpartition(".")[2]


def set_return_value(result: TaskResult[..., Any], value: Any) -> None:
    """Set a frozen result's return value, as Django's own backends do."""
    object.__setattr__(result, "_return_value", value)
