"""The journal's command line: `jumpqueue status`, `drain`, `retry` and `purge`.

Exit statuses: 0 done; 1 something failed (drain), or nothing matched (retry);
2 bad usage; 3 no journal at that path, or not one this jumpqueue can read;
4 a record is in the hands of a live process.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .._exceptions import JournalError
from . import engine
from .owner import Owner, is_alive
from .schema import FAILED, MALFORMED, QUARANTINED, SKIPPED, TAMPERED, malformed
from .store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

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
    except engine.FILE_ERRORS as error:
        print(f"jumpqueue: cannot read {args.journal}: {error}", file=err)
        return EXIT_NO_JOURNAL
    except Exception as error:  # noqa: BLE001 -- a command line says what failed, no traceback
        return _failed(args, error)
    command = {"status": _status, "retry": _retry, "purge": _purge}[args.command]
    try:
        return command(store, args, out)
    except Exception as error:  # noqa: BLE001 -- a command line says what failed, no traceback
        return _failed(args, error)
    finally:
        store.close()


def _failed(args: argparse.Namespace, error: Exception) -> int:
    print(
        f"jumpqueue: {args.command} failed on {args.journal}: {type(error).__name__}: {error}",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _status(store: Store, args: argparse.Namespace, out: TextIO) -> int:  # noqa: ARG001
    size = sum(
        os.path.getsize(store.path + suffix)
        for suffix in ("", "-wal")
        if os.path.exists(store.path + suffix)
    )
    print(
        f"journal {store.path} ({size / 1024:.1f} KiB, "
        f"SQLite {engine.sqlite_version} through {engine.LIBRARY})",
        file=out,
    )
    for state, count in store.counts().items():
        if count or state != MALFORMED:
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
            print(
                f"  {_shown(call_id)}  {_shown(name)}  attempts={_shown(attempts)}  "
                f"{_ago(updated)} ago",
                file=out,
            )
            lines = (error if isinstance(error, str) else _shown(error or "")).strip().splitlines()
            for line in lines[-3:]:
                print(f"      {_shown(line, 200)}", file=out)
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
    except Exception as error:  # noqa: BLE001 -- whatever the app raised as it was imported
        print(
            f"jumpqueue: cannot load the application {args.app}: {type(error).__name__}: {error}",
            file=err,
        )
        return EXIT_USAGE
    from .._config import Config  # noqa: PLC0415 -- after the app, which may configure logging

    watcher = Store.open(args.journal, create=False)
    try:
        quarantined = watcher.counts()[QUARANTINED]
        runtime = make_runtime(Config.from_env(journal=args.journal))
        if not runtime.open_journal():
            runtime.shutdown(timeout=0)
            print(f"jumpqueue: cannot write to {args.journal}", file=err)
            return EXIT_NO_JOURNAL
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                stats = runtime.stats()
                # Calls scheduled for later are not waited for: they stay in the journal.
                busy = stats.in_flight - stats.scheduled
                if busy == 0 and (stats.journal_degraded or not _runnable(watcher)):
                    break
                time.sleep(0.05)
        finally:
            runtime.shutdown()
        left, held = _runnable(watcher), watcher.count_held()
        quarantined = watcher.counts()[QUARANTINED] - quarantined
    finally:
        watcher.close()
    stats = runtime.stats()
    failed = stats.failed + stats.timed_out
    print(
        f"drained {stats.recovered} call(s): {stats.succeeded} succeeded, {failed} failed; "
        f"{left} still runnable, {held} held by live processes",
        file=out,
    )
    if quarantined > 0:
        print(
            f"jumpqueue: {quarantined} record(s) quarantined, not run (see `jumpqueue status`)",
            file=err,
        )
    if stats.journal_degraded:
        print(f"jumpqueue: the journal {args.journal} failed while draining", file=err)
    return EXIT_FAILED if failed or left or quarantined > 0 or stats.journal_degraded else 0


def _runnable(store: Store) -> int:
    # Those waiting out a back-off count too: a drain runs them once they are due.
    return store.count_runnable(waiting=True)


def _retry(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    err = sys.stderr
    rows = store.in_state(FAILED) if args.failed else []
    for call_id in args.ids:
        found = store.record(call_id)
        if found is None:
            print(f"jumpqueue: no record {call_id}", file=err)
            return EXIT_FAILED
        rows.append(found)
    for row in rows:
        owner = Owner.parse(row["owner"])
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
    unreadable = [(row, problem) for row in rows if (problem := malformed(row)) is not None]
    for row, problem in unreadable:
        print(
            f"jumpqueue: {_shown(row['id'])} was changed outside jumpqueue ({problem}); "
            "it cannot be read as a call: not retried (purge it with --quarantined)",
            file=err,
        )
    rows = [row for row in rows if malformed(row) is None]
    with store.transaction():
        for row in rows:
            if row["state"] == QUARANTINED and row["reason"] == TAMPERED:
                print(f"warning: {row['id']} failed its checksum; signed again as it is", file=out)
                store.reseal(row["id"])
            store.reset(row["id"])
    print(f"{len(rows)} record(s) pending again", file=out)
    return 0 if rows and not unreadable else EXIT_FAILED


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


def _shown(value: object, limit: int = 80) -> str:
    # A value read from the file, which anyone may have written: printable, and short.
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _ago(when: object) -> str:
    if isinstance(when, bool) or not isinstance(when, (int, float)) or math.isnan(when):
        return "?"
    seconds = max(0.0, time.time() - when)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _who(owner: object) -> str:
    parsed = Owner.parse(owner)
    if parsed is None:
        return "nobody"
    alive = is_alive(parsed)
    state = "lease only" if alive is None else "alive" if alive else "dead"
    return f"pid {parsed.pid} on {parsed.host} ({state})"
