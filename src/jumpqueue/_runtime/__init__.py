"""The runtime: admission, the backlog, dispatch, outcomes and shutdown, one part per module.

- `runtime`: the `Runtime` facade, which wires the parts and offers the public API.
- `ledger`: the backlog and counters; the one writer of a call's state.
- `admission`: the backlog bound and the overload policies.
- `dispatch`: executors, attempts, timeouts and retries (the executors' host).
- `handoff`: what the backend reports (its host).
- `journaling`: the runtime's side of the journal (its host).
- `requests`: what request scopes hand back (their host).
"""

from __future__ import annotations

from .runtime import Runtime

__all__ = ["Runtime"]
