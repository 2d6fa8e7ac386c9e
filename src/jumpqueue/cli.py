"""The `jumpqueue` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _check_cli, _top_cli
from ._journal import cli as _journal_cli
from ._runtime import Runtime


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `jumpqueue` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jumpqueue", description="Respond now, work after.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show a traffic spike absorbed and healed, live")
    demo.add_argument("--seconds", type=float, default=None, help="shorten or stretch the demo")
    demo.add_argument("--plot", type=Path, default=None, help="write the timeline to this PNG")
    _journal_cli.add_commands(commands)
    _check_cli.add_command(commands)
    _top_cli.add_command(commands)
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check_cli.run(args)
    if args.command == "top":
        return _top_cli.run(args)
    if args.command in _journal_cli.COMMANDS:
        return _journal_cli.run(args, make_runtime=Runtime)
    if args.command == "demo":
        from .demo import run  # noqa: PLC0415 -- only the demo needs it

        return run(seconds=args.seconds, plot=args.plot)
    return 2  # pragma: no cover -- argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
