"""Scope upgrades through the service: PDAUTH_SCOPES grows, connections missing scopes are
flagged in the pages and the JSON API, and "Grant more access" re-consents the same
connection — only for the same PagerDuty user (the emulator narrows or widens grants)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from pdauth.config import Settings
from pdauth.store import Store
from pdauth.store.schema import connections
from tests.service.conftest import (
    API_KEY,
    SERVICE_BASE,
    AppFactory,
    BrowserFactory,
    Started,
    approve,
    connect,
    csrf_of,
    make_settings,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}


async def _grown(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> tuple[httpx.AsyncClient, str, httpx.AsyncClient]:
    """alice connects with scope ``read``; the app is then redeployed wanting ``read write``."""
    assert (await connect(browser_factory("alice"), emulator_client)).status_code == 303
    grown = app_factory(settings_=make_settings(settings.database_url, scopes="read write"))
    browser = browser_factory("alice", target=grown)
    home = await browser.get("/")
    assert "needs scopes" in home.text
    connection_id = home.text.split('href="/connections/')[1].split('"')[0]
    return browser, connection_id, browser_factory(None, target=grown)


async def _grant_more(
    browser: httpx.AsyncClient, connection_id: str, missing: str = "write"
) -> tuple[httpx.Response, Started]:
    page = await browser.get(f"/connections/{connection_id}")
    assert "Grant more access" in page.text
    assert f'<dd id="missing-scopes">{missing}</dd>' in page.text
    start = await browser.post(
        "/connect",
        data={
            "csrf_token": csrf_of(page.text),
            "connection_id": connection_id,
            "return_to": f"/connections/{connection_id}",
        },
    )
    assert start.status_code == 303, start.text
    location = start.headers["location"]
    return start, Started(location, dict(parse_qsl(urlsplit(location).query)))


async def test_grant_more_access_updates_the_same_connection(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    browser, connection_id, api = await _grown(
        app_factory, browser_factory, emulator_client, settings
    )
    shown = (await api.get(f"/api/v1/connections/{connection_id}", headers=AUTH)).json()
    assert shown["connection"]["missing_scopes"] == ["write"]
    _, started = await _grant_more(browser, connection_id)
    assert set(started.params["scope"].split()) >= {"read", "write"}
    callback = await browser.get(await approve(emulator_client, started))
    assert callback.status_code == 303
    assert callback.headers["location"] == f"/connections/{connection_id}"
    page = await browser.get(f"/connections/{connection_id}")
    assert "needs scopes" not in page.text
    assert "Grant more access" not in page.text
    listed = (await api.get("/api/v1/connections", params={"owner": "alice"}, headers=AUTH)).json()
    assert [(c["id"], c["missing_scopes"]) for c in listed["connections"]] == [(connection_id, [])]


async def test_grant_more_access_by_another_user_changes_nothing(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    browser, connection_id, api = await _grown(
        app_factory, browser_factory, emulator_client, settings
    )
    before = (await api.get(f"/api/v1/connections/{connection_id}", headers=AUTH)).json()
    _, started = await _grant_more(browser, connection_id)
    refused = await browser.get(
        await approve(emulator_client, started, user="admin@eurocorp.example")
    )
    assert refused.status_code == 403
    assert "This link was meant for the PagerDuty" in refused.text
    after = (await api.get(f"/api/v1/connections/{connection_id}", headers=AUTH)).json()
    assert after == before
    listed = (await api.get("/api/v1/connections", params={"owner": "alice"}, headers=AUTH)).json()
    assert len(listed["connections"]) == 1


async def test_grant_more_access_for_someone_elses_connection_is_not_found(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    _, connection_id, _ = await _grown(app_factory, browser_factory, emulator_client, settings)
    mallory = browser_factory("mallory")
    token = csrf_of((await mallory.get("/")).text)
    response = await mallory.post(
        "/connect", data={"csrf_token": token, "connection_id": connection_id}
    )
    assert response.status_code == 404


async def test_grant_more_access_for_a_revoked_or_app_connection_is_refused_up_front(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    """A crafted form: nothing is sent to PagerDuty, and the answer is a 4xx page, not a 500."""
    browser, connection_id, _ = await _grown(
        app_factory, browser_factory, emulator_client, settings
    )
    token = csrf_of((await browser.get("/")).text)

    def change(**values: object) -> None:
        with Store(settings.database_url) as store, store.engine.begin() as conn:
            conn.execute(
                sa.update(connections).where(connections.c.id == connection_id).values(**values)
            )

    change(kind="app", pd_user_id=None)
    app_kind = await browser.post(
        "/connect", data={"csrf_token": token, "connection_id": connection_id}
    )
    assert app_kind.status_code == 400
    assert "cannot be given more access" in app_kind.text
    change(kind="user", pd_user_id="PUSER1", status="revoked")
    revoked = await browser.post(
        "/connect", data={"csrf_token": token, "connection_id": connection_id}
    )
    assert revoked.status_code == 404


async def test_a_403_for_missing_scopes_on_the_try_panel_offers_more_access(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    # A Scoped app that may read users and incidents, configured to ask for users only:
    # the panel's GET /incidents gets PagerDuty's 403 "Token missing required scopes".
    registered = await emulator_client.post(
        "/_emulator/apps",
        json={
            "client_id": "scoped-app",
            "client_secret": "scoped-app-secret",
            "kind": "scoped",
            "account": "acme",
            "redirect_uris": [SERVICE_BASE + "/callback"],
            "scopes": ["users.read", "incidents.read"],
        },
    )
    assert registered.status_code in (200, 201), registered.text
    narrow = app_factory(
        settings_=make_settings(
            settings.database_url,
            client_id="scoped-app",
            client_secret="scoped-app-secret",
            app_kind="scoped",
            scopes="users.read",
        )
    )
    browser = browser_factory("alice", target=narrow)
    assert (await connect(browser, emulator_client)).status_code == 303
    home = await browser.get("/")
    assert "needs scopes" not in home.text  # negative control: it has what the app asks for
    connection_id = home.text.split('href="/connections/')[1].split('"')[0]
    for _ in range(2):
        tried = await browser.get(f"/connections/{connection_id}", params={"try": "1"})
        assert "lacks the PagerDuty permission" in tried.text
        assert "needs scopes" in tried.text
        assert "Grant more access" in tried.text
        assert '<dd id="missing-scopes">incidents.read</dd>' in tried.text
    api = browser_factory(None, target=narrow)
    events = (await api.get("/api/v1/events", headers=AUTH)).json()["events"]
    needs = [e for e in events if e["type"] == "connection.needs_scopes"]
    assert len(needs) == 1  # once, however often PagerDuty says it
    assert needs[0]["connection_id"] == connection_id
    shown = (await api.get(f"/api/v1/connections/{connection_id}", headers=AUTH)).json()
    assert shown["connection"]["missing_scopes"] == ["incidents.read"]
    # Granting it clears the flag, on the same connection.
    _, started = await _grant_more(browser, connection_id, "incidents.read")
    assert set(started.params["scope"].split()) == {"users.read", "incidents.read"}
    assert (await browser.get(await approve(emulator_client, started))).status_code == 303
    tried = await browser.get(f"/connections/{connection_id}", params={"try": "1"})
    assert "lacks the PagerDuty permission" not in tried.text
    assert "needs scopes" not in tried.text
