"""Every test of this suite runs deferred calls in place, as they run after a response."""

from __future__ import annotations

import pytest
from jumpqueue.testing import CapturedCall
from werkzeug.test import Client

from wsgi_signup import app, outbox


@pytest.fixture(autouse=True)
def deferred_calls(jumpqueue_immediate: list[CapturedCall]) -> list[CapturedCall]:
    """Every test runs deferred calls in place; a test asks for this fixture to see them."""
    return jumpqueue_immediate


@pytest.fixture
def client() -> Client:
    """A test client for the app, with an empty outbox."""
    outbox.clear()
    return Client(app)
