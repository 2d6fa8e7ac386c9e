"""Overload on every real server: far more work than the pool can take, then calm again.

The backlog holds 8 calls and 2 threads run them; 12 clients ask for more
until they have offered at least `FAR_PAST` times what the pool can take in the
time the load has lasted (at least `LOAD_SECONDS`, at most `LOAD_LIMIT_SECONDS`:
a server slowed by a busy machine is offered the same overload, for longer).
The ASGI servers use the "reject" policy (an event loop cannot wait: "wait"
would reject there anyway); the WSGI servers "wait", then reject. Every answer
must be 200 or 503 (no hung connection), each 503 must carry Retry-After,
memory must stay bounded, and afterwards the same server process must answer
normally with an empty backlog and every accepted call accounted for.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from .harness import SERVERS, Coordinator, RunningServer, running_installed

CLIENTS = 12
MAX_WORKERS = 2
MAX_PENDING = 8
#: How long the "wait" policy blocks a handler before it rejects.
OVERLOAD_WAIT = 0.01
LOAD_SECONDS = 1.0
LOAD_LIMIT_SECONDS = 15.0
MAX_REQUESTS_PER_CLIENT = 2000
RSS_GROWTH_LIMIT_KIB = 64 * 1024
#: The offered calls must be at least this many times what the pool can take.
FAR_PAST = 3

# Policy and length of a call in milliseconds. A server that answers slower gets
# longer calls, so that what it is offered stays far past what the pool can take:
# a WSGI server answers no faster than its threads can wait (gunicorn's sync
# worker serves one request at a time), and Django under ASGI runs its views
# one at a time on one thread.
CASES = {
    "uvicorn": ("reject", 100),
    "hypercorn": ("reject", 100),
    "granian": ("reject", 100),
    "gunicorn-sync": ("wait", 300),
    "gunicorn-gthread": ("wait", 200),
    "gunicorn-uvicorn": ("reject", 200),
    "waitress": ("wait", 200),
    "werkzeug": ("wait", 200),
}


def test_every_server_has_an_overload_case() -> None:
    assert set(CASES) == set(SERVERS)


def _capacity(milliseconds: int, seconds: float) -> float:
    """The most calls the pool can take in `seconds`: what it runs, and its backlog."""
    return MAX_WORKERS * seconds * 1000 / milliseconds + MAX_PENDING


class Load:
    """The clients' shared tally: what they were answered, and whether to go on."""

    def __init__(self, milliseconds: int) -> None:
        self.milliseconds = milliseconds
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.far_past = False

    def answered(self, status: int) -> bool:
        """Count one answer; whether the clients should offer more."""
        with self.lock:
            self.statuses[status] += 1
            elapsed = time.monotonic() - self.started
            offered = self.statuses.total()
            if elapsed >= LOAD_SECONDS and offered >= FAR_PAST * _capacity(
                self.milliseconds, elapsed
            ):
                self.far_past = True
            return not self.far_past and elapsed < LOAD_LIMIT_SECONDS


@pytest.fixture(params=sorted(CASES))
def overloadable_server(
    request: pytest.FixtureRequest,
    coordinator: Coordinator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    environment = {
        "JUMPQUEUE_MAX_WORKERS": str(MAX_WORKERS),
        "JUMPQUEUE_MAX_PENDING": str(MAX_PENDING),
        "JUMPQUEUE_ON_OVERLOAD": CASES[request.param][0],
        "JUMPQUEUE_OVERLOAD_WAIT": str(OVERLOAD_WAIT),
    }
    directory = tmp_path_factory.mktemp(request.param)
    with running_installed(request.param, coordinator, directory, **environment) as started:
        yield started


def _offer_load(client: httpx.Client, load: Load) -> None:
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        response = client.get(f"/work?ms={load.milliseconds}")
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
        if not load.answered(response.status_code):
            break


@pytest.mark.timeout(60)
def test_real_server_overload_sheds_then_recovers(overloadable_server: RunningServer) -> None:
    server = overloadable_server
    policy, milliseconds = CASES[server.spec.name]
    before = server.stats()
    errors: list[BaseException] = []

    def offer(client: httpx.Client, load: Load) -> None:
        try:
            with client:
                _offer_load(client, load)
        except BaseException as error:  # noqa: BLE001 -- reported by the test below
            errors.append(error)

    # The clients are made before the clock starts, with one SSL context for all
    # (httpx builds one per client otherwise, tens of milliseconds each).
    context = ssl.create_default_context()
    clients = [
        httpx.Client(base_url=server.url, timeout=10, verify=context) for _ in range(CLIENTS)
    ]
    load = Load(milliseconds)
    threads = [threading.Thread(target=offer, args=(client, load)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_LIMIT_SECONDS + 30)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert not errors, errors
    statuses = load.statuses
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, statuses
    assert statuses[200] > 0, statuses
    assert load.far_past, f"{statuses} in {LOAD_LIMIT_SECONDS} s is not {FAR_PAST}x capacity"
    offered = statuses.total()

    after = server.wait_stats(lambda stats: stats["in_flight"] == 0, timeout=20)
    assert after["pid"] == before["pid"], "the server restarted its worker"
    assert after["submitted"] == after["finished"], after
    assert after["submitted"] - before["submitted"] == offered, (before, after)
    assert after["counters"]["overloaded"] - before["counters"]["overloaded"] == statuses[503]
    assert after["shed"]["reject"] == statuses[503]
    if policy == "wait":
        assert after["waited"] > 0, after
    assert after["succeeded"] - before["succeeded"] == statuses[200]
    assert after["rss_kib"] - before["rss_kib"] < RSS_GROWTH_LIMIT_KIB, (before, after)

    response = server.get("/work?ms=1")
    assert response.status_code == 200
    final = server.wait_stats(lambda stats: stats["in_flight"] == 0)
    assert final["pid"] == before["pid"]
    assert final["succeeded"] == after["succeeded"] + 1
