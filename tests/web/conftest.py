"""Fixtures of the web tests: the coordinator of server processes, a configurable runtime."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Coordinator


@pytest.fixture(scope="module")
def coordinator() -> Iterator[Coordinator]:
    """One coordinator per test module; every server of the module reports to it."""
    hub = Coordinator()
    yield hub
    hub.close()
