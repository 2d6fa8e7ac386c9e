"""Waiting in a request, on real servers: a held call raises at once; a submitted one runs now."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import PY, Coordinator, RunningServer, ServerSpec, running

WAITING_SERVERS = {
    "uvicorn": ServerSpec(
        "uvicorn",
        lambda port: [
            *(PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning", "tests.web.apps.waiting:asgi_app"),
        ],
        "starlette",
    ),
    "gunicorn-sync": ServerSpec(
        "gunicorn-sync",
        lambda port: [
            *(PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"),
            *("--worker-class", "sync", "tests.web.apps.waiting:wsgi_app"),
        ],
        "wsgi",
    ),
}


@pytest.fixture(scope="module", params=sorted(WAITING_SERVERS))
def server(
    request: pytest.FixtureRequest,
    coordinator: Coordinator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    spec = WAITING_SERVERS[request.param]
    with running(spec, coordinator, tmp_path_factory.mktemp(request.param)) as started:
        yield started


def _routes(server: RunningServer, *names: str) -> list[str]:
    asgi_only = {"/deferred-async", "/coroutine-on-loop", "/submitted-async"}
    return [n for n in names if server.spec.framework == "starlette" or n not in asgi_only]


def test_waiting_on_own_held_call_raises_at_once_then_the_call_runs(
    server: RunningServer, coordinator: Coordinator
) -> None:
    for route in _routes(server, "/deferred-sync", "/deferred-async"):
        tag = f"{server.spec.name}{route.replace('/', '-')}"
        # The handler waits up to 30 s; a wait that hung would time this client out.
        response = server.get(f"{route}?tag={tag}", timeout=10)
        assert response.status_code == 200
        assert response.text.startswith("WaitDeadlockError: ")
        assert "jumpqueue.submit()" in response.text
        assert "tests.web.apps.common.report" in response.text  # names the call
        coordinator.wait_for(f"ran {tag}")  # still runs, after its response


def test_submitted_call_runs_now_with_its_retries_and_the_request_waits(
    server: RunningServer,
) -> None:
    for route in _routes(server, "/submitted-sync", "/submitted-async"):
        tag = f"{server.spec.name}{route.replace('/', '-')}"
        response = server.get(f"{route}?tag={tag}", timeout=10)
        assert (response.status_code, response.text) == (200, f"sent {tag}")


def test_blocking_on_a_coroutine_of_the_same_loop_raises_and_awaiting_works(
    server: RunningServer,
) -> None:
    if server.spec.framework != "starlette":
        pytest.skip("an event loop serves ASGI only")
    tag = f"{server.spec.name}-coroutine"
    response = server.get(f"/coroutine-on-loop?tag={tag}", timeout=10)
    assert (response.status_code, response.text) == (200, f"WaitDeadlockError, then sent {tag}")
