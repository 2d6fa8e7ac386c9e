"""The pytest plugin: the testing modes of `jumpqueue.testing` as fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import CapturedCall, capture, immediate, live


@pytest.fixture
def jumpqueue_immediate() -> Iterator[list[CapturedCall]]:
    """Deferred calls run in place, as `jumpqueue.testing.immediate()` runs them."""
    with immediate() as calls:
        yield calls


@pytest.fixture
def jumpqueue_capture() -> Iterator[list[CapturedCall]]:
    """Deferred calls recorded with their fate, and not run (`jumpqueue.testing.capture()`)."""
    with capture() as calls:
        yield calls


@pytest.fixture
def jumpqueue_live() -> Iterator[None]:
    """A testing mode that an autouse fixture turned on is off for this test."""
    with live():
        yield
