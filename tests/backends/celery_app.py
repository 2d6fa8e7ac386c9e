"""The Celery app the test workers run (`celery -A tests.backends.celery_app worker`).

Its broker, queue and key prefix come from the environment the test sets.
"""

from __future__ import annotations

import os

from celery import Celery

from jumpqueue.backends.celery import register

BROKER_ENV = "JQ_TEST_BROKER"
QUEUE_ENV = "JQ_TEST_QUEUE"


def make_app(broker: str, queue: str) -> Celery:
    """A Celery app for the tests: one queue, no remote control, keys prefixed on Redis."""
    app = Celery("jumpqueue-test", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        worker_enable_remote_control=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    if broker.startswith("redis"):
        # Every key the test creates in the shared Redis carries the queue's name.
        app.conf.broker_transport_options = {"global_keyprefix": f"{queue}:"}
    return app


app = make_app(os.environ.get(BROKER_ENV, "memory://"), os.environ.get(QUEUE_ENV, "jumpqueue-test"))
# The test modules' functions may run: the app includes them, as a project includes its own.
app.conf.include = ["tests.backends.backend_tasks"]
register(app)
