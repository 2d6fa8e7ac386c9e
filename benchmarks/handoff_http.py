"""Request latency of an endpoint that hands one call to RQ or Celery, against doing it directly.

    python benchmarks/handoff_http.py [--rounds 3] [--seconds 3] [--connections 16]

Each endpoint is a synchronous Starlette handler (served by uvicorn, behind
`jumpqueue.asgi.JumpQueueMiddleware`) that answers "ok" and leaves one no-op
call behind it: kept in the local thread pool (`jumpqueue.defer`), handed to
RQ or Celery by `jumpqueue.defer` with a `backend=` (after the response), or
sent by the handler itself (`queue.enqueue` / `apply_async`, before the
response), plus a baseline that leaves nothing. Each endpoint has its own
server process. RQ talks to a private `redis-server` this script starts (so
the shared one is not filled with jobs; pinned with the client, away from the
servers' CPUs, as a broker on another machine would be), Celery to the local
RabbitMQ, in a
queue of its own deleted afterwards; no worker consumes them, so only the
hand-off is measured. The load is closed-loop keep-alive HTTP/1.1 (`wrk`, or
a small asyncio client when it is missing) from N connections; with two or
more CPUs the client is pinned to the first and the servers to the others.
Rounds are interleaved, figures are medians over rounds, and ratios are to
the no-task endpoint measured in the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _load import (
    Load,
    cpu_split,
    free_port,
    get_json,
    python_client,
    wait_for_port,
    wrk,
)

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
NOOP_TASK = "jumpqueue.bench.noop"
PAUSE = 0.5  # between two measurements: lets the previous hand-offs drain


def noop() -> None:
    """The call left behind: nothing, so only the hand-off is measured."""


# -- the servers ---------------------------------------------------------------------------------


def build_app(variant: str, broker: str) -> Any:
    """The Starlette app of one endpoint, behind jumpqueue's middleware."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    import jumpqueue
    from jumpqueue.asgi import JumpQueueMiddleware

    work: Callable[[], object] = lambda: None  # noqa: E731 -- the baseline leaves nothing
    if variant.startswith("jumpqueue"):

        def work() -> object:
            return jumpqueue.defer(noop)

    elif variant == "rq direct":
        import redis
        import rq

        queue = rq.Queue(os.environ["BENCH_QUEUE"], connection=redis.Redis.from_url(broker))

        def work() -> object:
            return queue.enqueue(noop)

    elif variant == "celery direct":
        import celery

        app = celery.Celery("bench", broker=broker, set_as_current=False)

        def work() -> object:
            return app.send_task(NOOP_TASK, queue=os.environ["BENCH_QUEUE"])

    def endpoint(_: Request) -> PlainTextResponse:
        work()
        return PlainTextResponse("ok")

    def stats(_: Request) -> JSONResponse:
        return JSONResponse(jumpqueue.stats().as_dict())

    routes = [Route("/", endpoint), Route("/stats", stats)]
    return JumpQueueMiddleware(Starlette(routes=routes))


