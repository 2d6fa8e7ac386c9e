"""Settings of a web process that hands its Django tasks to RQ (test_handoff.py), and its worker."""

from __future__ import annotations

import os

from .site import *  # noqa: F403 -- the project of test_real_server.py, with a backend

JUMPQUEUE = {
    "BACKEND": f"rq+{os.environ['JQTEST_REDIS_URL']}",
    "BACKEND_QUEUE": os.environ["JQTEST_QUEUE"],
}
# RQ's log lines, which the test reads (Django's default would silence them).
LOGGING = {"version": 1, "disable_existing_loggers": False}
