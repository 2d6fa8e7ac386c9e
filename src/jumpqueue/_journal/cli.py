"""The journal's command line: `jumpqueue status`, `drain`, `retry` and `purge`.

Exit statuses: 0 done; 1 something failed (drain), or nothing matched (retry);
2 bad usage; 3 no journal at that path, or not one this jumpqueue can read;
4 a record is in the hands of a live process.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .._exceptions import JournalError
from .owner import Owner, is_alive
from .store import FAILED, QUARANTINED, SKIPPED, TAMPERED, Store

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._config import Config
    from .._runtime import Runtime

COMMANDS = ("status", "drain", "retry", "purge")
EXIT_FAILED, EXIT_USAGE, EXIT_NO_JOURNAL, EXIT_BUSY = 1, 2, 3, 4
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHOWN = 10


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the journal's subcommands to the `jumpqueue` parser."""
    status = commands.add_parser("status", help="what the journal holds, and what failed")
    _add_journal(status)
    drain = commands.add_parser("drain", help="run what the journal holds, then exit")
    _add_journal(drain)
    drain.add_argument("--app", required=True, help="module:attr to import: it declares the tasks")
    drain.add_argument("--timeout", type=float, default=None, help="give up after these seconds")
    retry = commands.add_parser("retry", help="run failed or quarantined records again")
    _add_journal(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="records to retry")
    which.add_argument("--failed", action="store_true", help="every failed record")
    purge = commands.add_parser("purge", help="delete finished records")
    _add_journal(purge)
    purge.add_argument("--done", action="store_true", help="done and skipped records")
    purge.add_argument("--failed", action="store_true", help="failed records")
    purge.add_argument("--quarantined", action="store_true", help="quarantined records")
    purge.add_argument(
        "--older-than", type=_duration, default=0.0, help="last changed this long ago: 7d, 12h, 30m"
    )


