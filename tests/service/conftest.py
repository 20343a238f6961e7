"""Fixtures for the service: the emulator in-process, settings on a fresh SQLite file, the
service app routed to the emulator, and "browsers" — httpx clients with their own cookie jars.

The owner resolver of the embedded-mode app reads an ``X-Test-User`` header, so a test can
play several signed-in users (or none) against one app.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from pdauth.clock import FrozenClock
from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.emulator.state import EmulatorClock
from pdauth.service import create_app
from pdauth.store import upgrade

EMULATOR_BASE = "http://127.0.0.1:9"  # any loopback URL: ASGITransport ignores the host
SERVICE_BASE = "http://127.0.0.1:8000"
API_KEY = "test-api-key-0123456789abcdef"
CLIENT_SECRET = "pdauth-demo-secret"
SESSION_SECRET = "session-secret-for-tests-0123456789abcdef"
ADMIN_PASSWORD = "admin-password-for-tests"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "client_id": "pdauth-demo",
        "client_secret": CLIENT_SECRET,
        "redirect_uri": SERVICE_BASE + "/callback",
        "scopes": "read",
        "encryption_keys": format_key(generate_key("k1")),
        "session_secret": SESSION_SECRET,
        "identity_url": EMULATOR_BASE,
        "api_url": EMULATOR_BASE,
        "api_url_eu": EMULATOR_BASE + "/eu",
        "database_url": database_url,
        "api_keys": API_KEY,
        "admin_password": ADMIN_PASSWORD,
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


def header_owner(request: Request) -> str | None:
    return request.headers.get("x-test-user")


@pytest.fixture
def database_url(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path}/pdauth.db"
    upgrade(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def emulator_clock() -> EmulatorClock:
    return EmulatorClock()  # these tests run the service on the system clock


@pytest.fixture
def emulator(emulator_app: Starlette) -> Starlette:
    return emulator_app


# The root emulator_client reaches http://emulator; the service's settings point at EMULATOR_BASE.
@pytest.fixture
async def emulator_client(emulator: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR_BASE
    ) as client:
        yield client


AppFactory = Callable[..., Starlette]
BrowserFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def app_factory(settings: Settings, emulator: Starlette) -> AsyncIterator[AppFactory]:
    """Builds service apps routed to the in-process emulator; closes them afterwards."""
    made: list[Starlette] = []

    def factory(
        owner_resolver: Any = header_owner,
        settings_: Settings | None = None,
        clock: FrozenClock | None = None,
        emulator_: Starlette | None = None,
    ) -> Starlette:
        app = create_app(
            settings_ or settings,
            owner_resolver,
            transport=httpx.ASGITransport(app=emulator_ or emulator),
            clock=clock,
        )
        made.append(app)
        return app

    yield factory
    for app in made:
        await app.state.pdauth.aclose()


@pytest.fixture
async def app(app_factory: AppFactory) -> Starlette:
    return app_factory()


@pytest.fixture
async def browser_factory(
    app: Starlette,
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def factory(
        user: str | None = "alice", target: Starlette | None = None, peer: str = "127.0.0.1"
    ) -> httpx.AsyncClient:
        headers = {"x-test-user": user} if user else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=target or app, client=(peer, 50000), raise_app_exceptions=False
            ),
            base_url=SERVICE_BASE,
            headers=headers,
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def browser(browser_factory: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return browser_factory("alice")


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def csrf(browser: httpx.AsyncClient, path: str = "/") -> str:
    page = await browser.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


@dataclass
class Started:
    """A flow started in a browser: where PagerDuty was asked to send it back."""

    authorize_url: str
    params: dict[str, str]


async def start_flow(browser: httpx.AsyncClient, **form: str) -> Started:
    token = await csrf(browser)
    response = await browser.post("/connect", data={"csrf_token": token, **form})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(EMULATOR_BASE + "/oauth/authorize?")
    return Started(location, dict(parse_qsl(urlsplit(location).query)))


async def approve(
    emulator_client: httpx.AsyncClient,
    started: Started,
    *,
    decision: str = "approve",
    user: str | None = "admin@acme.example",
) -> str:
    """What the user does on PagerDuty's consent page; returns the callback URL (path+query)."""
    body: dict[str, Any] = {**started.params, "decision": decision}
    if user is not None:
        body["user"] = user
    answer = await emulator_client.post("/_emulator/authorize", json=body)
    assert answer.status_code == 200, answer.text
    redirect: str = answer.json()["redirect"]
    assert redirect.startswith(SERVICE_BASE + "/callback?")
    return redirect[len(SERVICE_BASE) :]


async def token_requests(emulator_client: httpx.AsyncClient) -> int:
    stats = (await emulator_client.get("/_emulator/stats")).json()
    return int(stats["token_requests_total"])


async def connect(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient, **form: str
) -> httpx.Response:
    """The whole flow; returns the callback's response."""
    started = await start_flow(browser, **form)
    return await browser.get(await approve(emulator_client, started))
