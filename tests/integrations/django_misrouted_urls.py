"""A URLconf that mounts pdauth under ``pd/`` although the redirect URI says ``pagerduty/``."""

# mypy: disable-error-code="import-untyped,import-not-found"
from __future__ import annotations

from django.urls import include, path
from pdauth_example import views
from pdauth_example.pagerduty import connector

from pdauth.integrations.django import urls as pdauth_urls

urlpatterns = [
    path("", views.sign_in, name="sign_in"),
    path("pd/", include(pdauth_urls(connector, owner=views.signed_in_user))),
]
