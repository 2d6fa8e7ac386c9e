"""The project of test_real_server.py as an ASGI application."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_tasks.site")

application = get_asgi_application()
