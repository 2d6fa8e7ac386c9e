"""SIGTERM on a real server while deferred calls run: they finish within
`shutdown_timeout`; what cannot is abandoned, counted and logged.

uvicorn drains through the ASGI lifespan; gunicorn's sync worker through the
`worker_exit` hook of `jumpqueue.contrib.gunicorn` (its `--config`).
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from .harness import SERVERS, Coordinator, running

SHUTDOWN_TIMEOUT = 3.0


@pytest.mark.parametrize("name", ["uvicorn", "gunicorn-sync"])
@pytest.mark.timeout(60)
def test_real_server_sigterm_drains_running_calls(
    name: str, coordinator: Coordinator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = SERVERS[name]
    missing = spec.missing()
    if missing is not None:
        pytest.skip(f"{missing} is not installed for this Python")
    environment = {"JUMPQUEUE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    with running(spec, coordinator, tmp_path_factory.mktemp(name), **environment) as server:
        finishing, hanging = f"{name}-sigterm-finishing", f"{name}-sigterm-hanging"
        for tag in (finishing, hanging):
            assert server.get(f"/ordering?tag={tag}").status_code == 200
            coordinator.wait_for(f"ready {tag}")  # both calls are running now

        server.terminate()
        stopped_at = time.monotonic()
        coordinator.allow(finishing)  # one call can finish during the drain; the other never
        coordinator.wait_for(f"done {finishing}")
        # uvicorn raises the signal again once it has shut down gracefully.
        assert server.wait(SHUTDOWN_TIMEOUT + 10) in (0, -signal.SIGTERM)
        assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT + 10

        log = server.log()
        assert re.search(r"shutdown after 3\.0 s abandoned 1 call\(s\): \S*block", log), log
        assert not coordinator.seen(f"done {hanging}")