def _add_journal(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("JUMPQUEUE_JOURNAL")
    parser.add_argument(
        "--journal",
        default=default,
        required=default is None,
        help="the journal file (default: $JUMPQUEUE_JOURNAL)",
    )


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    *,
    make_runtime: Callable[[Config], Runtime],
) -> int:
    """Run one journal subcommand; returns the exit status.

    Args:
        args: the parsed command line.
        out: where the report goes (standard output by default).
        make_runtime: makes the runtime that `drain` runs the records in (the
            journal sits below the runtime, which the command line passes down).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr
    try:
        if args.command == "drain":
            return _drain(args, out, make_runtime)
        store = Store.open(args.journal, create=False)
    except JournalError as error:
        print(f"jumpqueue: {error}", file=err)
        return EXIT_NO_JOURNAL
    except sqlite3.Error as error:
        print(f"jumpqueue: cannot read {args.journal}: {error}", file=err)
        return EXIT_NO_JOURNAL
    try:
        if args.command == "status":
            return _status(store, out)
        if args.command == "retry":
            return _retry(store, args.ids, failed=args.failed, out=out)
        return _purge(store, args, out)
    finally:
        store.close()


def _status(store: Store, out: TextIO) -> int:
    size = sum(
        os.path.getsize(store.path + suffix)
        for suffix in ("", "-wal")
        if os.path.exists(store.path + suffix)
    )
    print(
        f"journal {store.path} ({size / 1024:.1f} KiB, SQLite {sqlite3.sqlite_version})", file=out
    )
    for state, count in store.counts().items():
        print(f"  {state:<12} {count:>7}", file=out)
    oldest = store.oldest_waiting()
    if oldest is not None:
        print(f"oldest waiting: {_ago(oldest)} ago", file=out)
    backing_off, due = store.backing_off()
    if backing_off and due is not None:
        print(
            f"pending after a failed hand-off: {backing_off}, "
            f"the first due in {due - time.time():.0f}s",
            file=out,
        )
    for owner, count in store.holders():
        print(f"held by {_who(owner)}: {count}", file=out)
    for state in (FAILED, QUARANTINED):
        rows = store.latest(state, _SHOWN)
        if rows:
            print(f"{state} (newest first, at most {_SHOWN}):", file=out)
        for call_id, name, attempts, updated, error in rows:
            print(f"  {call_id}  {name}  attempts={attempts}  {_ago(updated)} ago", file=out)
            lines = (error or "").strip().splitlines()
            for line in lines[-3:]:
                print(f"      {line}", file=out)
    return 0


def _drain(args: argparse.Namespace, out: TextIO, make_runtime: Callable[[Config], Runtime]) -> int:
    err = sys.stderr
    Store.open(args.journal, create=False).close()  # a clear error before importing the app
    module, _, attribute = args.app.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
    except (ImportError, AttributeError) as error:
        print(f"jumpqueue: cannot load the application {args.app}: {error}", file=err)
        return EXIT_USAGE
    from .._config import Config  # noqa: PLC0415 -- after the app, which may configure logging

    runtime = make_runtime(Config.from_env(journal=args.journal))
    if not runtime.open_journal():
        runtime.shutdown(timeout=0)
        print(f"jumpqueue: cannot write to {args.journal}", file=err)
        return EXIT_NO_JOURNAL
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    watcher = Store.open(args.journal, create=False)
    try:
        while deadline is None or time.monotonic() < deadline:
            if runtime.stats().in_flight == 0 and not _runnable(watcher):
                break
            time.sleep(0.05)
    finally:
        runtime.shutdown()
        left = _runnable(watcher)
        held = watcher.count_held()
        watcher.close()
    stats = runtime.stats()
    failed = stats.failed + stats.timed_out
    print(
        f"drained {stats.recovered} call(s): {stats.succeeded} succeeded, {failed} failed; "
        f"{left} still runnable, {held} held by live processes",
        file=out,
    )
    return EXIT_FAILED if failed or left else 0


def _runnable(store: Store) -> int:
    # Those waiting out a back-off count too: a drain runs them once they are due.
    return store.count_runnable(waiting=True)


def _retry(store: Store, ids: Sequence[str], *, failed: bool, out: TextIO) -> int:
    err = sys.stderr
    rows = store.in_state(FAILED) if failed else []
    for call_id in ids:
        found = store.record(call_id)
        if found is None:
            print(f"jumpqueue: no record {call_id}", file=err)
            return EXIT_FAILED
        rows.append(found)
    for row in rows:
        owner = Owner.parse(row["owner"] or "")
        if (
            row["state"] in ("claimed", "held")
            and owner is not None
            and is_alive(owner) is not False
        ):
            print(
                f"jumpqueue: {row['id']} is in the hands of {_who(row['owner'])}; not retried",
                file=err,
            )
            return EXIT_BUSY
    with store.transaction():
        for row in rows:
            if row["state"] == QUARANTINED and row["reason"] == TAMPERED:
                print(f"warning: {row['id']} failed its checksum; signed again as it is", file=out)
                store.reseal(row["id"])
            store.reset(row["id"])
    print(f"{len(rows)} record(s) pending again", file=out)
    return 0 if rows else EXIT_FAILED


def _purge(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    states = [
        *(("done", SKIPPED) if args.done else ()),
        *((FAILED,) if args.failed else ()),
        *((QUARANTINED,) if args.quarantined else ()),
    ]
    if not states:
        print("jumpqueue: purge what? --done, --failed or --quarantined", file=sys.stderr)
        return EXIT_USAGE
    with store.transaction():
        deleted = store.prune(time.time() - args.older_than, states)
    print(f"purged {deleted} record(s)", file=out)
    return 0


def _duration(text: str) -> float:
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 7d, 12h, 30m)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"a duration cannot be negative: {text!r}")
    return seconds


def _ago(when: float) -> str:
    seconds = max(0.0, time.time() - when)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _who(owner: str | None) -> str:
    parsed = Owner.parse(owner or "")
    if parsed is None:
        return "nobody"
    alive = is_alive(parsed)
    state = "lease only" if alive is None else "alive" if alive else "dead"
    return f"pid {parsed.pid} on {parsed.host} ({state})"
