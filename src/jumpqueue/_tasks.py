"""Task options, the `@task` decorator, and the registry of functions known to the application."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import math
import random
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypedDict, TypeVar, overload

from ._choices import (
    EXECUTOR_NAMES,
    HANDOFF_POLICIES,
    OVERLOAD_POLICIES,
    RETRY_SCHEDULES,
    SERIALIZERS,
    ExecutorName,
    HandoffPolicy,
    OverloadPolicy,
    RetrySchedule,
    Serializer,
)
from ._config import check_choice, check_names, check_seconds, shown
from ._exceptions import ConfigurationError, InvalidCallError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._deferred import Deferred

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Longest wait between two retries, whatever the backoff doubles to.
MAX_RETRY_DELAY = 300.0
#: The range of `TaskOptions.priority` (Django's Tasks API uses the same).
MIN_PRIORITY, MAX_PRIORITY = -100, 100
#: Doublings past this many change nothing (2**64 seconds outlast any backoff's cap), and
#: `2**1024` would not even convert to a float.
_MAX_DOUBLINGS = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """How one task runs. Unset fields fall back to the runtime's configuration.

    Args:
        executor: "thread", "async", or None to choose by the function's kind.
        timeout: seconds one attempt may run; None for the runtime's
            `task_timeout`; `math.inf` for no limit at all. A call the
            "inline" policy runs in its caller cannot be stopped: it ends
            "timed_out" if it returns late.
        retries: further attempts after the first one fails (0 for none):
            `retries=3` makes at most 4 attempts in all.
        retry_backoff: seconds before the first retry (before every retry
            with `retry_schedule="fixed"`).
        retry_schedule: "exponential" (the default: the wait doubles with
            each retry, up to 300 s, less up to half of it at random, so that
            calls that failed together do not retry together), or "fixed"
            (`retry_backoff` seconds before every retry, exactly).
        retry_on: exception types that lead to a retry.
        on_overload: policy when the backlog is full, or None for the runtime's.
        always: run even when the request that deferred it failed.
        name: the task's name; by default the function's import path.
        serializer: how arguments leave the process (journal, broker): "json",
            or "pickle" to opt in; None for the runtime's setting.
        on_handoff_error: what happens when the backend cannot take the call:
            "local", "journal" or "raise"; None for the runtime's setting.
        priority: -100..100; among calls waiting for a worker of the same
            pool, higher ones start first (equal ones in the order they came).
        delay: seconds to wait, once admitted, before the call may start
            (status "scheduled" until then); None to start as soon as it can.
        run_after: the earliest time the call may start, a timezone-aware
            datetime; mutually exclusive with `delay`.
        keep_result: keep the call's outcome readable by id
            (`jumpqueue.result()`), in the journal for `journal_retention`;
            its return value must then be JSON (else it fails with
            `ResultNotPortableError`).

    Raises:
        ConfigurationError: an option is out of range; the message names it.
    """

    executor: ExecutorName | None = None
    timeout: float | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    retry_schedule: RetrySchedule = "exponential"
    retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,)
    on_overload: OverloadPolicy | None = None
    always: bool = False
    name: str | None = None
    serializer: Serializer | None = None
    on_handoff_error: HandoffPolicy | None = None
    priority: int = 0
    delay: float | None = None
    run_after: datetime.datetime | None = None
    keep_result: bool = False

    def __post_init__(self) -> None:
        if self.executor is not None:
            check_choice("executor", self.executor, EXECUTOR_NAMES)
        if self.timeout is not None and self.timeout != math.inf:
            check_seconds("timeout", self.timeout, allow_zero=False)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ConfigurationError(f"retries must be an int, not {shown(self.retries)}")
        if self.retries < 0:
            raise ConfigurationError(f"retries must be >= 0, not {shown(self.retries)}")
        check_seconds("retry_backoff", self.retry_backoff, allow_zero=True)
        check_choice("retry_schedule", self.retry_schedule, RETRY_SCHEDULES)
        retry_on: object = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            raise ConfigurationError(
                f"retry_on must be an exception type or a tuple of them, not {shown(retry_on)}"
            )
        if self.on_overload is not None:
            check_choice("on_overload", self.on_overload, OVERLOAD_POLICIES)
        if not isinstance(self.always, bool):
            raise ConfigurationError(f"always must be a bool, not {shown(self.always)}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigurationError(f"name must be a non-empty str, not {shown(self.name)}")
        if self.serializer is not None:
            check_choice("serializer", self.serializer, SERIALIZERS)
        if self.on_handoff_error is not None:
            check_choice("on_handoff_error", self.on_handoff_error, HANDOFF_POLICIES)
        self._check_timing()

    def _check_timing(self) -> None:
        priority = self.priority
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(f"priority must be an int, not {shown(priority)}")
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigurationError(
                f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {shown(priority)}"
            )
        if self.delay is not None:
            check_seconds("delay", self.delay, allow_zero=True)
        run_after = self.run_after
        if run_after is not None:
            if not isinstance(run_after, datetime.datetime):
                raise ConfigurationError(f"run_after must be a datetime, not {shown(run_after)}")
            if run_after.utcoffset() is None:
                raise ConfigurationError(
                    f"run_after must be timezone-aware, not the naive datetime {run_after}: "
                    "say which time zone it is in (datetime.timezone.utc, zoneinfo)"
                )
            if self.delay is not None:
                raise ConfigurationError("delay and run_after exclude each other; give one")
        if not isinstance(self.keep_result, bool):
            raise ConfigurationError(f"keep_result must be a bool, not {shown(self.keep_result)}")

    def start_at(self) -> float | None:
        """When a call deferred now may start, as a `time.time()` wall clock; None for at once."""
        if self.delay is not None:
            return time.time() + self.delay if self.delay > 0 else None
        if self.run_after is not None:
            return self.run_after.timestamp()
        return None

    @classmethod
    def build(cls, **values: Any) -> TaskOptions:
        """Like `TaskOptions(...)`, but an unknown name is a `ConfigurationError` naming it."""
        check_names(cls, values, "task option")
        return cls(**values)

    def retry_delay(self, retries_done: int, *, jitter: bool = True) -> float:
        """Seconds before retry number `retries_done + 1`, by `retry_schedule`."""
        return retry_delay(self.retry_backoff, self.retry_schedule, retries_done, jitter=jitter)


class TaskOptionValues(TypedDict, total=False):
    """`TaskOptions`' fields as keyword options (`@task(**options)`), for mypy to check."""

    executor: ExecutorName | None
    timeout: float | None
    retries: int
    retry_backoff: float
    retry_schedule: RetrySchedule
    retry_on: tuple[type[BaseException], ...] | type[BaseException]
    on_overload: OverloadPolicy | None
    always: bool
    name: str | None
    serializer: Serializer | None
    on_handoff_error: HandoffPolicy | None
    priority: int
    delay: float | None
    run_after: datetime.datetime | None
    keep_result: bool


