"""Warnings that repeat under load, logged at most once per interval with a count."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """Logs a warning at most once per `interval` seconds, counting what it held back."""

    def __init__(self, logger: logging.Logger, *, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log now, or count it if a warning was logged less than `interval` ago."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + self._interval
        if suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args)
