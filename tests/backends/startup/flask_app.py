"""A Flask project: its app, and a task that reads the app's configuration through `current_app`."""

from __future__ import annotations

from flask import Flask, current_app

import jumpqueue
from jumpqueue.contrib.flask import JumpQueue

from ..backend_tasks import report


def create_app() -> Flask:
    """The application factory, as the web process and the worker both call it."""
    app = Flask(__name__)
    app.config["GREETING"] = "read from the Flask app's config"
    JumpQueue(app)
    return app


@jumpqueue.task
def greet(tag: str) -> None:
    """Report a setting of the app: it fails outside an application context."""
    report(tag, greeting=current_app.config["GREETING"])
