"""The default runtime behind the module-level functions, and how to replace it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _tasks
from ._config import Config
from ._deferred import Deferred
from ._results import CallResult
from ._runtime import Runtime
from ._stats import Stats

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import ConfigOptions

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_runtime: Runtime | None = None
#: The default runtime once a server's shutdown has drained it: the next call starts a new one.
_drained: Runtime | None = None


def get_runtime() -> Runtime:
    """The default runtime, created from the environment on first use."""
    global _runtime  # noqa: PLW0603 -- the one default runtime the design allows
    runtime = _runtime
    if runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime(Config.from_env())
            runtime = _runtime
    return runtime


def drained_by_server(runtime: Runtime) -> None:
    """A server's shutdown drained `runtime`: if it is the default, the next call renews it.

    A test client or a server started again in the same process then finds a
    working default runtime, with the same configuration, while `get_runtime()`
    and `stats()` still show the drained one until a call comes.
    """
    global _drained  # noqa: PLW0603 -- state of the one default runtime
    with _lock:
        if runtime is _runtime and runtime.closed:
            _drained = runtime


def serving_runtime() -> Runtime:
    """The default runtime that takes the next call: one a server drained is renewed first."""
    global _runtime, _drained
    runtime = get_runtime()
    if runtime is not _drained:
        return runtime
    with _lock:
        if _runtime is runtime:  # not renewed by another thread meanwhile
            _runtime, _drained = Runtime(runtime.config), None
    return get_runtime()


def configure(config: Config | None = None, /, **options: Unpack[ConfigOptions]) -> Runtime:
    """Replace the default runtime: the old one is drained and shut down first.

    Pass a `Config`, or options by name (`max_workers=4, on_overload="reject"`);
    options given by name win over `JUMPQUEUE_*` environment variables.

    Raises:
        ConfigurationError: an option is unknown or out of range.
    """
    global _runtime, _drained
    if config is None:
        config = Config.from_env(**options)
    elif options:
        config = config.replace(**options)
    runtime = Runtime(config)
    with _lock:
        previous, _runtime, _drained = _runtime, runtime, None
    if previous is not None:
        previous.shutdown()
    return runtime


_tasks.default_runtime = serving_runtime


@overload
def defer(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> Deferred[R]: ...


@overload
def defer(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...


def defer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Run `fn(*args, **kwargs)` after the response, or at once outside a request.

    Plain functions run on the thread pool, coroutine functions on the event
    loop; a `@task` carries its own options. The call is admitted now: if the
    backlog is full, the task's overload policy applies here, in the caller.

    Raises:
        InvalidCallError: fn is not callable, is a coroutine object, or the
            arguments do not fit its signature; or, with `backend` or
            `check_handoff` set, the call could not leave the process (a
            lambda, a closure, a function of `__main__`, arguments the
            serializer cannot carry).
        OverloadedError: the backlog is full and the policy rejects.
        HandOffError: the task's fallback is "raise" and its backend's broker
            was found unreachable moments ago.
        RuntimeClosedError: the default runtime is shut down (one drained by a
            server's shutdown is renewed instead, see `integration.drain_runtime`).
    """
    runtime = _runtime
    if runtime is None or runtime is _drained:  # read without a call: the hot path
        runtime = serving_runtime()
    return runtime.defer(fn, *args, **kwargs)


@overload
def submit(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> Deferred[R]: ...


@overload
def submit(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...


def submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Run `fn(*args, **kwargs)` now, under its task's options, even inside a request.

    Unlike `defer()`, the call is not held for the response: it is admitted
    (the overload policy applies) and starts as soon as its executor has room,
    with the task's timeout and retries, so a request may wait for it:
    `jumpqueue.submit(send, message).result(timeout=10)`, or
    `await jumpqueue.submit(send, message).aresult(timeout=10)` in a coroutine.
    Outside a request it is the same as `defer()`.

    Raises:
        InvalidCallError, OverloadedError, HandOffError, RuntimeClosedError: as `defer()`.
    """
    return serving_runtime().submit(fn, *args, **kwargs)


def result(call_id: str) -> CallResult | None:
    """The outcome of a call by its id, from the default runtime (see `Runtime.result`)."""
    return get_runtime().result(call_id)


def stats() -> Stats:
    """Counters and gauges of the default runtime (see `Stats`)."""
    return get_runtime().stats()


def shutdown(timeout: float | None = None) -> None:
    """Shut the default runtime down: stop admitting, drain up to `timeout`, abandon the rest."""
    get_runtime().shutdown(timeout)
