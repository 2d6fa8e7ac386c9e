"""A plain WSGI app that defers a welcome e-mail: the app the pytest recipe tests."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import jumpqueue
from jumpqueue.wsgi import JumpQueueMiddleware

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

registered = {"taken@example.com"}  # stands for the users table
outbox: list[str] = []  # stands for the mail server


@jumpqueue.task(retries=3)
def send_welcome_email(address: str) -> None:
    """Send the welcome e-mail."""
    outbox.append(address)


def signup(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """`POST /?email=...`: 201, and the e-mail once the response is sent; 409 if taken."""
    address = parse_qs(environ["QUERY_STRING"])["email"][0]
    jumpqueue.defer(send_welcome_email, address)  # held until the response is sent
    if address in registered:  # the request fails after defer(): the e-mail is skipped
        start_response("409 Conflict", [("Content-Type", "text/plain")])
        return [b"already registered"]
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"welcome!"]


app = JumpQueueMiddleware(signup)
