"""`jumpqueue top URL`: a live terminal view of a running server, through its status page's JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

#: Per-worker columns: (heading, key of a row, width).
_COLUMNS = (
    ("PID", "pid", 8),
    ("STATE", "state", 13),
    ("SEEN", "last_seen", 6),
    ("ACCEPTED", "accepted", 9),
    ("OK", "succeeded", 8),
    ("FAILED", "failed", 7),
    ("SHED", "shed", 6),
    ("HELD", "held", 5),
    ("PENDING", "pending", 8),
    ("RUNNING", "running", 8),
    ("WORKERS", "workers", 8),
    ("STUCK", "stuck_threads", 6),
)
_CLEAR = "\x1b[H\x1b[2J"


def add_command(commands: Any) -> None:
    """Add `top` to the command line's subcommands."""
    top = commands.add_parser("top", help="a live view of a running server's status page")
    top.add_argument("url", help="the status page, such as http://127.0.0.1:8000/jumpqueue/status")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between views")
    top.add_argument("--token", default=None, help="the status page's token, if it has one")


def run(args: argparse.Namespace) -> int:
    """Show the view until interrupted (once with --once); 1 if the page cannot be read."""
    if args.interval <= 0:
        print("jumpqueue top: --interval must be > 0", file=sys.stderr)
        return 2
    url = _json_url(args.url)
    previous: dict[str, Any] | None = None
    try:
        while True:
            try:
                report = _fetch(url, args.token)
            except (OSError, ValueError) as error:
                print(f"jumpqueue top: cannot read {args.url}: {error}", file=sys.stderr)
                if args.once:
                    return 1
            else:
                screen = render(report, previous, args.url)
                print(screen if args.once else _CLEAR + screen, end="", flush=True)
                previous = report
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _json_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SystemExit(f"jumpqueue top: the URL must be http:// or https://, not {url!r}")
    query = "&".join(filter(None, [parts.query, "json&full"]))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _fetch(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(url)  # noqa: S310 -- the scheme is checked above
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        report: dict[str, Any] = json.load(response)
    return report


def render(report: dict[str, Any], previous: dict[str, Any] | None, url: str) -> str:
    """One view of the report; rates are per second since `previous`, if given."""
    counters = report["counters"]
    rate = "-"
    if previous is not None and report["time"] > previous["time"]:
        accepted = report["accepted"] - previous["accepted"]
        rate = f"{accepted / (report['time'] - previous['time']):.1f}/s"
    run = report["latency"]["run"]
    states = ", ".join(f"{n} {s}" for s, n in report["server_workers"].items())
    lines = [
        f"jumpqueue top - {url} - {time.strftime('%H:%M:%S', time.localtime(report['time']))}",
        f"calls: {report['accepted']} accepted ({rate}), {counters.get('succeeded', 0)} "
        f"succeeded, {counters.get('failed', 0)} failed, {counters.get('timed_out', 0)} "
        f"timed out, {sum((counters.get('shed') or {}).values())} shed",
        f"backlog: {report['held']} held, {report['pending']} pending (max "
        f"{report['max_pending']} of {report['pending_limit']}), {report['running']} running",
        f"workers: {report['active_workers']} active, {report['idle_workers']} idle, "
        f"{report['stuck_threads']} stuck; server workers: {states}",
        f"run time p50/p90/p99: {' / '.join(_seconds(run[k]) for k in ('p50', 'p90', 'p99'))}"
        f"   journal backlog: {_shown(report['journal_backlog'])}",
        "",
        "".join(f"{heading:>{width}}" for heading, _, width in _COLUMNS),
    ]
    lines.extend(
        "".join(f"{_shown(row.get(key)):>{width}}" for _, key, width in _COLUMNS)
        for row in report.get("processes", [])
    )
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
