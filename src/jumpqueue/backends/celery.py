"""Hand-off to Celery: each call becomes a message for one generic task, `jumpqueue.run`.

    jumpqueue.configure(backend="celery+amqp://guest:guest@127.0.0.1:5672//")

and, where the worker's Celery app is defined:

    app = Celery("proj", broker=..., include=["proj.tasks"])
    jumpqueue.backends.celery.register(app)

The worker runs only functions the application knows: `@jumpqueue.task`
functions imported in the worker, or functions of the modules the app names
in `include` / `imports` (or `register(app, modules=[...])`); any other name is
refused, logged, and the message rejected. Messages are acknowledged late, and
rejected when the worker process is lost, so a killed worker's call is
redelivered (with RabbitMQ at once; with a Redis broker after its
`visibility_timeout`). The call's id is the Celery task id; its timeout is
the message's `time_limit`; its retries are Celery retries of the same task
id, with the task's backoff doubling and `retry_on` matched by class name.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import celery
import kombu
import kombu.transport
from celery.exceptions import Reject

from .._codec import known_task
from .._config import redact
from .._exceptions import ConfigurationError
from .._tasks import Task
from . import _message
from ._handoff import HandOffExecutor

if TYPE_CHECKING:
    from .._config import Config
    from . import HandOffHost

__all__ = ["TASK_NAME", "CeleryBackend", "register"]

logger = logging.getLogger("jumpqueue")

#: The one Celery task every handed-off call is a message for.
TASK_NAME = "jumpqueue.run"
#: Characters of the arguments shown in Celery's logs and monitoring.
_REPR_LIMIT = 200


class CeleryBackend:
    """Hands calls to Celery workers, through a RabbitMQ or Redis broker.

    Give either a broker URL (a small sending app is made for it) or your own
    Celery app (its routing and serializer settings apply).

    Args:
        broker: the broker URL, such as "amqp://guest:guest@127.0.0.1:5672//".
        app: a Celery app to send with, instead of `broker`.
        queue: the queue; None for the runtime's `backend_queue`, else the
            app's default queue ("celery" unless configured).

    Raises:
        ConfigurationError: neither or both of `broker` and `app` are given.
    """

    name = "celery"

    def __init__(
        self,
        broker: str | None = None,
        *,
        app: celery.Celery | None = None,
        queue: str | None = None,
    ) -> None:
        if (broker is None) == (app is None):
            raise ConfigurationError("CeleryBackend needs a broker URL or a Celery app (one)")
        self.broker = broker
        self.app = app
        self.queue = queue

    def __repr__(self) -> str:
        return f"<CeleryBackend queue={self.queue!r}>"

    @classmethod
    def from_url(cls, url: str, *, queue: str | None = None) -> CeleryBackend:
        """The backend for a broker URL (the part of `celery+amqp://...` after `celery+`).

        Raises:
            ConfigurationError: the URL names no transport Celery knows.
        """
        for broker in url.split(";"):
            _check_transport(broker)
        return cls(url, queue=queue)

    def open(self, config: Config, host: HandOffHost) -> HandOffExecutor:
        """An executor that publishes this runtime's calls for `jumpqueue.run`."""
        app = self.app
        if app is None:
            assert self.broker is not None  # noqa: S101 -- checked in __init__
            app = _sending_app(self.broker, config.handoff_timeout)
        queue = self.queue or config.backend_queue
        transport = _CeleryTransport(app, queue, timeout=config.handoff_timeout)
        return HandOffExecutor(
            self.name, transport, config, host, queue=queue or app.conf.task_default_queue
        )


def _check_transport(broker: str) -> None:
    # Kombu would find an unknown transport at the first send, and every hand-off would fail.
    transport = broker.partition("://")[0].partition("+")[0]
    aliases = kombu.transport.TRANSPORT_ALIASES
    if transport in aliases or "." in transport or ":" in transport:  # or a class path
        return
    close = difflib.get_close_matches(transport, aliases, n=1)
    raise ConfigurationError(
        f"backend {'celery+' + redact(broker)!r}: Celery has no transport {transport!r}"
        + (f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(aliases))})")
    )


def _sending_app(broker: str, timeout: float) -> celery.Celery:
    app = celery.Celery("jumpqueue", broker=broker, set_as_current=False)
    scheme = broker.partition("://")[0]
    if scheme.startswith("redis"):  # redis, rediss
        transport_options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    else:
        transport_options = {"read_timeout": timeout, "write_timeout": timeout}
    app.conf.update(
        broker_connection_timeout=timeout,
        broker_transport_options={**transport_options, "max_retries": 0},
        task_publish_retry=False,
    )
    return app


