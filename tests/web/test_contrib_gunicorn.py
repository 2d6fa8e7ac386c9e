"""The gunicorn hook, called as gunicorn calls it; a real gunicorn runs it in the shutdown tests."""

from __future__ import annotations

from pathlib import Path

import jumpqueue
from jumpqueue.contrib import gunicorn

from .harness import Coordinator, running_installed


def test_contrib_gunicorn_worker_exit_drains_the_default_runtime() -> None:
    call = jumpqueue.defer(lambda: None)
    gunicorn.worker_exit(object(), object())
    assert call.done()
    assert jumpqueue.get_runtime().closed


def test_contrib_gunicorn_servers_of_the_suite_share_no_control_socket(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    # gunicorn >= 25.1 opens one at a path shared by every instance (see tests/conftest.py).
    with running_installed("gunicorn-sync", coordinator, tmp_path) as server:
        assert server.get("/stats").status_code == 200
        assert "Control socket listening" not in server.log()
