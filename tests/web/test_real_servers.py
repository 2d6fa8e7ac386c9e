"""Every server, over loopback: deferred calls run after the client has the whole response.

One server process per server type serves all the tests of this module. Each
test's tags carry the server's name, so that the coordinator tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import SERVERS, Coordinator, RunningServer, running_installed


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest,
    coordinator: Coordinator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp(request.param)
    with running_installed(request.param, coordinator, directory) as started:
        yield started


def test_real_server_sends_response_while_deferred_call_is_blocked(
    server: RunningServer, coordinator: Coordinator
) -> None:
    tag = f"{server.spec.name}-ordering"
    # The deferred call cannot finish before the test allows it, and the test
    # allows it only after reading the whole response: if the server waited for
    # the call before completing the response, this read would time out.
    response = server.get(f"/ordering?tag={tag}", timeout=10)
    assert (response.status_code, response.text) == (200, "ok")
    coordinator.allow(tag)
    coordinator.wait_for(f"done {tag}")
    if server.spec.framework == "flask":  # had an app context, and no stale request context
        coordinator.wait_for(f"ran {tag}-tests.web.apps.flask_app-no-request-context")
    if server.spec.framework == "fastapi":  # deferred from a dependency, and from its teardown
        coordinator.wait_for(f"ran {tag}-dependency")
        coordinator.wait_for(f"ran {tag}-teardown")


@pytest.mark.parametrize("how", ["raise", "status"])
def test_real_server_skips_calls_of_failed_request(
    server: RunningServer, coordinator: Coordinator, how: str
) -> None:
    tag = f"{server.spec.name}-fail-{how}"
    skipped_before = server.stats()["skipped"]
    response = server.get(f"/fail?tag={tag}&how={how}")
    assert response.status_code == 500
    coordinator.wait_for(f"ran {tag}-always")
    server.wait_stats(lambda stats: stats["skipped"] == skipped_before + 1)
    assert not coordinator.seen(f"ran {tag}-plain")


def test_real_server_finish_request_delivers_response_early(
    server: RunningServer, coordinator: Coordinator
) -> None:
    tag = f"{server.spec.name}-finish"
    finished_before = server.stats()["counters"]["finished_early"]
    # The handler blocks after finish_request() until the test allows it: the
    # client must have the complete response while it is still blocked.
    response = server.get(f"/finish?tag={tag}", timeout=10)
    assert (response.status_code, response.text) == (200, "early")
    coordinator.wait_for(f"ran {tag}-before")  # released by the early response
    coordinator.wait_for(f"ready {tag}-handler")
    assert not coordinator.seen(f"ran {tag}-after")
    coordinator.allow(f"{tag}-handler")
    coordinator.wait_for(f"ran {tag}-after")  # deferred after the response: submitted at once
    stats = server.wait_stats(lambda stats: stats["in_flight"] == 0)
    assert stats["counters"]["finished_early"] == finished_before + 1
    assert stats["counters"]["errors_after_finish"] == 0
