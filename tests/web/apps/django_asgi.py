"""The Django project as an ASGI application.

`finish_request()` needs jumpqueue's ASGI middleware around Django, so /finish
and the lifespan protocol (which Django does not speak) go through it; every
other route is served with the MIDDLEWARE entry alone.
"""

from __future__ import annotations

import os
from typing import cast

from django.core.asgi import get_asgi_application

from jumpqueue.asgi import ASGIApp, JumpQueueMiddleware, Receive, Scope, Send
from jumpqueue.contrib.django import JumpQueueMiddleware as DjangoGlue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.web.apps.django_site")

# django-stubs types the handler with dicts; it takes any ASGI mappings.
django_application = cast("ASGIApp", get_asgi_application())
finishing_application = JumpQueueMiddleware(django_application, counters=DjangoGlue.counters)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Route /finish and lifespan through jumpqueue's ASGI middleware, the rest to Django."""
    if scope["type"] == "lifespan" or scope.get("path") == "/finish":
        await finishing_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
