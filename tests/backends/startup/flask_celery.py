"""The Celery app that docs/migration.md shows for a Flask project."""

import os
from typing import Any

from celery import Celery, Task

import jumpqueue.backends.celery
from tests.backends.startup.flask_app import create_app

flask_app = create_app()


class FlaskTask(Task):  # type: ignore[misc]
    """Every task of the Celery app runs inside an application context of the Flask app."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with flask_app.app_context():
            return self.run(*args, **kwargs)


app = Celery(flask_app.name, broker=os.environ.get("JQ_TEST_BROKER"), task_cls=FlaskTask)
app.conf.update(
    task_default_queue=os.environ.get("JQ_TEST_QUEUE", "celery"),
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)
jumpqueue.backends.celery.register(app)
