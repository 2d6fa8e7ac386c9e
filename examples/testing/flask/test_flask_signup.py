from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from jumpqueue import Status
from jumpqueue.testing import CapturedCall

from flask_signup import app, outbox, send_welcome_email


@pytest.fixture
def client() -> FlaskClient:
    outbox.clear()
    return app.test_client()


@pytest.mark.usefixtures("jumpqueue_immediate")
def test_signup_sends_the_welcome_email(client: FlaskClient) -> None:
    # Leaving the block closes the response, as a server does after its last byte:
    # that is when the calls held for the request run.
    with client.post("/signup", data={"email": "a@example.com"}) as response:
        assert response.status_code == 201
    assert outbox == ["a@example.com"]


def test_a_failed_signup_sends_nothing(
    client: FlaskClient, jumpqueue_immediate: list[CapturedCall]
) -> None:
    with client.post("/signup", data={"email": "taken@example.com"}) as response:
        assert response.status_code == 409
    assert jumpqueue_immediate[0].status is Status.SKIPPED
    assert outbox == []


def test_signup_emails_the_address_it_was_given(
    client: FlaskClient, jumpqueue_immediate: list[CapturedCall]
) -> None:
    with client.post("/signup", data={"email": "a@example.com"}):
        pass
    [call] = jumpqueue_immediate
    assert call.fn is send_welcome_email.fn
    assert call.args == ("a@example.com",)
    assert call.status is Status.SUCCEEDED
