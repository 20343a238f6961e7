"""Helpers for the blocking integrations' tests: a real-socket emulator with an app registered
for the host's redirect URI, settings pointing at it, and the user's part of the consent page.

Everything here is synchronous (``httpx.Client``), as Django and Flask code is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.emulator.state import EmulatorClock
from pdauth.store import upgrade
from tests.emulator_kit import make_emulator_state

CLIENT_ID = "pdauth-host-app"
CLIENT_SECRET = "host-app-client-secret-0123456789"
SESSION_SECRET = "host-session-secret-0123456789abcdef0123"
USER = "admin@acme.example"


@contextmanager
def emulator(*redirect_uris: str, config: EmulatorConfig | None = None) -> Iterator[str]:
    """A real-socket emulator with an OAuth app for ``redirect_uris``; yields its base URL."""
    # The system clock: the host apps under test run on real time.
    with EmulatorServer(state=make_emulator_state(config, clock=EmulatorClock())) as server:
        answer = httpx.post(
            server.url + "/_emulator/apps",
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "kind": "classic",
                "redirect_uris": list(redirect_uris),
            },
        )
        assert answer.status_code == 201, answer.text
        yield server.url


def host_settings(emulator_url: str, redirect_uri: str, database: str, **extra: Any) -> Settings:
    """Settings for a host app whose callback is ``redirect_uri``, on a migrated SQLite file."""
    url = f"sqlite:///{database}"
    upgrade(url)
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": redirect_uri,
        "scopes": "read",
        "encryption_keys": format_key(generate_key("k1")),
        "session_secret": SESSION_SECRET,
        "identity_url": emulator_url,
        "api_url": emulator_url,
        "api_url_eu": emulator_url + "/eu",
        "database_url": url,
    }
    values.update(extra)
    return Settings.from_env({}, **values)


def consent(
    emulator_url: str, authorize_url: str, *, decision: str = "approve", user: str = USER
) -> str:
    """Press Approve (or Deny) on the emulator's consent page; returns the callback URL."""
    assert authorize_url.startswith(emulator_url + "/oauth/authorize?"), authorize_url
    params = dict(parse_qsl(urlsplit(authorize_url).query))
    answer = httpx.post(
        emulator_url + "/_emulator/authorize", json={**params, "decision": decision, "user": user}
    )
    assert answer.status_code == 200, answer.text
    redirect: str = answer.json()["redirect"]
    return redirect


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def host_env(emulator_url: str, redirect_uri: str, database: str) -> dict[str, str]:
    """The ``PDAUTH_*`` variables of :func:`host_settings` (for examples that read the
    environment), on a migrated SQLite file."""
    return settings_env(host_settings(emulator_url, redirect_uri, database))


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PDAUTH_*`` variables that give ``settings`` (as made by :func:`host_settings`)."""
    emulator_url = settings.identity_url
    return {
        "PDAUTH_CLIENT_ID": CLIENT_ID,
        "PDAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "PDAUTH_REDIRECT_URI": settings.redirect_uri,
        "PDAUTH_SCOPES": "read",
        "PDAUTH_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "PDAUTH_SESSION_SECRET": SESSION_SECRET,
        "PDAUTH_IDENTITY_URL": emulator_url,
        "PDAUTH_API_URL": emulator_url,
        "PDAUTH_API_URL_EU": emulator_url + "/eu",
        "PDAUTH_DATABASE_URL": settings.database_url,
    }
