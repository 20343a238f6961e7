"""The Django app config: ``INSTALLED_APPS = [..., "pdauth.integrations.django"]`` gives the
``pdauth_keeper`` management command (no models, no migrations)."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class PdauthConfig(AppConfig):  # type: ignore[misc]
    name = "pdauth.integrations.django"
    label = "pdauth"
    verbose_name = "pdauth (Connect PagerDuty)"
