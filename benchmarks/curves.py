"""Scaling curves: req/s and p99 against connections, for 1 to 8 uvicorn workers, in one run.

    python benchmarks/curves.py [--rounds 2] [--seconds 2] [--workers 1,2,4,8]
                                [--connections 16,64,256] [--out docs/img]

Three endpoints, each answering "ok": no task, `jumpqueue.defer` of a 200 ms
coroutine (`await asyncio.sleep(0.2)`), and Starlette's `BackgroundTasks` of
the same coroutine (apps in `benchmarks/apps/bench_starlette.py`; jumpqueue
bounded high enough that nothing is shed). For each worker count the servers
start once (`uvicorn --workers N`); rounds are interleaved (round,
connections, endpoint), the load is `wrk -t1` (closed loop, keep-alive), and
figures are medians over rounds with their range. Nothing is pinned: servers
and wrk share every core, as on a small machine. Draws `curves-rps.png` and
`curves-p99.png` into OUT (one panel per worker count, one line per endpoint;
the bars are the range over rounds) and prints the same figures as a table.
Needs wrk (Debian's package) and the bench extra (matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _load import APPS, Endpoint, Load, median_range, serve, spread, table_head, wrk

PAUSE = 0.3  # between measurements: the last 200 ms tasks of the previous one finish
UNBOUNDED = {"JUMPQUEUE_MAX_ASYNC": "100000", "JUMPQUEUE_MAX_PENDING": "100000"}
#: (label, app, path, environment), in the order of the legend.
ENDPOINTS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("no task", "bench_starlette:plain", "/none", {}),
    ("jumpqueue.defer", "bench_starlette:with_jumpqueue", "/jumpqueue", UNBOUNDED),
    ("BackgroundTasks", "bench_starlette:plain", "/background", {}),
)
ROOT = Path(__file__).resolve().parents[1]

Key = tuple[int, int, str]  # workers, connections, endpoint label


def uvicorn_workers(app: str, path: str, workers: int, env: dict[str, str]) -> Endpoint:
    command = ("uvicorn", app, "--app-dir", str(APPS), "--log-level", "warning")
    options = ("--no-access-log", "--workers", str(workers))
    return Endpoint(
        f"uvicorn --workers {workers}", app, (*command, *options), path, tuple(env.items())
    )


def measure(args: argparse.Namespace, tmp: Path) -> dict[Key, list[Load]]:
    load = wrk([], tmp)
    results: dict[Key, list[Load]] = {}
    for workers in args.workers:
        with contextlib.ExitStack() as servers:
            ports: dict[str, int] = {}
            for label, app, path, env in ENDPOINTS:
                endpoint = uvicorn_workers(app, path, workers, env)
                log = tmp / f"{workers}-{len(ports)}.log"
                ports[label] = servers.enter_context(serve(endpoint, [], log)).port
            for label, _, path, _ in ENDPOINTS:  # warm up: every worker has started
                load(ports[label], path, max(args.connections), 1.0)
            for _ in range(args.rounds):
                for connections in args.connections:
                    for label, _, path, _ in ENDPOINTS:
                        time.sleep(PAUSE)
                        result = load(ports[label], path, connections, args.seconds)
                        results.setdefault((workers, connections, label), []).append(result)
    return results


def plot(results: dict[Key, list[Load]], args: argparse.Namespace, out: Path) -> list[Path]:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    figures: list[tuple[str, str, Callable[[Load], float]]] = [
        ("curves-rps.png", "requests per second", lambda load: load.rate),
        ("curves-p99.png", "p99 latency (ms)", lambda load: load.p99),
    ]
    for name, title, figure in figures:
        # squeeze=False: a row of panels even for one worker count (else a lone Axes).
        fig, panels = plt.subplots(
            1,
            len(args.workers),
            figsize=(3.2 * len(args.workers), 3.4),
            sharey=True,
            squeeze=False,
        )
        axes = list(panels[0])
        for axis, workers in zip(axes, args.workers, strict=True):
            for label, *_ in ENDPOINTS:
                points = [
                    median_range([figure(load) for load in results[workers, c, label]])
                    for c in args.connections
                ]
                middle = [m for m, _, _ in points]
                errors = [[m - low for m, low, _ in points], [high - m for m, _, high in points]]
                axis.errorbar(
                    args.connections, middle, yerr=errors, marker="o", capsize=3, label=label
                )
            axis.set_xscale("log", base=2)
            axis.set_xticks(args.connections, [str(c) for c in args.connections])
            axis.set_title(f"{workers} worker{'s' if workers > 1 else ''}")
            axis.set_xlabel("connections")
            axis.grid(visible=True, alpha=0.3)
        axes[0].set_ylabel(title)
        if name == "curves-p99.png":
            axes[0].set_yscale("log")
        axes[-1].legend(fontsize="small")
        fig.suptitle(f"uvicorn, Starlette, 200 ms deferred coroutine: {title}", fontsize="medium")
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        drawn.append(out / name)
    return drawn


def table(results: dict[Key, list[Load]], args: argparse.Namespace) -> list[str]:
    labels = [label for label, *_ in ENDPOINTS]
    columns = [f"{label} {figure}" for label in labels for figure in ("req/s", "p99")]
    lines = table_head("workers", "connections", *columns, text=0)
    for workers in args.workers:
        for connections in args.connections:
            base = statistics.median(load.rate for load in results[workers, connections, "no task"])
            cells = []
            for label in labels:
                loads = results[workers, connections, label]
                rate, low, high = median_range([load.rate for load in loads])
                errors = sum(load.errors for load in loads)
                ratio = "" if label == "no task" else f", {rate / base:.2f}x"
                cells.append(
                    f"{rate:,.0f} ({low:,.0f} to {high:,.0f}{ratio})"
                    + (f" [{errors} errors]" if errors else "")
                )
                cells.append(spread([load.p99 for load in loads], ",.0f", " to ", " ms"))
            lines.append(f"| {workers} | {connections} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--connections", default="16,64,256")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.workers = [int(x) for x in args.workers.split(",")]
    args.connections = [int(x) for x in args.connections.split(",")]
    if shutil.which("wrk") is None:
        print("curves.py needs wrk (apt-get install wrk)")
        return 1
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args, Path(tmp))
    drawn = plot(results, args, args.out)
    print(
        f"\n{os.cpu_count()} cores, shared by the servers and wrk (nothing pinned); wrk -t1, "
        f"closed loop, keep-alive; {args.rounds} interleaved rounds of {args.seconds:g} s, "
        f"medians (range), req/s ratio to the no-task endpoint of the same round set; Python "
        f"{sys.version.split()[0]}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.\n"
    )
    print("\n".join(table(results, args)))
    print(f"\nplots: {', '.join(map(str, drawn))}; runtime {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
