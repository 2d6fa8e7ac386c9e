"""What a journal record is: its states, its columns, and what jumpqueue writes in each.

A record whose columns hold anything else was changed outside jumpqueue: it
is set aside (quarantined as tampered), never read as a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Row

#: Record states. A pending record has no owner; a claimed one is run by its owner;
#: a held one was spilled during a request whose outcome its owner awaits.
PENDING, CLAIMED, HELD = "pending", "claimed", "held"
DONE, FAILED, SKIPPED, QUARANTINED = "done", "failed", "skipped", "quarantined"
FINISHED = (DONE, FAILED, SKIPPED, QUARANTINED)
STATES = (PENDING, CLAIMED, HELD, *FINISHED)
#: Why a record was quarantined: its function is unknown here, or it was altered.
UNKNOWN, TAMPERED = "unknown", "tampered"
#: What `Store.counts` calls a state that jumpqueue never writes.
MALFORMED = "malformed"
#: The SQLite storage classes jumpqueue writes in each column, in the table's order.
SHAPE: dict[str, tuple[str, ...]] = {
    "id": ("text",),
    "name": ("text",),
    "serializer": ("text",),
    "payload": ("blob",),
    "options": ("text",),
    "state": ("text",),
    "owner": ("text", "null"),
    "lease_until": ("real", "integer", "null"),
    "attempts": ("integer",),
    "recoveries": ("integer",),
    "max_recoveries": ("integer",),
    "created": ("real", "integer"),
    "updated": ("real", "integer"),
    "error": ("text", "null"),
    "reason": ("text", "null"),
    "checksum": ("blob",),
    "not_before": ("real", "integer", "null"),
    "handoff_fallbacks": ("integer",),
    # Since schema version 2: the start order, and the outcome as `jumpqueue.result()` reads it.
    "priority": ("integer",),
    "run_after": ("real", "integer", "null"),
    "keep_result": ("integer",),
    "status": ("text", "null"),
    "result": ("text", "null"),
    "errors": ("text", "null"),
    "started": ("real", "integer", "null"),
    "attempted": ("real", "integer", "null"),
    "finished": ("real", "integer", "null"),
    "workers": ("text", "null"),
}
#: The columns that count something: never negative.
COUNTERS = ("attempts", "recoveries", "max_recoveries", "handoff_fallbacks")
_PYTHON_TYPES: dict[str, type] = {
    "text": str,
    "blob": bytes,
    "integer": int,
    "real": float,
    "null": type(None),
}


def malformed(row: Row) -> str | None:
    """What in a record jumpqueue did not write so (see `SHAPE`), or None if nothing."""
    problems = []
    for column, kinds in SHAPE.items():
        value = row[column]
        fits = any(
            isinstance(value, _PYTHON_TYPES[kind]) and not isinstance(value, bool) for kind in kinds
        )
        if not fits:
            problems.append(f"{column} holds {describe(value)}")
        elif column in COUNTERS and value < 0:
            problems.append(f"{column} is {value}")
    state = row["state"]
    if isinstance(state, str) and state not in STATES:
        problems.append(f"state is {describe(state)}")
    elif state in (CLAIMED, HELD) and row["owner"] is None:
        problems.append(f"it is {state} by nobody")
    return "; ".join(problems) or None


def describe(value: object) -> str:
    """A value read from the file, for a log line or an error column: its type, and short."""
    if value is None:
        return "NULL"
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"  # noqa: PLR2004
