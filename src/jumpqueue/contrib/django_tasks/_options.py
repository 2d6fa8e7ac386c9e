"""The backend's `OPTIONS`: defaults for every queue, per-queue overrides, enqueue on commit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.tasks.exceptions import InvalidTaskBackend

from jumpqueue import ConfigurationError, TaskOptions

#: Per-queue keys (also allowed at the top of `OPTIONS`, as every queue's default),
#: and the `TaskOptions` field each one sets.
QUEUE_KEYS = {
    "EXECUTOR": "executor",
    "TIMEOUT": "timeout",
    "RETRIES": "retries",
    "RETRY_BACKOFF": "retry_backoff",
    "ON_OVERLOAD": "on_overload",
    "ALWAYS": "always",
}
#: Keys only the top of `OPTIONS` takes.
TOP_KEYS = ("QUEUES", "ENQUEUE_ON_COMMIT", "KEEP_RESULTS")
#: Executors a queue may name; coroutine tasks always run on "async".
QUEUE_EXECUTORS = ("thread", "process")


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """`OPTIONS`, checked.

    Attributes:
        queues: task options by queue name; `default` for a queue not named.
        default: the task options of a queue `OPTIONS["QUEUES"]` does not name.
        on_commit: the database alias whose transaction an enqueue waits for, or
            None to enqueue at once.
        keep_results: whether outcomes are kept for `get_result()`.
    """

    queues: Mapping[str, TaskOptions]
    default: TaskOptions
    on_commit: str | None
    keep_results: bool

    def for_queue(self, name: str) -> TaskOptions:
        """The task options of a queue."""
        return self.queues.get(name, self.default)


def parse_options(alias: str, raw: object, queues: set[str]) -> BackendOptions:
    """Check a backend's `OPTIONS` and turn them into task options per queue.

    Raises:
        InvalidTaskBackend: an unknown key, a bad value, or a queue `QUEUES` lacks;
            the message names the backend and the key.
    """
    where = f"TASKS[{alias!r}]['OPTIONS']"
    if not isinstance(raw, Mapping):
        raise InvalidTaskBackend(f"{where} must be a dict, not {raw!r}")
    _refuse_unknown(where, raw, (*QUEUE_KEYS, *TOP_KEYS))
    default = _task_options(where, raw, {})
    per_queue = raw.get("QUEUES", {})
    if not isinstance(per_queue, Mapping):
        raise InvalidTaskBackend(f"{where}['QUEUES'] must be a dict, not {per_queue!r}")
    options: dict[str, TaskOptions] = {}
    for name, overrides in per_queue.items():
        here = f"{where}['QUEUES'][{name!r}]"
        if queues and name not in queues:
            raise InvalidTaskBackend(f"{here}: queue {name!r} is not in the backend's QUEUES")
        if not isinstance(overrides, Mapping):
            raise InvalidTaskBackend(f"{here} must be a dict, not {overrides!r}")
        _refuse_unknown(here, overrides, tuple(QUEUE_KEYS))
        options[name] = _task_options(here, overrides, raw)
    return BackendOptions(
        queues=options,
        default=default,
        on_commit=_on_commit(where, raw.get("ENQUEUE_ON_COMMIT", False)),
        keep_results=_flag(where, "KEEP_RESULTS", raw.get("KEEP_RESULTS", True)),
    )


def _refuse_unknown(where: str, raw: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            raise InvalidTaskBackend(f"{where}: unknown key {key!r}; known: {', '.join(known)}")


def _task_options(
    where: str, overrides: Mapping[str, Any], defaults: Mapping[str, Any]
) -> TaskOptions:
    merged = {**defaults, **overrides}
    values = {field: merged[key] for key, field in QUEUE_KEYS.items() if key in merged}
    executor = values.get("executor")
    if executor is not None and executor not in QUEUE_EXECUTORS:
        raise InvalidTaskBackend(
            f"{where}: EXECUTOR must be one of {', '.join(QUEUE_EXECUTORS)}, not {executor!r} "
            "(coroutine tasks always run on the async executor)"
        )
    try:
        return TaskOptions.build(**values)
    except ConfigurationError as error:
        raise InvalidTaskBackend(f"{where}: {error}") from None


def _on_commit(where: str, value: object) -> str | None:
    if value is True:
        return DEFAULT_DB_ALIAS
    if value is False or value is None:
        return None
    if isinstance(value, str) and value:
        return value
    raise InvalidTaskBackend(
        f"{where}: ENQUEUE_ON_COMMIT must be a bool or a database alias, not {value!r}"
    )


def _flag(where: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidTaskBackend(f"{where}: {key} must be a bool, not {value!r}")
    return value
