from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from jumpqueue import Status
from jumpqueue.testing import CapturedCall, immediate

from fastapi_signup import app, outbox, send_welcome_email

client = TestClient(app)  # FastAPI's documented style: no lifespan


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    outbox.clear()


@pytest.mark.usefixtures("jumpqueue_immediate")
def test_signup_sends_the_welcome_email() -> None:
    # The calls held for the request run once the client has the whole response.
    response = client.post("/signup", params={"email": "a@example.com"})
    assert response.status_code == 201
    assert outbox == ["a@example.com"]


def test_a_failed_signup_sends_nothing(jumpqueue_immediate: list[CapturedCall]) -> None:
    response = client.post("/signup", params={"email": "taken@example.com"})
    assert response.status_code == 409
    assert jumpqueue_immediate[0].status is Status.SKIPPED
    assert outbox == []


def test_signup_emails_the_address_it_was_given(jumpqueue_immediate: list[CapturedCall]) -> None:
    client.post("/signup", params={"email": "a@example.com"})
    [call] = jumpqueue_immediate
    assert call.fn is send_welcome_email.fn
    assert call.args == ("a@example.com",)
    assert call.status is Status.SUCCEEDED


def test_signup_under_the_lifespan() -> None:
    # Start the client first: its startup makes the runtime ready, and the mode
    # applies to the runtime that serves.
    with TestClient(app) as lifespan_client, immediate() as calls:
        response = lifespan_client.post("/signup", params={"email": "a@example.com"})
        assert response.status_code == 201
        assert outbox == ["a@example.com"]
    assert calls[0].status is Status.SUCCEEDED
