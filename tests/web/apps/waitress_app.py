"""The WSGI application as waitress serves it: with the SIGTERM snippet of docs/servers.md.

waitress installs no SIGTERM handler, so a process manager's SIGTERM would kill
it before the runtime drains at exit. The lines below are the snippet the docs
give, word for word (`test_real_server_shutdown.py` checks that they still are).
waitress imports this module in its main thread, where a handler can be set.
"""

from __future__ import annotations

# --- the snippet of docs/servers.md, "Shutdown" ---
import signal
import sys

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
# --- end of the snippet ---

from .wsgi_plain import app  # noqa: E402 -- after the snippet, as an application would

__all__ = ["app"]