def serve(variant: str, port: int, broker: str) -> None:
    import uvicorn

    import jumpqueue

    if variant == "jumpqueue rq":
        jumpqueue.configure(backend=f"rq+{broker}", backend_queue=os.environ["BENCH_QUEUE"])
    elif variant == "jumpqueue celery":
        jumpqueue.configure(backend=f"celery+{broker}", backend_queue=os.environ["BENCH_QUEUE"])
    uvicorn.run(
        build_app(variant, broker),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


# -- the measurements ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Endpoint:
    variant: str
    label: str
    broker: str


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def private_redis(cpu: list[str]) -> Iterator[str | None]:
    """A redis-server of our own on a free port (None if it is not installed)."""
    if shutil.which("redis-server") is None:
        yield None
        return
    port = free_port()
    command = [*cpu, "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def servers(endpoints: list[Endpoint], cpu: list[str], queue: str) -> Iterator[dict[Endpoint, int]]:
    ports: dict[Endpoint, int] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for endpoint in endpoints:
            port = free_port()
            # Loaded as the module `handoff_http`, not `__main__`: hand-off and RQ both
            # refuse functions of `__main__`, which a worker could not import.
            # The benchmarks folder goes on sys.path, for `_load`, as it is for the script itself.
            code = (
                "import importlib.util, sys\n"
                f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
                f"spec = importlib.util.spec_from_file_location('handoff_http', {__file__!r})\n"
                "module = sys.modules['handoff_http'] = importlib.util.module_from_spec(spec)\n"
                "spec.loader.exec_module(module)\n"
                f"module.serve({endpoint.variant!r}, {port}, {endpoint.broker!r})\n"
            )
            command = [*cpu, sys.executable, "-c", code]
            process = subprocess.Popen(command, env={**os.environ, "BENCH_QUEUE": queue})
            processes.append(process)
            ports[endpoint] = port
        for endpoint, process in zip(endpoints, processes, strict=True):
            wait_for_port(ports[endpoint], process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def drained_stats(port: int, limit: float = 60.0) -> tuple[dict[str, Any], float]:
    """The server's stats once nothing is in flight, and how long that took."""
    start = time.monotonic()
    while True:
        snapshot = get_json(port, "/stats")
        waited = time.monotonic() - start
        if snapshot["pending"] + snapshot["running"] == 0 or waited > limit:
            return snapshot, waited
        time.sleep(0.1)


def delete_rabbitmq_queue(queue: str) -> None:
    import kombu

    with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    pin, client_cpu, server_cpu = cpu_split()
    queue = f"jumpqueue-bench-http-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        # The broker shares the client's CPU, not the servers': as if on another machine.
        redis_url = stack.enter_context(private_redis(client_cpu))
        endpoints = [Endpoint("none", "no task", "")]
        endpoints.append(Endpoint("jumpqueue local", "jumpqueue.defer, local pool", ""))
        if redis_url is None:
            print("RQ: skipped (redis-server is not installed)")
        else:
            endpoints.append(
                Endpoint("rq direct", "RQ `queue.enqueue()` in the handler", redis_url)
            )
            endpoints.append(Endpoint("jumpqueue rq", "jumpqueue.defer → RQ", redis_url))
        if not reachable(5672):
            print("Celery: skipped (RabbitMQ is not reachable on 127.0.0.1:5672)")
        else:
            stack.callback(delete_rabbitmq_queue, queue)
            label = "Celery `apply_async()` in the handler"
            endpoints.append(Endpoint("celery direct", label, RABBITMQ_URL))
            endpoints.append(Endpoint("jumpqueue celery", "jumpqueue.defer → Celery", RABBITMQ_URL))
        if shutil.which("wrk"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            generate = wrk(client_cpu, folder)
            client = "wrk"
        else:
            generate = python_client
            client = "asyncio client"
        ports = stack.enter_context(servers(endpoints, server_cpu, queue))
        for port in ports.values():
            generate(port, "/", args.connections, 2.0)  # warm up: threads, connections
        results: dict[Endpoint, list[Load]] = {endpoint: [] for endpoint in endpoints}
        for _ in range(args.rounds):
            for endpoint in endpoints:
                results[endpoint].append(
                    generate(ports[endpoint], "/", args.connections, args.seconds)
                )
                time.sleep(PAUSE)
        stats = {
            endpoint: drained_stats(ports[endpoint])
            for endpoint in endpoints
            if endpoint.variant.startswith("jumpqueue")
        }
    print_table(results, args, client, pin)
    print()
    for endpoint, (snapshot, seconds) in stats.items():
        print(
            f"- {endpoint.label}: {snapshot['submitted']} calls, {snapshot['succeeded']} run "
            f"locally, {snapshot['handed_off']} handed off "
            f"({snapshot['backends'] or 'no backend'}); backlog drained {seconds:.1f} s "
            "after the load"
        )


def print_table(
    results: dict[Endpoint, list[Load]], args: argparse.Namespace, client: str, pin: bool
) -> None:
    baseline = next(iter(results.values()))
    print(
        f"\nStarlette sync endpoint, uvicorn, {args.connections} connections, {client}"
        f"{', client and servers on separate CPUs' if pin else ''}; median of {args.rounds} "
        f"rounds of {args.seconds:g} s\n"
    )
    print("| endpoint | requests/s | p50 ms | p99 ms | p50 / no task | p99 / no task | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for endpoint, loads in results.items():
        p50_ratio = statistics.median(
            load.p50 / base.p50 for load, base in zip(loads, baseline, strict=True) if base.p50
        )
        p99_ratio = statistics.median(
            load.p99 / base.p99 for load, base in zip(loads, baseline, strict=True) if base.p99
        )
        print(
            f"| {endpoint.label} | {statistics.median(load.rate for load in loads):.0f} | "
            f"{statistics.median(load.p50 for load in loads):.2f} | "
            f"{statistics.median(load.p99 for load in loads):.2f} | {p50_ratio:.2f} | "
            f"{p99_ratio:.2f} | {sum(load.errors for load in loads)} |"
        )


if __name__ == "__main__":
    main()
