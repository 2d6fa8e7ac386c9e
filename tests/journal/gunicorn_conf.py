"""gunicorn settings for the SIGKILL test: each worker opens the journal as it starts."""

from __future__ import annotations

import jumpqueue
from jumpqueue.contrib.gunicorn import worker_exit

__all__ = ["post_worker_init", "worker_exit"]


def post_worker_init(worker: object) -> None:
    """Take up what the killed server left, without waiting for new requests."""
    jumpqueue.get_runtime().open_journal()
