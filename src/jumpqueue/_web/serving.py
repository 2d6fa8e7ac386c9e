"""What every middleware does around a request: counting, the 503 answer, carried headers."""

from __future__ import annotations

import collections
import contextvars
import logging
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..context import request_id, traceparent

if TYPE_CHECKING:
    from .._exceptions import OverloadedError

logger = logging.getLogger("jumpqueue")

#: Request headers whose values travel with calls handed to another machine.
_CARRIED_HEADERS = {b"x-request-id": request_id, b"traceparent": traceparent}

#: The body of the 503 answer to a call rejected by a full backlog.
OVERLOADED_BODY = b"Service Unavailable: the server is busy, please retry later.\n"


class HttpCounters:
    """What the web layer did that the runtime's `stats()` do not show.

    Each 503 answered here is also one `shed["reject"]` in the runtime's stats.

    Attributes:
        overloaded: 503 answers to a call rejected by a full backlog.
        finished_early: responses sent by `finish_request()`.
        errors_after_finish: exceptions the handler raised after `finish_request()`.
    """

    NAMES = ("overloaded", "finished_early", "errors_after_finish")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"<HttpCounters {counts}>"

    @property
    def overloaded(self) -> int:
        """503 answers to a call rejected by a full backlog."""
        return self._counts["overloaded"]

    @property
    def finished_early(self) -> int:
        """Responses sent by `finish_request()`."""
        return self._counts["finished_early"]

    @property
    def errors_after_finish(self) -> int:
        """Exceptions the handler raised after `finish_request()` sent its response."""
        return self._counts["errors_after_finish"]

    def add(self, name: str) -> None:
        """Count one event of that name (one of `NAMES`)."""
        if name not in self.NAMES:
            raise ValueError(f"unknown counter {name!r}")
        with self._lock:
            self._counts[name] += 1

    def as_dict(self) -> dict[str, int]:
        """The counters as plain data."""
        with self._lock:
            return {name: self._counts[name] for name in self.NAMES}


def overloaded_headers(error: OverloadedError) -> list[tuple[str, str]]:
    """Headers of the 503 answer to `error`: Retry-After in whole seconds."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(OVERLOADED_BODY))),
        ("Retry-After", str(max(1, math.ceil(error.retry_after)))),
    ]


def log_overloaded(error: OverloadedError) -> None:
    """The line logged when a rejected call becomes a 503 (the runtime logged the shed)."""
    logger.info("jumpqueue: answered 503 Service Unavailable: %s", error)


def carry_from_headers(
    headers: Iterable[tuple[bytes, bytes | str]],
) -> list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]]:
    """Set `jumpqueue.context`'s request id and traceparent from the request's headers.

    Values the application set already are kept. Returns the tokens to reset them.
    """
    tokens = []
    for name, value in headers:
        variable = _CARRIED_HEADERS.get(name.lower())
        if variable is not None and variable.get() is None:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            tokens.append((variable, variable.set(text)))
    return tokens
