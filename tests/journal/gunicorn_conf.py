"""gunicorn settings for the SIGKILL test: jumpqueue's own hooks, as the README tells users.

Each worker opens the journal as it starts (and so takes up what a killed worker
left), and drains as it exits.
"""

from __future__ import annotations

from jumpqueue.contrib.gunicorn import post_worker_init, worker_exit

__all__ = ["post_worker_init", "worker_exit"]
