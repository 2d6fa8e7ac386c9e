"""Fixtures of the web tests: the coordinator of server processes, a configurable runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Config, Runtime

from .harness import Coordinator


@pytest.fixture(scope="module")
def coordinator() -> Iterator[Coordinator]:
    """One coordinator per test module; every server of the module reports to it."""
    hub = Coordinator()
    yield hub
    hub.close()


@pytest.fixture
def reconfigure() -> Iterator[Callable[..., Runtime]]:
    """Replace the default runtime with one of these options; shut it down afterwards."""
    made: list[Runtime] = []

    def configure(**options: Any) -> Runtime:
        runtime = jumpqueue.configure(Config(**options))
        made.append(runtime)
        return runtime

    yield configure
    for runtime in made:
        runtime.shutdown(timeout=5)
    jumpqueue.get_runtime().shutdown(timeout=5)
