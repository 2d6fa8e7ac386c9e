"""The names every strategy is spelt with: one registry for options, environment and settings.

Each choice is a `Literal` type, so that mypy catches a misspelt option, and a
tuple of its values, which validation, the environment variables and the
framework settings all check against.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What a full backlog does to a new call.
OverloadPolicy = Literal["wait", "reject", "drop", "inline", "spill"]
#: What a call does when its backend cannot take it: run here, spill to the journal, or fail.
HandoffPolicy = Literal["local", "journal", "raise"]
#: Where a call runs in this process.
ExecutorName = Literal["thread", "async", "process"]
#: How arguments that leave the process (journal, broker) are encoded.
Serializer = Literal["json", "pickle"]
#: How the "process" executor starts its children (see `multiprocessing`).
StartMethod = Literal["forkserver", "spawn", "fork"]
#: Where the "process" executor's children stand in the CPU scheduler, below the server.
ProcessPriority = Literal["idle", "low", "normal"]
#: How the journal syncs its commits: FULL survives power loss, NORMAL only a crash.
JournalSynchronous = Literal["FULL", "NORMAL"]
#: What happens to a call that cannot be journaled (see `Config.on_journal_error`).
JournalErrorPolicy = Literal["memory", "overload"]
#: How the wait before each retry grows: doubling from `retry_backoff`, or always the same.
RetrySchedule = Literal["exponential", "fixed"]
#: The overload policies that shed a call, as `Stats.shed` counts them.
ShedPolicy = Literal["drop", "reject"]

OVERLOAD_POLICIES: tuple[OverloadPolicy, ...] = get_args(OverloadPolicy)
HANDOFF_POLICIES: tuple[HandoffPolicy, ...] = get_args(HandoffPolicy)
EXECUTOR_NAMES: tuple[ExecutorName, ...] = get_args(ExecutorName)
SERIALIZERS: tuple[Serializer, ...] = get_args(Serializer)
START_METHODS: tuple[StartMethod, ...] = get_args(StartMethod)
PROCESS_PRIORITIES: tuple[ProcessPriority, ...] = get_args(ProcessPriority)
JOURNAL_SYNCHRONOUS: tuple[JournalSynchronous, ...] = get_args(JournalSynchronous)
JOURNAL_ERROR_POLICIES: tuple[JournalErrorPolicy, ...] = get_args(JournalErrorPolicy)
SHED_POLICIES: tuple[ShedPolicy, ...] = get_args(ShedPolicy)
RETRY_SCHEDULES: tuple[RetrySchedule, ...] = get_args(RetrySchedule)

#: Backend engines (the part of a backend URL before "+"): "module:class" of each, and its extra.
BACKENDS: dict[str, tuple[str, str]] = {
    "rq": ("jumpqueue.backends.rq:RQBackend", "rq"),
    "celery": ("jumpqueue.backends.celery:CeleryBackend", "celery"),
}
#: The broker schemes each engine's URLs may name (None: any; its library checks them when
#: the backend opens). RQ speaks to Redis only.
BACKEND_SCHEMES: dict[str, tuple[str, ...] | None] = {
    "rq": ("redis", "rediss", "unix"),
    "celery": None,
}
