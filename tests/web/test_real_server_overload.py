"""Overload on a real server: far more work than the pool can take, then calm again.

The backlog holds 8 calls and 2 threads run them; 12 clients ask for more for
two seconds (gunicorn's sync worker serves one request at a time, so its calls
are longer, to offer it as much more than it can run). Every answer must be 200
or 503 (no hung connection), each 503 must carry Retry-After, memory must stay
bounded, and afterwards the server must answer normally with an empty backlog
and every accepted call accounted for.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from .harness import SERVERS, Coordinator, RunningServer, running

CLIENTS = 12
LOAD_SECONDS = 2.0
MAX_REQUESTS_PER_CLIENT = 2000
RSS_GROWTH_LIMIT_KIB = 64 * 1024

# Policy and length of a call in milliseconds. uvicorn would turn "wait" into
# "reject" on its event loop anyway; gunicorn's sync worker waits, then rejects.
CASES = {"uvicorn": ("reject", 100), "gunicorn-sync": ("wait", 200)}


@pytest.fixture(params=sorted(CASES))
def overloadable_server(
    request: pytest.FixtureRequest,
    coordinator: Coordinator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    spec = SERVERS[request.param]
    missing = spec.missing()
    if missing is not None:
        pytest.skip(f"{missing} is not installed for this Python")
    environment = {
        "JUMPQUEUE_MAX_WORKERS": "2",
        "JUMPQUEUE_MAX_PENDING": "8",
        "JUMPQUEUE_ON_OVERLOAD": CASES[request.param][0],
        "JUMPQUEUE_OVERLOAD_WAIT": "0.05",
    }
    with running(spec, coordinator, tmp_path_factory.mktemp(spec.name), **environment) as started:
        yield started


def _offer_load(server: RunningServer, statuses: Counter[int], lock: threading.Lock) -> None:
    milliseconds = CASES[server.spec.name][1]
    deadline = time.monotonic() + LOAD_SECONDS
    seen: Counter[int] = Counter()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            response = client.get(f"/work?ms={milliseconds}")
            if response.status_code == 503:
                assert int(response.headers["Retry-After"]) >= 1
            seen[response.status_code] += 1
    with lock:
        statuses.update(seen)


@pytest.mark.timeout(60)
def test_real_server_overload_sheds_then_recovers(overloadable_server: RunningServer) -> None:
    server = overloadable_server
    before = server.stats()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            _offer_load(server, statuses, lock)
        except BaseException as error:  # noqa: BLE001 -- reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_SECONDS + 30)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert not errors, errors
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, statuses
    assert statuses[200] > 0, statuses

    after = server.wait_stats(lambda stats: stats["in_flight"] == 0, timeout=20)
    assert after["submitted"] == after["finished"], after
    assert after["counters"]["overloaded"] - before["counters"]["overloaded"] == statuses[503]
    assert after["shed"]["reject"] == statuses[503]
    if CASES[server.spec.name][0] == "wait":
        assert after["waited"] > 0, after
    assert after["succeeded"] - before["succeeded"] == statuses[200]
    assert after["rss_kib"] - before["rss_kib"] < RSS_GROWTH_LIMIT_KIB, (before, after)

    response = server.get("/work?ms=1")
    assert response.status_code == 200
    server.wait_stats(lambda stats: stats["in_flight"] == 0)
