"""The runtime at server start and stop: ready to admit calls, then drained."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._default import configure, drained_by_server, get_runtime, serving_runtime

if TYPE_CHECKING:
    from .._runtime import Runtime

logger = logging.getLogger("jumpqueue")


def start_runtime(runtime: Runtime | None) -> Runtime:
    """At server startup: make sure the runtime (by default, the default one) admits calls.

    A default runtime shut down by an earlier shutdown in this process (a test
    client, a server started again) is replaced by one with the same configuration.
    Returns the runtime that serves.
    """
    if runtime is not None:
        if runtime.closed:
            logger.warning("jumpqueue: the middleware's runtime is shut down; defer() will fail")
        return runtime
    default = serving_runtime()
    if default.closed:
        return configure(default.config)
    return default


async def drain_runtime(runtime: Runtime | None) -> None:
    """At server shutdown: stop admitting and drain, within the runtime's `shutdown_timeout`.

    The default runtime, drained, is renewed with the same configuration when
    the next call is deferred: a test client's next request, with or without
    its lifespan, works in any order. A runtime given is left shut down.
    """
    draining = runtime if runtime is not None else get_runtime()
    await draining.ashutdown()
    if runtime is None:
        drained_by_server(draining)
