"""Gunicorn server hooks: open the journal as a worker starts, drain the runtime as it exits.

Use the module as gunicorn's configuration, or import the hook into your own
`gunicorn.conf.py`:

    gunicorn -c python:jumpqueue.contrib.gunicorn myproject.wsgi
    # or, in gunicorn.conf.py:
    from jumpqueue.contrib.gunicorn import post_worker_init, worker_exit

Keep the runtime's `shutdown_timeout` below gunicorn's `graceful_timeout`
(30 s by default), after which the master kills the worker outright.
"""

from __future__ import annotations

from jumpqueue import get_runtime, shutdown

__all__ = ["post_worker_init", "worker_exit"]


def post_worker_init(worker: object) -> None:  # noqa: ARG001 -- gunicorn's signature
    """Open the journal, if one is configured, as the worker starts (gunicorn's hook).

    What a killed worker left in the journal then runs at once, not at the first `defer()`.
    """
    runtime = get_runtime()
    if runtime.config.journal is not None:
        runtime.open_journal()


def worker_exit(server: object, worker: object) -> None:  # noqa: ARG001 -- gunicorn's signature
    """Drain the default runtime as the worker exits (gunicorn's `worker_exit` hook).

    It stops admitting, waits up to `shutdown_timeout`, and counts and logs as
    abandoned what did not finish.
    """
    shutdown()
