"""The exception hierarchy of jumpqueue.

JumpQueueError
├── ConfigurationError (also ValueError)   a bad setting or task option
├── InvalidCallError (also TypeError)      defer() was given something it cannot run
├── OverloadedError                        the backlog is full and the policy rejects
├── RuntimeClosedError                     the runtime is shut down or shutting down
├── TaskTimeoutError                       the call ran past its timeout
└── TaskNotRunError                        the call was shed, skipped or abandoned
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


class RuntimeClosedError(JumpQueueError):
    """The runtime no longer admits calls because it is shut down."""


class TaskTimeoutError(JumpQueueError):
    """A deferred call ran past its timeout.

    Distinct from the built-in `TimeoutError`, which `Deferred.result(timeout)`
    raises when the caller's own wait runs out.
    """


class TaskNotRunError(JumpQueueError):
    """A deferred call ended without running to completion (shed, skipped, abandoned).

    Attributes:
        status: the final status of the call.
    """

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status
