from __future__ import annotations

import pytest
from jumpqueue import Status
from jumpqueue.testing import CapturedCall
from werkzeug.test import Client

from wsgi_signup import outbox, send_welcome_email


def test_signup_sends_the_welcome_email(client: Client) -> None:
    # Leaving the block closes the response, as a server does after its last byte:
    # that is when the calls held for the request run.
    with client.post("/?email=a@example.com") as response:
        assert response.status_code == 201
    assert outbox == ["a@example.com"]


def test_a_failed_signup_sends_nothing(client: Client, deferred_calls: list[CapturedCall]) -> None:
    with client.post("/?email=taken@example.com") as response:
        assert response.status_code == 409
    assert deferred_calls[0].status is Status.SKIPPED
    assert outbox == []


def test_signup_emails_the_address_it_was_given(
    client: Client, deferred_calls: list[CapturedCall]
) -> None:
    with client.post("/?email=a@example.com"):
        pass
    [call] = deferred_calls
    assert call.fn is send_welcome_email.fn
    assert call.args == ("a@example.com",)
    assert call.status is Status.SUCCEEDED


def test_signup_only_defers_the_email(
    client: Client, jumpqueue_capture: list[CapturedCall]
) -> None:
    # capture() on top of the suite's immediate(): calls are recorded, and none runs.
    with client.post("/?email=a@example.com"):
        pass
    assert jumpqueue_capture[0].status is Status.PENDING  # released: it would run
    assert outbox == []


@pytest.mark.usefixtures("jumpqueue_live")
def test_the_email_task_on_the_real_thread_pool() -> None:
    # The suite's immediate() is off here: the call runs on jumpqueue's thread pool.
    handle = send_welcome_email.defer("b@example.com")
    handle.result(timeout=5)
    assert handle.status is Status.SUCCEEDED
    assert "b@example.com" in outbox
