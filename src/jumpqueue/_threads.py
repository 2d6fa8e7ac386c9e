"""The threads jumpqueue starts: daemon threads that begin in an empty `contextvars` context.

jumpqueue starts its threads lazily, often from inside a request. A thread that
inherited that request's context (Python 3.14's `thread_inherit_context`, the
default of free-threaded builds) would keep it, and everything it reaches (the
request's scope, its held calls, whatever the application put in a context
variable), alive for as long as the thread lives.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable


def daemon_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread, not started yet, that runs `target` in a context of its own, empty."""
    return _DaemonThread(target, name)


class _DaemonThread(threading.Thread):
    def __init__(self, target: Callable[[], object], name: str) -> None:
        if sys.version_info >= (3, 14):
            context = contextvars.Context()
            super().__init__(target=target, name=name, daemon=True, context=context)
        else:
            super().__init__(target=target, name=name, daemon=True)

    def start(self) -> None:
        # Started in an empty context, a thread that inherits its starter's context
        # inherits nothing, whatever Python or a wrapper of `threading` does.
        contextvars.Context().run(super().start)
