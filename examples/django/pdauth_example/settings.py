"""Settings of the example project: no database of its own (signed-cookie sessions), Django's
CSRF protection, and pdauth's app for the ``pdauth_keeper`` management command. pdauth itself
is configured by the ``PDAUTH_*`` variables (see the README)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or os.environ["PDAUTH_SESSION_SECRET"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["pdauth.integrations.django"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
ROOT_URLCONF = "pdauth_example.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
WSGI_APPLICATION = "pdauth_example.wsgi.application"