DEFAULT_OPTIONS = TaskOptions()


def retry_delay(
    backoff: float, schedule: RetrySchedule, retries_done: int, *, jitter: bool
) -> float:
    """Seconds before retry number `retries_done + 1` (see `TaskOptions.retry_schedule`)."""
    if schedule == "fixed":
        return backoff
    delay = min(backoff * 2.0 ** min(retries_done, _MAX_DOUBLINGS), MAX_RETRY_DELAY)
    return delay * random.uniform(0.5, 1.0) if jitter else delay  # noqa: S311 -- jitter


class Deferrer(Protocol):
    """What `Task.defer()` hands its call to: a runtime."""

    def defer(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Admit a call of fn (see `Runtime.defer`)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Admit a call of fn to run now (see `Runtime.submit`)."""


#: The default runtime's getter, for `Task.defer()`; `jumpqueue._default` sets it, so that
#: this module, below the runtime, need not import it.
default_runtime: Callable[[], Deferrer] | None = None


class Task(Generic[P, R]):
    """A function decorated with `@jumpqueue.task`: still callable, and deferrable.

    Calling the task calls the function. `task.defer(...)` defers a call on the
    default runtime, `task.submit(...)` runs one now (see `jumpqueue.submit`);
    `task.options(...)` returns a copy with options overridden.
    """

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        self.fn = fn
        self.task_options = options
        self.name = options.name or import_path(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @overload
    def defer(
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]: ...

    @overload
    def defer(self, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...

    def defer(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Defer a call of this task on the default runtime (see `jumpqueue.defer`)."""
        if default_runtime is None:  # pragma: no cover -- `import jumpqueue` sets it
            raise RuntimeError("jumpqueue._default is not imported")
        return default_runtime().defer(self, *args, **kwargs)

    @overload
    def submit(
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]: ...

    @overload
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...

    def submit(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run a call of this task now on the default runtime (see `jumpqueue.submit`)."""
        if default_runtime is None:  # pragma: no cover -- `import jumpqueue` sets it
            raise RuntimeError("jumpqueue._default is not imported")
        return default_runtime().submit(self, *args, **kwargs)

    def options(self, **overrides: Unpack[TaskOptionValues]) -> Task[P, R]:
        """A copy of this task with some options replaced; the registry is unchanged.

        Raises:
            ConfigurationError: an option is unknown or out of range.
        """
        current = {
            field.name: getattr(self.task_options, field.name)
            for field in dataclasses.fields(TaskOptions)
        }
        # A delay replaces a run_after, and the other way round.
        if overrides.get("delay") is not None:
            current["run_after"] = None
        if overrides.get("run_after") is not None:
            current["delay"] = None
        copy: Task[P, R] = Task(self.fn, TaskOptions.build(**{**current, **overrides}))
        copy.name = overrides.get("name") or self.name
        return copy


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None, /, **options: Unpack[TaskOptionValues]
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptionValues]
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a function as a task, with options, and register it by name.

    Use bare (`@task`) or with options (`@task(retries=3, timeout=10)`); see
    `TaskOptions` for the options.

    Raises:
        ConfigurationError: an option is unknown or out of range.
        InvalidCallError: the decorated object is not a function.
    """
    task_options = TaskOptions.build(**options)

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        if isinstance(function, Task):
            raise InvalidCallError(f"{function!r} is already a task")
        check_callable(function)
        declared = Task(function, task_options)
        register(declared)
        return declared

    return decorate if fn is None else decorate(fn)


_registry: dict[str, Task[Any, Any]] = {}
_registry_lock = threading.Lock()


def register(declared: Task[Any, Any]) -> None:
    """Make a task known by name, so that a journal or a broker may run it."""
    with _registry_lock:
        _registry[declared.name] = declared


def lookup(name: str) -> Task[Any, Any] | None:
    """The registered task of that name, or None."""
    return _registry.get(name)


def registered() -> list[Task[Any, Any]]:
    """Every task known by name so far, in the order they became known."""
    with _registry_lock:
        return list(_registry.values())


def import_path(fn: Callable[..., Any]) -> str:
    """`module.qualname` of a function, the name it is known by outside this process."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


def check_callable(fn: object) -> None:
    """Raise `InvalidCallError` unless fn is something `defer()` can call later."""
    if inspect.iscoroutine(fn):
        raise InvalidCallError(
            f"defer() needs a coroutine function, not a coroutine object ({shown(fn)}); "
            "pass the function and its arguments: defer(fn, *args)"
        )
    if not callable(fn):
        raise InvalidCallError(f"defer() needs a callable, not {type(fn).__name__} {shown(fn)}")


@dataclasses.dataclass(frozen=True)
class CallableInfo:
    """What defer() needs to know of a function, computed once per function."""

    signature: inspect.Signature | None
    is_coroutine: bool
    name: str
    #: The executor a call runs on when its task names none.
    executor: ExecutorName
    #: Shapes of calls (positional count, keyword names) already found to fit.
    fitting_shapes: set[tuple[int, tuple[str, ...]]] = dataclasses.field(default_factory=set)
    #: Counts of positional arguments, without keywords, already found to fit.
    fitting_counts: set[int] = dataclasses.field(default_factory=set)


# A plain dict is several times faster than a WeakKeyDictionary on the defer() hot
# path; the bound keeps callables made per request (closures, partials) from piling up.
_info_cache: dict[Callable[..., Any], CallableInfo] = {}
_INFO_CACHE_SIZE = 4096


def callable_info(fn: Callable[..., Any]) -> CallableInfo:
    """Signature, kind and name of fn, cached while fn lives.

    Raises:
        InvalidCallError: fn is not something `defer()` can call later (checked
            before it is cached: a cached fn passed the check).
    """
    try:
        return _info_cache[fn]
    except (KeyError, TypeError):  # TypeError: an unhashable callable object
        pass
    check_callable(fn)
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature to check against
        signature = None
    target = fn.__call__ if not inspect.isroutine(fn) and hasattr(fn, "__call__") else fn  # noqa: B004 -- callable objects
    is_coroutine = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(target)
    info = CallableInfo(
        signature=signature,
        is_coroutine=is_coroutine,
        name=import_path(fn),
        executor="async" if is_coroutine else "thread",
    )
    if len(_info_cache) >= _INFO_CACHE_SIZE:
        _info_cache.clear()
    with contextlib.suppress(TypeError):  # unhashable: computed each time
        _info_cache[fn] = info
    return info


def executor_for(options: TaskOptions, info: CallableInfo) -> ExecutorName:
    """The executor a call runs on: the task's, else "async" for coroutine functions, else "thread".

    Raises:
        InvalidCallError: the task names the "async" executor for a plain function.
    """
    executor = options.executor or info.executor
    if executor == "async" and not info.is_coroutine:
        raise InvalidCallError(
            f"executor='async' needs a coroutine function; {info.name} is not one"
        )
    return executor


def check_arguments(info: CallableInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise `InvalidCallError` if the arguments do not fit the function's signature."""
    if info.signature is None:
        return
    # Whether arguments fit depends only on their count and keyword names.
    if not kwargs:
        if len(args) in info.fitting_counts:
            return
    elif (len(args), tuple(kwargs)) in info.fitting_shapes:
        return
    try:
        info.signature.bind(*args, **kwargs)
    except TypeError as error:
        raise InvalidCallError(f"bad arguments for {info.name}: {error}") from None
    if kwargs:
        info.fitting_shapes.add((len(args), tuple(kwargs)))
    else:
        info.fitting_counts.add(len(args))
