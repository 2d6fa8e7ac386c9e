"""Hand-off to RQ: each call becomes a job in a Redis queue that a plain `rq worker` runs.

    jumpqueue.configure(backend="rq+redis://127.0.0.1:6379/0")
    $ rq worker --with-scheduler          # in the application's environment

Jobs go to the queue `default` (or `backend_queue`). The job's id is the
call's id, so a second hand-off of the same call is detected, not run twice.
The task's timeout becomes the job's `job_timeout`, its retries an RQ `Retry`
with the task's backoff doubling (retries after a delay need the worker's
scheduler: `rq worker --with-scheduler`), and `retry_on` is honoured by the
worker. Nothing is registered on the worker side: RQ imports the function by
its path, as it does for its own jobs; so anyone who can write to that Redis
can run code on the workers, exactly as with RQ alone.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis
import rq
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry

from .._codec import known_task
from .._config import redact
from .._exceptions import ConfigurationError
from .._tasks import Task, import_path
from . import _message
from ._handoff import HandOffExecutor

if TYPE_CHECKING:
    from .._config import Config
    from . import HandOffHost

# Newer rq enqueues "unless that id exists" atomically; with an older one a second
# hand-off of the same call replaces the job instead.
_DUPLICATE: type[Exception] | None = getattr(rq.exceptions, "DuplicateJobError", None)

__all__ = ["RQBackend", "run"]

logger = logging.getLogger("jumpqueue")

#: What RQ imports on the worker to run a handed-off call.
RUNNER = "jumpqueue.backends.rq.run"
#: The queue a plain `rq worker` listens to.
DEFAULT_QUEUE = "default"


class RQBackend:
    """Hands calls to RQ, through Redis.

    Args:
        url: the Redis URL, such as "redis://127.0.0.1:6379/0".
        queue: the RQ queue; None for the runtime's `backend_queue`, else "default".
        connection: a `redis.Redis` client to use instead of one made from
            `url`; its own socket timeouts then bound each hand-off.
    """

    name = "rq"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        queue: str | None = None,
        connection: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.queue = queue
        self.connection = connection

    def __repr__(self) -> str:
        return f"<RQBackend queue={self.queue!r}>"

    @classmethod
    def from_url(cls, url: str, *, queue: str | None = None) -> RQBackend:
        """The backend for a Redis URL (the part of `rq+redis://...` after `rq+`)."""
        return cls(url, queue=queue)

    def open(self, config: Config, host: HandOffHost) -> HandOffExecutor:
        """An executor that enqueues this runtime's calls as RQ jobs."""
        connection = self.connection
        if connection is None:
            try:
                connection = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=config.handoff_timeout,
                    socket_timeout=config.handoff_timeout,
                    # One quick retry replaces a pooled connection the server closed (not a
                    # timeout); redis-py's default backs off for seconds, past any hand-off bound.
                    retry=RedisRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                )
            except ValueError as error:  # what redis-py refuses in a URL
                raise ConfigurationError(f"backend {'rq+' + redact(self.url)!r}: {error}") from None
        queue = rq.Queue(self.queue or config.backend_queue or DEFAULT_QUEUE, connection=connection)
        transport = _RQTransport(queue, owned=self.connection is None)
        return HandOffExecutor(self.name, transport, config, host, queue=queue.name)


class _RQTransport:
    """Enqueues messages as jobs that run `jumpqueue.backends.rq.run`."""

    def __init__(self, queue: rq.Queue, *, owned: bool) -> None:
        self._queue = queue
        self._owned = owned

    def send(self, message: dict[str, Any], *, timeout: float | None) -> bool:
        retries = int(message["retries"])
        retry = None
        if retries:
            intervals = [
                math.ceil(_message.retry_delay(message, done, jitter=False))
                for done in range(retries)
            ]
            retry = rq.Retry(max=retries, interval=intervals)
        options: dict[str, Any] = {}
        if _DUPLICATE is not None:
            options["unique"] = True
        try:
            self._queue.enqueue_call(
                RUNNER,
                args=(message,),
                job_id=message["id"],
                # RQ counts whole seconds; -1 is its "no limit".
                timeout=-1 if timeout is None else max(1, math.ceil(timeout)),
                retry=retry,
                description=message["name"],
                **options,
            )
        except Exception as error:
            if _DUPLICATE is not None and isinstance(error, _DUPLICATE):
                return False
            raise
        return True

    def ping(self) -> None:
        self._queue.connection.ping()

    def close(self) -> None:
        if self._owned:
            self._queue.connection.close()


def run(message: Mapping[str, Any]) -> Any:
    """Run a handed-off call in an RQ worker: the job function of every jumpqueue job.

    Raises:
        ImportError: the function cannot be imported by its path here.
        Exception: whatever the call raised (RQ retries it if the task retries
            on that kind of error).
    """
    function = _resolve(message["name"], message["path"])
    # RQ itself unpickles every job it runs: pickled arguments add no trust it lacks.
    args, kwargs = _message.arguments(message, accept_pickle=True)
    job = rq.get_current_job()
    retries = int(message.get("retries") or 0)
    left = job.retries_left if job is not None and job.retries_left is not None else retries
    destination = f"rq:{job.origin}" if job is not None else "rq"
    try:
        return _message.run(
            message, function, args, kwargs, attempt=retries - left + 1, destination=destination
        )
    except Exception as error:
        if not _message.should_retry(message, error) and job is not None and job.retries_left:
            logger.info(
                "jumpqueue: %s [%s] does not retry on %s",
                message["name"],
                message["id"],
                type(error).__name__,
            )
            job.retries_left = 0
        raise


def _resolve(name: str, path: str) -> Callable[..., Any]:
    task = known_task(name)
    if task is None:
        # RQ's own way: import the function by its path (which also registers the
        # module's @jumpqueue.task functions, under their names).
        found = rq.utils.import_attribute(path)
        task = known_task(name)
        if task is None:
            if isinstance(found, Task):
                return found.fn
            # Only a Python function defined where the path says, as defer() sends them:
            # never a builtin such as os.system, nor an object that merely is callable.
            if not (inspect.isfunction(found) and path == import_path(found)):
                raise TypeError(f"{path} is not a module-level function; not run")
            return found
    return task.fn
