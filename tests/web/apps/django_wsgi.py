"""The Django project as a WSGI application.

`finish_request()` needs jumpqueue's WSGI middleware around Django, so /finish
goes through it; every other route is served with the MIDDLEWARE entry alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.wsgi import get_wsgi_application

from jumpqueue.contrib.django import JumpQueueMiddleware as DjangoGlue
from jumpqueue.wsgi import JumpQueueMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.web.apps.django_site")

django_application = get_wsgi_application()
finishing_application = JumpQueueMiddleware(django_application, counters=DjangoGlue.counters)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Route /finish through jumpqueue's WSGI middleware, the rest straight to Django."""
    if environ.get("PATH_INFO") == "/finish":
        return finishing_application(environ, start_response)
    return django_application(environ, start_response)
