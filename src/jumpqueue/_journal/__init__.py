"""The journal: calls written to a SQLite file, so that they outlive the process.

- `journal`: `Journal`, the facade the runtime calls; it owns a `Writer` and an `Upkeep`.
- `writer`: queued records and marks, the group commit, degrading when writes fail.
- `upkeep`: the journal's thread (opens, renews leases, takes up, prunes, probes); `JournalHost`.
- `records`: a call as a record, and a record as a call again, if it may run here.
- `store`: one connection, and every SQL statement run on the journal.
- `schema`: a record's states and columns, and what jumpqueue writes in each.
- `engine`: the SQLite library underneath: apsw's when installed, else Python's.
- `file`: the SQLite file: made private, checked, migrated, repaired, never shared by a fork.
- `owner`: who holds a record, and whether that process still lives.
- `cli`: the `jumpqueue status`, `drain`, `retry` and `purge` commands.
"""

from .journal import Journal
from .store import Record
from .upkeep import JournalHost

__all__ = ["Journal", "JournalHost", "Record"]
