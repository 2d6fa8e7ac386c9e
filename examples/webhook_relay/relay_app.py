"""A Flask webhook relay: acknowledge at once, forward after the response, retry until taken."""

from __future__ import annotations

import os
import urllib.request

import jumpqueue
from flask import Flask, request
from jumpqueue.contrib.flask import JumpQueue

app = Flask(__name__)
app.config["JUMPQUEUE_MAX_WORKERS"] = 4  # jumpqueue's options, as JUMPQUEUE_* variables
JumpQueue(app)


@jumpqueue.task(retries=5, retry_backoff=0.2, timeout=30)
def relay(body: str, content_type: str) -> None:
    """POST the event to the target; an error (a 5xx, a refused connection) is retried."""
    forward = urllib.request.Request(  # noqa: S310 -- the target is the operator's own URL
        os.environ["RELAY_TARGET"],
        data=body.encode(),
        headers={"Content-Type": content_type},
        method="POST",
    )
    with urllib.request.urlopen(forward, timeout=10) as response:  # noqa: S310 -- see above
        response.read()


@app.post("/hooks")
def receive() -> tuple[str, int]:
    """202 at once: the sender is never held up by the target."""
    jumpqueue.defer(relay, request.get_data(as_text=True), request.content_type or "text/plain")
    return "accepted", 202
