"""The message a handed-off call travels in, and how a worker of any engine runs it.

A message is plain JSON data: the task's registered name and import path, the
arguments encoded by `_codec` (JSON text, or base64 pickle when the task opted
in), the carried request context, the observers' carrier (`headers`: trace
context), and the retry rules the worker applies.
"""

from __future__ import annotations

import base64
import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _observe
from .._codec import decode_arguments, encode_arguments, registered_name
from .._tasks import import_path
from .._tasks import retry_delay as retry_delay_of
from ..context import carried, restored
from ..executors._base import call_to_completion

if TYPE_CHECKING:
    from .._choices import RetrySchedule
    from .._config import Config
    from .._deferred import Deferred

logger = logging.getLogger("jumpqueue")

#: Bumped when a field changes meaning; a worker refuses versions it does not know.
VERSION = 1


def serializer_for(deferred: Deferred[Any], config: Config) -> str:
    """How the call's arguments are encoded: the task's choice, the runtime's, else JSON."""
    # The runtime-wide setting arrives with the journal; until then a task opts in alone.
    return deferred.options.serializer or getattr(config, "serializer", None) or "json"


def timeout_for(deferred: Deferred[Any], config: Config) -> float | None:
    """Seconds the engine may let one attempt run, or None for no limit."""
    timeout = deferred.options.timeout or config.task_timeout
    return None if timeout is None or timeout == float("inf") else timeout


def build(deferred: Deferred[Any], *, serializer: str) -> dict[str, Any]:
    """The message for a call, or `InvalidCallError` if it cannot leave the process."""
    name = registered_name(deferred.fn, deferred.name)
    data = encode_arguments(name, deferred.args, deferred.kwargs, serializer=serializer)
    options = deferred.options
    retry_on = options.retry_on if isinstance(options.retry_on, tuple) else (options.retry_on,)
    return {
        "v": VERSION,
        "id": deferred.id,
        "name": name,
        "path": import_path(deferred.fn),
        "serializer": serializer,
        "arguments": data.decode() if serializer == "json" else base64.b64encode(data).decode(),
        "context": carried(deferred.context),
        "headers": dict(deferred._observed.carrier) if deferred._observed is not None else {},
        "retries": options.retries,
        "retry_backoff": options.retry_backoff,
        "retry_schedule": options.retry_schedule,
        "retry_on": [import_path(kind) for kind in retry_on],
    }


def arguments(
    message: Mapping[str, Any], *, accept_pickle: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments, decoded.

    Raises:
        ValueError: the message is of an unknown version, or carries pickle
            where the worker does not accept it.
    """
    if message.get("v") != VERSION:
        raise ValueError(f"jumpqueue message version {message.get('v')!r} is not {VERSION}")
    serializer = message["serializer"]
    if serializer == "json":
        return decode_arguments(message["arguments"].encode(), serializer="json")
    if serializer == "pickle" and accept_pickle:
        data = base64.b64decode(message["arguments"])
        return decode_arguments(data, serializer="pickle")
    raise ValueError(f"{message['name']}: arguments as {serializer!r} are not accepted here")


def run(
    message: Mapping[str, Any],
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    attempt: int = 1,
    destination: str = "",
) -> Any:
    """Call `function` with the decoded arguments, inside the message's carried request context.

    Observers are told of the attempt (number `attempt`, from the engine's
    `destination`), with the carrier the message brought.
    """
    with restored(message.get("context") or {}):
        if not _observe.observers:
            return call_to_completion(function, args, kwargs)
        # What observers set in the context (the current span) stays with this attempt.
        return contextvars.copy_context().run(
            _run_observed, message, function, args, kwargs, attempt, destination
        )


def _run_observed(  # noqa: PLR0917 -- the arguments of run(), passed through Context.run
    message: Mapping[str, Any],
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempt: int,
    destination: str,
) -> Any:
    headers = message.get("headers")
    carrier = (
        {k: v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(headers, Mapping)
        else {}
    )
    call = _observe.ObservedCall(str(message["id"]), str(message["name"]), destination, carrier)
    started = _observe.attempt_started(call, attempt)
    try:
        result = call_to_completion(function, args, kwargs)
    except BaseException as error:
        _observe.attempt_finished(started, call, attempt, "failed", error)
        raise
    _observe.attempt_finished(started, call, attempt, "succeeded", None)
    return result


def should_retry(message: Mapping[str, Any], error: BaseException) -> bool:
    """True if the task retries on this kind of error (matched by class import paths)."""
    names = set(message.get("retry_on") or ())
    return any(import_path(kind) in names for kind in type(error).__mro__)


def retry_delay(message: Mapping[str, Any], retries_done: int, *, jitter: bool) -> float:
    """Seconds before retry number `retries_done + 1`, by the task's retry schedule."""
    backoff = float(message.get("retry_backoff") or 0.0)
    schedule: RetrySchedule = "fixed" if message.get("retry_schedule") == "fixed" else "exponential"
    return retry_delay_of(backoff, schedule, retries_done, jitter=jitter)