class _CeleryTransport:
    """Publishes messages for `jumpqueue.run`, over one connection per sender thread."""

    def __init__(self, app: celery.Celery, queue: str | None, *, timeout: float) -> None:
        self._app = app
        self._queue = queue
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[kombu.Connection] = set()

    def send(self, message: dict[str, Any], *, timeout: float | None) -> bool:
        options: dict[str, Any] = {}
        if self._queue is not None:
            options["queue"] = self._queue
        if timeout is not None:
            options["time_limit"] = timeout
        # A connection the broker closed while idle fails at once: that is retried on a
        # new one; a broker that is slow to answer has had its time.
        deadline = time.monotonic() + self._timeout / 2
        producer: kombu.Producer | None = getattr(self._local, "producer", None)
        for reused in (producer is not None, False):
            producer = producer or self._connect()
            try:
                self._app.send_task(
                    TASK_NAME,
                    args=(message,),
                    task_id=message["id"],
                    producer=producer,
                    retry=False,
                    add_to_parent=False,
                    # Logs and monitoring name the function, not the generic task; and
                    # Celery's own repr of the message would cost more than the send.
                    shadow=message["name"],
                    argsrepr=(
                        message["arguments"][:_REPR_LIMIT]
                        if message["serializer"] == "json"
                        else "<pickled>"
                    ),
                    kwargsrepr="{}",
                    **options,
                )
            except Exception:
                self._disconnect(producer)
                producer = None
                if not reused or time.monotonic() > deadline:
                    raise
            else:
                return True
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> None:
        # A connection of its own, closed at once: senders' connections stay as they are.
        connection = self._app.connection_for_write()
        try:
            connection.ensure_connection(max_retries=0)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _connect(self) -> kombu.Producer:
        connection = self._app.connection_for_write()
        try:
            # One attempt, bounded by the connect timeout: a refused connection fails now.
            connection.ensure_connection(max_retries=0)
            producer = kombu.Producer(connection)
        except Exception:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        with self._lock:
            self._connections.add(connection)
        self._local.producer = producer
        return producer

    def _disconnect(self, producer: kombu.Producer) -> None:
        self._local.producer = None
        connection = producer.connection
        with self._lock:
            self._connections.discard(connection)
        with contextlib.suppress(Exception):
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()


def register(
    app: celery.Celery, *, modules: Iterable[str] = (), accept_pickle: bool = False
) -> Any:
    """Register `jumpqueue.run`, the task that runs handed-off calls, on a worker's app.

    Args:
        app: the Celery app the worker runs.
        modules: modules whose functions may run, besides `@jumpqueue.task`
            functions and the modules the app names in `include` and `imports`.
        accept_pickle: run calls whose arguments were pickled (a task's
            `serializer="pickle"`); off by default, as in Celery, because
            unpickling a message can run code chosen by whoever sent it.

    Returns:
        the registered Celery task.
    """
    extra = tuple(modules)

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator,unused-ignore]
    def run(self: Any, message: Mapping[str, Any]) -> Any:
        declared = (*extra, *_names(app.conf.include), *_names(app.conf.imports))
        return _run(self, message, declared, accept_pickle=accept_pickle)

    return run


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, Iterable) else ()


def _run(
    task: Any, message: Mapping[str, Any], modules: tuple[str, ...], *, accept_pickle: bool
) -> Any:
    name, path = message.get("name"), message.get("path")
    function = None
    if isinstance(name, str) and isinstance(path, str):
        function = _resolve(name, path, modules)
    if function is None:
        logger.error(
            "jumpqueue: refused %r [%s]: not a @jumpqueue.task known to this worker, nor a "
            "function of the modules its Celery app includes",
            name,
            task.request.id,
        )
        raise Reject(f"unknown jumpqueue task {name!r}", requeue=False)
    try:
        args, kwargs = _message.arguments(message, accept_pickle=accept_pickle)
    except (ValueError, TypeError, KeyError) as error:
        logger.error("jumpqueue: refused %s [%s]: %s", name, task.request.id, error)  # noqa: TRY400 -- a bad message, not a bug: no traceback
        raise Reject(str(error), requeue=False) from None
    done = int(task.request.retries or 0)
    queue = (getattr(task.request, "delivery_info", None) or {}).get("routing_key")
    try:
        return _message.run(
            message,
            function,
            args,
            kwargs,
            attempt=done + 1,
            destination=f"celery:{queue}" if queue else "celery",
        )
    except Exception as error:
        retries = int(message.get("retries") or 0)
        if done < retries and _message.should_retry(message, error):
            delay = _message.retry_delay(message, done, jitter=True)
            raise task.retry(exc=error, countdown=delay, max_retries=retries) from error
        raise


def _resolve(name: str, path: str, modules: tuple[str, ...]) -> Callable[..., Any] | None:
    known = known_task(name)
    if known is not None:
        return known.fn
    for module_name in modules:
        prefix = module_name + "."
        if not path.startswith(prefix):
            continue
        found: Any = importlib.import_module(module_name)
        for part in path[len(prefix) :].split("."):
            found = getattr(found, part, None)
        if isinstance(found, Task):
            return found.fn
        if inspect.isfunction(found) and found.__module__ == module_name:
            return found
    return None
