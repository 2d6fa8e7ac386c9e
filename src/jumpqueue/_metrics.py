"""Histograms and the sums of snapshots: the plain data metrics are made of."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

#: Upper bounds (seconds) of the histograms' buckets; the last one takes everything.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Counts of observed durations by bucket (`BUCKETS`, then +Inf), their sum and count."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one duration (the caller holds whatever lock guards this histogram)."""
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def as_dict(self) -> dict[str, Any]:
        """The histogram as plain data: per-bucket (not cumulative) counts, sum and count."""
        return {"counts": list(self.counts), "sum": self.sum, "count": self.count}


def add(total: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add `part` into `total`, key by key: numbers add, lists add item by item, dicts nest.

    Counters of several workers sum this way, histograms included; a bool is
    true in the sum when it is in any part. Returns `total`.
    """
    for key, value in part.items():
        mine = total.get(key)
        if isinstance(value, Mapping):
            total[key] = add(mine if isinstance(mine, dict) else {}, value)
        elif isinstance(value, bool):
            total[key] = bool(mine) or value
        elif isinstance(value, (int, float)):
            total[key] = (mine if isinstance(mine, (int, float)) else 0) + value
        elif isinstance(value, list):
            mine = mine if isinstance(mine, list) else []
            longer, shorter = (mine, value) if len(mine) >= len(value) else (value, mine)
            total[key] = [a + (shorter[i] if i < len(shorter) else 0) for i, a in enumerate(longer)]
    return total


def quantile(counts: list[int], share: float) -> float | None:
    """The duration under which `share` of a histogram's observations fall, or None if empty.

    Interpolated within the bucket it falls in, as Prometheus'
    `histogram_quantile` does; one in the +Inf bucket gives the last bound.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = share * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BUCKETS):
                return BUCKETS[-1]
            low = BUCKETS[index - 1] if index else 0.0
            return low + (BUCKETS[index] - low) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]  # pragma: no cover -- the loop ends at the total
