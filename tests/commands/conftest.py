"""Fixtures for the operations commands: a migrated SQLite database, PDAUTH_* variables set with
monkeypatch, and the emulator in-process (through a Runtime's ASGI transport) or on a socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from pdauth.commands import Runtime, use_runtime
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.emulator import EmulatorConfig, EmulatorServer, create_app
from pdauth.emulator.state import EmulatorClock
from pdauth.store import ConnectionRow, Store
from tests.emulator_kit import make_emulator_state
from tests.workers.harness import DEMO_ID, DEMO_SECRET, TEST_KEYS, US_ADMIN

BASE = "http://127.0.0.1:9"
SESSION_SECRET = "s" * 20 + "ession-secret-for-tests"
REPO = Path(__file__).resolve().parents[2]


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + os.fspath(path)


def emulator_app(config: EmulatorConfig | None = None) -> Starlette:
    return create_app(state=make_emulator_state(config, clock=EmulatorClock()))


def base_env(db_url: str, base: str = BASE) -> dict[str, str]:
    return {
        "PDAUTH_CLIENT_ID": DEMO_ID,
        "PDAUTH_CLIENT_SECRET": DEMO_SECRET,
        "PDAUTH_REDIRECT_URI": "http://127.0.0.1:8000/callback",
        "PDAUTH_SCOPES": "read write",
        "PDAUTH_ENCRYPTION_KEYS": TEST_KEYS,
        "PDAUTH_SESSION_SECRET": SESSION_SECRET,
        "PDAUTH_DATABASE_URL": db_url,
        "PDAUTH_IDENTITY_URL": base,
        "PDAUTH_API_URL": base,
        "PDAUTH_API_URL_EU": base + "/eu",
        "PDAUTH_HTTP_TIMEOUT": "2",
        "PDAUTH_LEASE_SECONDS": "5",
    }


def clear_pdauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("PDAUTH_"):
            monkeypatch.delenv(key)


def set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    clear_pdauth_env(monkeypatch)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "pdauth.db")
    with Store(url) as store:
        store.upgrade()
    return url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> dict[str, str]:
    values = base_env(db_url)
    set_env(monkeypatch, values)
    return values


@pytest.fixture
def app() -> Starlette:
    return emulator_app()


@pytest.fixture
def runtime(app: Starlette) -> Iterator[Runtime]:
    with use_runtime(Runtime(transport=httpx.ASGITransport(app=app))) as rt:
        yield rt


@dataclass(frozen=True)
class Connected:
    id: str
    owner: str
    access_token: str


def connect_user(app: Starlette, owner: str = "user-1", user: str = US_ADMIN) -> Connected:
    """Run the whole connect flow against the in-process emulator with the PDAUTH_* env."""

    async def go() -> Connected:
        transport = httpx.ASGITransport(app=app)
        async with (
            Connector(Settings.from_env(), transport=transport) as connector,
            httpx.AsyncClient(transport=transport, base_url=BASE) as control,
        ):
            start = await connector.begin(owner)
            params = dict(parse_qsl(urlsplit(start.url).query))
            answer = await control.post(
                "/_emulator/authorize", json={**params, "user": user, "decision": "approve"}
            )
            assert answer.status_code == 200, answer.text
            query = urlsplit(answer.json()["redirect"]).query
            conn = await connector.complete(query, start.binding)
            token = await connector.access_token(conn.id)
            return Connected(conn.id, owner, token)

    return anyio.run(go)


def control(app: Starlette, path: str, body: dict[str, object] | None = None) -> httpx.Response:
    """POST ``body`` to the in-process emulator (GET when there is no body)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            if body is None:
                return await client.get(path)
            return await client.post(path, json=body)

    return anyio.run(go)


def row(db_url: str, connection_id: str) -> ConnectionRow:
    with Store(db_url) as store:
        found = store.get_connection(connection_id)
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorServer]:
    state = make_emulator_state(clock=EmulatorClock())
    with EmulatorServer(state=state) as server:
        yield server


def subprocess_env(values: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PDAUTH_")}
    clean.update(values)
    clean["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), clean.get("PYTHONPATH", "")) if p
    )
    return clean


def run_pdauth(
    *argv: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdauth", *argv],
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
