"""Backends by name: the distributed engines a runtime can hand its calls to instead of its pools.

    jumpqueue.configure(backend="rq+redis://127.0.0.1:6379/0")
    jumpqueue.configure(backend="celery+amqp://guest:guest@127.0.0.1:5672//")
    jumpqueue.configure(backend=RQBackend("redis://redis.internal:6379/0", queue="emails"))

or `JUMPQUEUE_BACKEND=rq+redis://...` in the environment. The engines' client
libraries are imported only when a backend is opened, so `import jumpqueue`
stays standard library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

from .._choices import BACKENDS
from .._config import check_backend, redact
from .._exceptions import ConfigurationError

if TYPE_CHECKING:
    from .._config import Config
    from ..executors._base import Attempt, Executor

__all__ = [
    "BACKENDS",
    "Backend",
    "HandOffHost",
    "check_backend",
    "from_url",
    "open_backend",
    "redact",
]


class HandOffHost(Protocol):
    """What a backend reports to: the runtime."""

    def handed_off(self, attempt: Attempt, backend: str) -> None:
        """The engine has the call: it is final here (status "handed_off")."""

    def handoff_failed(
        self, attempt: Attempt, backend: str, error: BaseException, *, sent: bool
    ) -> None:
        """The engine could not take the call; the task's fallback applies.

        `sent` is False when the send was not even tried because the broker was
        found unreachable moments ago.
        """


class Backend(Protocol):
    """A distributed engine: `open()` gives the runtime an executor that hands calls to it.

    The executor's `submit()` never blocks: it sends on its own thread, within
    `handoff_timeout`, and reports each outcome to the `HandOffHost`.
    """

    name: str

    def open(self, config: Config, host: HandOffHost) -> Executor:
        """An executor that hands this runtime's calls to the engine."""


def from_url(url: str, *, queue: str | None = None) -> Backend:
    """The backend a URL names, its engine's library imported now.

    Raises:
        ConfigurationError: the URL is not a backend URL, or the engine's extra
            is not installed.
    """
    check_backend("backend", url)
    engine, _, rest = url.partition("+")
    target, extra = BACKENDS[engine]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"the {engine} backend needs its library ({error}): pip install 'jumpqueue[{extra}]'"
        ) from None
    return cast("Backend", getattr(module, class_name).from_url(rest, queue=queue))


def open_backend(config: Config, host: HandOffHost) -> Executor | None:
    """The hand-off executor for `config.backend`, or None when calls stay in the local pools.

    Raises:
        ConfigurationError: the backend URL cannot be used (see `from_url`).
    """
    backend = config.backend
    if backend is None:
        return None
    if isinstance(backend, str):
        backend = from_url(backend, queue=config.backend_queue)
    return backend.open(config, host)
