"""The project's one URL."""

from __future__ import annotations

from django.urls import path

from mailer_views import contact

urlpatterns = [path("contact", contact)]
