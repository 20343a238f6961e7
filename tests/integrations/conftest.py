"""Fixtures for the in-process host-app tests: a migrated SQLite file and the emulator with an
OAuth app registered for a host that mounts pdauth at ``/pagerduty``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.store import upgrade

MOUNTED_HOST = "http://127.0.0.1:8000"
MOUNTED_CALLBACK = MOUNTED_HOST + "/pagerduty/callback"
MOUNTED_CLIENT_ID = "pdauth-mounted-host"
MOUNTED_CLIENT_SECRET = "mounted-host-client-secret-0123456789"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/host.db"
    upgrade(url)
    return url


@pytest.fixture
async def mounted_emulator() -> Starlette:
    """The emulator, with an app whose redirect URI is the mounted service's callback."""
    emulator = create_emulator(EmulatorConfig())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url="http://127.0.0.1:9"
    ) as client:
        answer = await client.post(
            "/_emulator/apps",
            json={
                "client_id": MOUNTED_CLIENT_ID,
                "client_secret": MOUNTED_CLIENT_SECRET,
                "kind": "classic",
                "redirect_uris": [MOUNTED_CALLBACK],
            },
        )
        assert answer.status_code == 201, answer.text
    return emulator
