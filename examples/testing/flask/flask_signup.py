"""A Flask app that defers a welcome e-mail: the app the Flask recipe tests."""

from __future__ import annotations

import jumpqueue
from flask import Flask, abort, request
from jumpqueue.contrib.flask import JumpQueue

app = Flask(__name__)
JumpQueue(app)

registered = {"taken@example.com"}  # stands for the users table
outbox: list[str] = []  # stands for the mail server


@jumpqueue.task(retries=3)
def send_welcome_email(address: str) -> None:
    """Send the welcome e-mail."""
    outbox.append(address)


@app.post("/signup")
def signup() -> tuple[str, int]:
    """201, and the e-mail once the response is sent; 409 if the address is taken."""
    address = request.form["email"]
    jumpqueue.defer(send_welcome_email, address)  # held until the response is sent
    if address in registered:  # the request fails after defer(): the e-mail is skipped
        abort(409)
    return "welcome!", 201
