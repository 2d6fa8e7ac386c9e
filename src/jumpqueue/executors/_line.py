"""The line of attempts waiting for a worker: first come, first served, unless priorities differ."""

from __future__ import annotations

import collections
import heapq
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import Attempt

#: Added to the order of attempts that came before every one in the heap (see `append`).
_EARLIER = -(1 << 62)


class WaitingLine:
    """Attempts in the order they start: higher `priority` first, then in the order they came.

    A plain FIFO while every waiting attempt has priority 0 (the common case,
    and the cheap one); a heap only while an attempt with another priority
    waits, and until the heap is empty again.
    """

    __slots__ = ("_fifo", "_heap", "_order", "size")

    def __init__(self) -> None:
        self._fifo: collections.deque[Attempt] = collections.deque()
        self._heap: list[tuple[int, int, Attempt]] = []
        self._order = itertools.count()
        #: Attempts waiting (an attribute: executors read it on every submit and release).
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, attempt: Attempt, *, came_first: bool = False) -> None:
        """Add an attempt; `came_first`: it came before every attempt in the line now."""
        self.size += 1
        priority = attempt.deferred.options.priority
        heap = self._heap
        if priority == 0 and not heap and not came_first:
            self._fifo.append(attempt)
            return
        while self._fifo:  # they came before this one: they keep their turn among equals
            heapq.heappush(heap, (0, next(self._order), self._fifo.popleft()))
        order = next(self._order)
        heapq.heappush(heap, (-priority, order + _EARLIER if came_first else order, attempt))

    def popleft(self) -> Attempt:
        """The attempt to start next.

        Raises:
            IndexError: the line is empty.
        """
        attempt = heapq.heappop(self._heap)[2] if self._heap else self._fifo.popleft()
        self.size -= 1
        return attempt

    def clear(self) -> None:
        """Forget every waiting attempt."""
        self._fifo.clear()
        self._heap.clear()
        self.size = 0
