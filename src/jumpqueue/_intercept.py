"""The hook `jumpqueue.testing` uses to capture or run deferred calls in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._deferred import Deferred

#: When set, `Runtime.defer` hands each validated call to it instead of admitting it.
active: Callable[[Deferred[Any]], Deferred[Any]] | None = None
