"""The RQ worker start-up that docs/migration.md shows for a Flask project."""

from typing import Any

from rq import Worker

from tests.backends.startup.flask_app import create_app

app = create_app()


class FlaskWorker(Worker):
    """RQ's worker, running each job inside an application context of the app."""

    def perform_job(self, *args: Any, **kwargs: Any) -> bool:
        with app.app_context():
            return bool(super().perform_job(*args, **kwargs))
