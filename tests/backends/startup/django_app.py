"""The Django project's WSGI application, as its web process loads it (`jumpqueue check --app`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.backends.startup.django_settings")
application = get_wsgi_application()

from . import tasks  # noqa: E402, F401 -- as the views import the tasks they defer
