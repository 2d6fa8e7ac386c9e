"""The `jumpqueue` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `jumpqueue` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jumpqueue", description="Respond now, work after.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show a traffic spike absorbed and healed, live")
    demo.add_argument("--seconds", type=float, default=12.0, help="how long the demo runs")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run  # noqa: PLC0415 -- only the demo needs it

        return run(seconds=args.seconds)
    return 2  # pragma: no cover -- argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
