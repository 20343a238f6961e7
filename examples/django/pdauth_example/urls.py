"""URLs: a stand-in sign-in page, pdauth's pages under ``pagerduty/`` (so
``PDAUTH_REDIRECT_URI`` ends in ``/pagerduty/callback``) and the incidents page."""

from __future__ import annotations

from django.urls import include, path

from pdauth.integrations.django import urls as pdauth_urls
from pdauth_example import views
from pdauth_example.pagerduty import connector

urlpatterns = [
    path("", views.sign_in, name="sign_in"),
    path("pagerduty/", include(pdauth_urls(connector, owner=views.signed_in_user))),
    path("incidents", views.incidents, name="incidents"),
]
