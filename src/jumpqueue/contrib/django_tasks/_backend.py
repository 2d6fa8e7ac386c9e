"""`JumpQueueBackend`: Django's Tasks API on jumpqueue's pools, journal and request scopes."""

from __future__ import annotations

import asyncio
import datetime
import inspect
from collections.abc import Sequence
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.checks import CheckMessage
from django.tasks import Task, TaskResult
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

import jumpqueue
from jumpqueue.integration import current_scope

from .._settings import apply_settings
from . import _checks as checks
from ._commit import EnqueueScope, release_on_commit
from ._options import BackendOptions, parse_options
from ._results import task_result
from ._running import READY, arun_task, local_time, run_task, spec_of

P = ParamSpec("P")
R = TypeVar("R")

#: The settings last applied to the default runtime.
_applied: dict[str, dict[str, object]] = {}


class JumpQueueBackend(BaseTaskBackend):
    """Runs Django tasks in this process after the response, with jumpqueue's safety rails.

    Set up in `TASKS` (see docs/django-tasks.md); `settings.JUMPQUEUE`
    configures the runtime, as for the middleware (a `JOURNAL` makes results
    readable from every process on the host, and tasks survive restarts).

    Attributes:
        supports_get_result: true with a journal (results by id from any process
            on the host that opens it, kept for `journal_retention`); without
            one, `get_result()` finds only the results this process keeps.
    """

    supports_defer = True
    supports_async_task = True
    supports_priority = True
    supports_get_result = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        raw = getattr(settings, "JUMPQUEUE", None) or {}
        # Django makes a backend per thread: the runtime follows the settings once, so
        # that one configured by hand since (a test's) is not replaced by each thread.
        if raw != _applied.get("JUMPQUEUE"):
            apply_settings(raw, source="settings.JUMPQUEUE")
            _applied["JUMPQUEUE"] = dict(raw)
        self.parsed: BackendOptions = parse_options(alias, self.options, self.queues)
        self.journaled = checks.journal_configured()
        self.supports_get_result = self.parsed.keep_results and self.journaled
        self._calls: dict[tuple[str, str, int, bool], jumpqueue.Task[..., Any]] = {}

    def enqueue(
        self, task: Task[P, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """Defer the task: after the response inside a request, at once outside one.

        Raises:
            InvalidTask: the task does not fit this backend (queue, priority, run_after).
            TypeError, ValueError: an argument is not JSON (Django's message).
            jumpqueue.OverloadedError: the backlog is full and the queue's policy rejects.
        """
        self.validate_task(task)
        result = TaskResult(
            task=task,
            id="",
            status=READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        call = self._call(task)
        # Held until its signal is sent: receivers see it before it may start.
        scope = EnqueueScope()
        token = scope.activate()
        try:
            deferred = call.defer(spec_of(task), result.args, result.kwargs)
        finally:
            scope.deactivate(token)
        object.__setattr__(result, "id", deferred.id)
        enqueued_at = datetime.datetime.fromtimestamp(deferred.enqueued_at, datetime.timezone.utc)
        object.__setattr__(result, "enqueued_at", local_time(enqueued_at))
        try:
            task_enqueued.send(type(self), task_result=result)
        except BaseException:
            scope.roll_back()
            raise
        release_on_commit(scope, self.parsed.on_commit)
        return result

    async def aenqueue(
        self, task: Task[P, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """`enqueue()` on the event loop, so that a coroutine task runs on this loop.

        With `ENQUEUE_ON_COMMIT` it goes through `sync_to_async`, as database work
        must; outside a request with a journal, through a thread, so that the
        journal's commit does not block the loop.
        """
        if self.parsed.on_commit is not None:
            return await super().aenqueue(task, list(args), kwargs)
        if self.journaled and current_scope() is None:
            return await asyncio.to_thread(self.enqueue, task, args, kwargs)
        return self.enqueue(task, args, kwargs)

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """The task's result by id, from this process or, with a journal, any on the host.

        Raises:
            TaskResultDoesNotExist: no such call is known (kept for `journal_retention`).
        """
        call = jumpqueue.result(str(result_id))
        if call is None:
            raise TaskResultDoesNotExist(result_id)
        return task_result(call)

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        """`get_result()` in a thread: reading the journal blocks."""
        return await sync_to_async(self.get_result, thread_sensitive=False)(result_id)

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        """The middleware, and a journal where results or several workers need one."""
        return [
            *super().check(**kwargs),
            *checks.check_backend(self.alias, keep_results=self.parsed.keep_results),
        ]

    def _call(self, task: Task[..., Any]) -> jumpqueue.Task[..., Any]:
        """The jumpqueue task that runs this Django task, with its queue's options."""
        is_coroutine = inspect.iscoroutinefunction(task.func)
        key = (task.module_path, task.queue_name, task.priority, is_coroutine)
        call = self._calls.get(key)
        if call is None:
            options = self.parsed.for_queue(task.queue_name)
            runner = arun_task if is_coroutine else run_task
            call = runner.options(
                name=task.module_path,
                executor="async" if is_coroutine else options.executor,
                timeout=options.timeout,
                retries=options.retries,
                retry_backoff=options.retry_backoff,
                on_overload=options.on_overload,
                always=options.always,
                priority=task.priority,
                keep_result=self.parsed.keep_results,
            )
            self._calls[key] = call
        if task.run_after is not None:
            run_after = task.run_after
            if timezone.is_naive(run_after):  # only without USE_TZ: Django's validation
                run_after = timezone.make_aware(run_after)
            call = call.options(run_after=run_after)
        return call
