"""The exception hierarchy of jumpqueue.

JumpQueueError
├── ConfigurationError (also ValueError)   a bad setting or task option
├── InvalidCallError (also TypeError)      defer() was given something it cannot run
├── InvalidResponseError (also TypeError)  finish_request() was given no response it knows
├── MiddlewareMissingError (also RuntimeError)
│                                          finish_request() outside jumpqueue's middleware
├── OverloadedError                        the backlog is full and the policy rejects
├── ResponseStartedError (also RuntimeError)
│                                          too late for finish_request(): a response began
├── RuntimeClosedError                     the runtime is shut down or shutting down
├── JournalError                           a file is not a journal this version can use
├── TaskTimeoutError                       the call ran past its timeout
├── TaskExitError                          the call raised SystemExit (it ended the call)
├── TaskNotRunError                        the call was shed, skipped, abandoned, journaled
│                                          or handed off
├── WaitDeadlockError (also RuntimeError)  waiting here on a call could never end
├── HandOffError                           the backend could not take a call ("raise" fallback)
├── WorkerCrashedError                     the child process running the call died
├── MemoryLimitError (also MemoryError)    the call went past memory_limit in its child
├── RemoteTaskError                        a child's exception that could not come back as itself
"""

from __future__ import annotations


class JumpQueueError(Exception):
    """The root of every error jumpqueue raises."""


class ConfigurationError(JumpQueueError, ValueError):
    """A configuration value or task option is invalid; the message names it."""


class InvalidCallError(JumpQueueError, TypeError):
    """`defer()` was given a callable or arguments it cannot run."""


class OverloadedError(JumpQueueError):
    """The backlog is full and the task's overload policy rejects the call.

    Attributes:
        retry_after: seconds after which trying again is reasonable.
    """

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidResponseError(JumpQueueError, TypeError):
    """`finish_request()` was given an object it cannot send as a response."""


class MiddlewareMissingError(JumpQueueError, RuntimeError):
    """`finish_request()` was called outside a request served through jumpqueue's middleware."""


class ResponseStartedError(JumpQueueError, RuntimeError):
    """It is too late for `finish_request()`: the response to this request has started.

    Either `finish_request()` was called already, or the application began its own response.
    """


class RuntimeClosedError(JumpQueueError):
    """The runtime no longer admits calls because it is shut down."""


class JournalError(JumpQueueError):
    """A journal file cannot be used: missing, not a journal, or from a newer jumpqueue.

    The runtime never raises it to a caller of `defer()`: it runs without the
    journal instead. The `jumpqueue` command line reports it.
    """


class TaskTimeoutError(JumpQueueError):
    """A deferred call ran past its timeout.

    Distinct from the built-in `TimeoutError`, which `Deferred.result(timeout)`
    raises when the caller's own wait runs out.
    """


class TaskExitError(JumpQueueError):
    """A deferred call raised `SystemExit` (`sys.exit()`), or another non-`Exception`.

    It ended the call, not the process: the call failed, and waiting on it
    raises this error, never the `SystemExit` itself, which is its `__cause__`
    (with `code`). It is retried only if `retry_on` names that exception. A
    call run in the application's own thread (the "inline" overload policy, a
    coroutine on the application's event loop, a testing mode) lets it go on
    up that thread as well: there it may be the thread's own (a signal
    handler's `sys.exit()`).
    """


class TaskNotRunError(JumpQueueError):
    """A deferred call has no outcome here: shed, skipped, abandoned, journaled or handed off.

    Attributes:
        status: the final status of the call.
    """

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class WaitDeadlockError(JumpQueueError, RuntimeError):
    """Waiting on a call here could never end, so the wait raises at once instead.

    A call deferred during a request is held until that request's response has
    been sent, which cannot happen while the request waits for the call; a
    coroutine that runs on an event loop cannot finish while that loop is
    blocked by a wait. Run a call now with `jumpqueue.submit()` to wait for it
    in a request, and wait from a coroutine with `await handle.aresult()`.
    """


class HandOffError(JumpQueueError):
    """A call could not be handed to its backend, and its fallback is "raise".

    Hand-off happens after the response, so this is the handle's exception
    (and a counted, logged failure), not an exception of the request; `defer()`
    itself raises it only while the backend is known to be unreachable.

    Attributes:
        backend: the name of the backend ("rq", "celery").
    """

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


class WorkerCrashedError(JumpQueueError):
    """The child process running a call died (a signal, `os._exit`, the OOM killer).

    Attributes:
        pid: the child's process id.
        exitcode: its exit code; minus the signal number if a signal killed it.
    """

    def __init__(self, message: str, *, pid: int, exitcode: int | None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), {"pid": self.pid, "exitcode": self.exitcode}))


class MemoryLimitError(JumpQueueError, MemoryError):
    """A call went past `memory_limit`, and its child process is replaced.

    Either an allocation failed in the child (its address space is capped), or
    the parent killed the child for its resident memory.

    Attributes:
        pid: the child's process id.
    """

    def __init__(self, message: str, *, pid: int) -> None:
        super().__init__(message)
        self.pid = pid

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), {"pid": self.pid}))


class RemoteTaskError(JumpQueueError):
    """An exception raised in a child process that could not be pickled back as itself.

    Attributes:
        type_name: the import path of the original exception's type.
        message: `str()` of the original exception.
        traceback: the original traceback, formatted in the child.
    """

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.message, self.traceback))


class ResultNotPortableError(JumpQueueError, TypeError):
    """A call with `keep_result=True` returned a value JSON cannot hold; the call failed.

    Attributes:
        type_name: the type of the value (or of the part of it) that JSON cannot hold.
    """

    def __init__(self, message: str, *, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), {"type_name": self.type_name}))


def _rebuild(kind: type[Exception], message: str, keywords: dict[str, object]) -> Exception:
    # Keyword-only constructor arguments do not survive the default exception pickling.
    return kind(message, **keywords)
