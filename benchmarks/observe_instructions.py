"""What observing calls costs: defer()+run with no observer, a no-op observer, and OpenTelemetry.

    python benchmarks/observe_instructions.py [--calls 2000] [--baseline OTHER/src]

Counts the CPU instructions (valgrind's callgrind: noise-free, unlike time on a
shared machine) of one no-op call deferred and run to its end. The call runs in
the caller's thread (`jumpqueue.testing.immediate`), through the same hooks as
on a pool thread: the pool's hand-off between threads, the same in every mode,
is left out, since its cost varies with how threads get scheduled. Each mode
runs in a child under callgrind twice, with 200 and with 200 + `--calls` calls,
and the difference divided by `--calls` is the cost of one call (start-up,
imports and warm-up cancel out; with a fixed hash seed, runs agree to the
instruction).
Modes, measured in the same run:

- no observer: the hooks' truthiness checks only;
- a no-op `CallObserver` registered: the hook calls themselves;
- `JumpQueueInstrumentor` on the OpenTelemetry SDK (a TracerProvider with a
  SimpleSpanProcessor and an exporter that drops the spans): two spans per call.

`--baseline` measures the first mode again with the jumpqueue found under
another checkout's `src` (say `git worktree add /tmp/before <commit>`): the
hooks' cost when nothing observes, against code without them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from _load import callgrind

WARM_UP = 200
MODES = {
    "none": "no observer",
    "noop": "a no-op observer",
    "otel": "OpenTelemetry instrumentor (SDK, spans dropped)",
}


def noop() -> None:
    """The call deferred: nothing, so only jumpqueue's own work is counted."""


def child(mode: str, calls: int) -> None:
    """Defer and run `calls` no-op calls in this process, observed as `mode` says."""
    import jumpqueue

    if mode == "noop":
        from jumpqueue.integration import CallObserver, add_observer

        add_observer(CallObserver())
    elif mode == "otel":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from jumpqueue.contrib.opentelemetry import JumpQueueInstrumentor

        class Dropped(SpanExporter):
            def export(self, spans: Sequence[object]) -> SpanExportResult:  # noqa: ARG002 -- dropped
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Dropped()))
        JumpQueueInstrumentor().instrument(tracer_provider=provider)
    from jumpqueue.testing import immediate

    runtime = jumpqueue.Runtime(jumpqueue.Config(max_workers=1))
    # One thread: the call runs inside defer() through the same hooks as on a pool thread.
    with immediate(runtime):
        for _ in range(calls):
            runtime.defer(noop)
    runtime.shutdown()


def instructions(mode: str, calls: int, pythonpath: str | None) -> int:
    """Instructions callgrind counts for a child that runs `calls` calls."""
    # A fixed hash seed: with a random one, dict and set work differs from run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return callgrind([__file__, "--child", mode, "--calls", str(calls)], env)


def per_call(mode: str, calls: int, pythonpath: str | None = None) -> float:
    """Instructions of one deferred call, start-up and warm-up taken out."""
    short = instructions(mode, WARM_UP, pythonpath)
    long = instructions(mode, WARM_UP + calls, pythonpath)
    return (long - short) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help="another checkout's src directory")
    options = parser.parse_args()
    if options.child:
        child(options.child, options.calls)
        return
    rows = [(label, per_call(mode, options.calls)) for mode, label in MODES.items()]
    if options.baseline:
        before = per_call("none", options.calls, str(Path(options.baseline).resolve()))
        rows.insert(0, (f"no observer, jumpqueue of {options.baseline}", before))
    peer = rows[1][1] if options.baseline else rows[0][1]
    print(f"defer() + run of one no-op call ({options.calls} calls, callgrind)\n")
    print("| observing | instructions per call | x no observer |")
    print("|---|---:|---:|")
    for label, count in rows:
        print(f"| {label} | {count:,.0f} | {count / peer:.3f} |")


if __name__ == "__main__":
    main()
