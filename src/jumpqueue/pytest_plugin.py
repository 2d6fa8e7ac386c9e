"""The pytest plugin: `jumpqueue_capture` and `jumpqueue_immediate` fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import CapturedCall, capture, immediate


@pytest.fixture
def jumpqueue_capture() -> Iterator[list[CapturedCall]]:
    """Calls deferred during the test, recorded and not run."""
    with capture() as calls:
        yield calls


@pytest.fixture
def jumpqueue_immediate() -> Iterator[None]:
    """Deferred calls run at once inside `defer()`, their exceptions propagating."""
    with immediate():
        yield
