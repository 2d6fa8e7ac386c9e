"""The gunicorn hook, called as gunicorn calls it; a real gunicorn runs it in the shutdown tests."""

from __future__ import annotations

import jumpqueue
from jumpqueue.contrib import gunicorn


def test_contrib_gunicorn_worker_exit_drains_the_default_runtime() -> None:
    call = jumpqueue.defer(lambda: None)
    gunicorn.worker_exit(object(), object())
    assert call.done()
    assert jumpqueue.get_runtime().closed
