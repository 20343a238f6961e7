"""The service's Step 8 fixes: connect links in an app that also has an owner resolver (the
demo), the redirect URI's path as the callback route, "Connected" after Approve, one status for
a connection found dead on use, Remove for revoked connections, no "Last refresh" before there
is one, and human status labels in the admin view."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.errors import ConfigurationError
from pdauth.service import create_app
from tests.service.conftest import (
    ADMIN_PASSWORD,
    API_KEY,
    SERVICE_BASE,
    AppFactory,
    BrowserFactory,
    Started,
    approve,
    connect,
    csrf,
    csrf_of,
    make_settings,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}


async def connection_id_of(browser: httpx.AsyncClient) -> str:
    home = await browser.get("/")
    return home.text.split('href="/connections/')[1].split('"')[0]


async def test_a_connect_link_works_in_an_app_with_an_owner_resolver(
    app: Starlette, browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    # Like the demo: the host names every visitor ("demo"), and its backend mints a link for bob.
    backend = browser_factory(None)
    minted = await backend.post("/api/v1/connect-sessions", json={"owner": "bob"}, headers=AUTH)
    assert minted.status_code == 201
    url = urlsplit(minted.json()["url"])
    link = f"{url.path}?{url.query}"
    browser = browser_factory("demo")
    page = await browser.get(link)
    assert page.status_code == 200, page.text
    start = await browser.post(
        "/connect", data={"csrf_token": csrf_of(page.text), "connect_session": "1"}
    )
    assert start.status_code == 303, start.text
    params = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    callback = await browser.get(await approve(emulator_client, Started("", params)))
    assert callback.status_code == 303, callback.text
    bobs = await backend.get("/api/v1/connections", params={"owner": "bob"}, headers=AUTH)
    assert len(bobs.json()["connections"]) == 1
    demos = await backend.get("/api/v1/connections", params={"owner": "demo"}, headers=AUTH)
    assert demos.json()["connections"] == []
    # The link worked once: the same link again is refused.
    again = await browser.get(link)
    token = csrf_of(again.text)
    reused = await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert reused.status_code == 400
    assert "cannot be used" in reused.text


async def test_the_redirect_uris_path_is_the_callback_route(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    app = app_factory(
        settings_=make_settings(
            settings.database_url, redirect_uri=SERVICE_BASE + "/oauth/pd", public_url=SERVICE_BASE
        )
    )
    browser = browser_factory("alice", target=app)
    token = await csrf(browser)
    start = await browser.post("/connect", data={"csrf_token": token})
    params = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    assert params["redirect_uri"] == SERVICE_BASE + "/oauth/pd"
    # The configured path answers as the callback (a malformed one: refused, not a 404) ...
    routed = await browser.get("/oauth/pd?code=x")
    assert routed.status_code == 400
    assert "not valid" in routed.text
    # ... and the default path is not a second callback.
    assert (await browser.get("/callback?code=x")).status_code == 404


@pytest.mark.parametrize(
    ("public_url", "redirect_uri", "message"),
    [
        (SERVICE_BASE + "/svc", SERVICE_BASE + "/other/callback", "must lie under"),
        (SERVICE_BASE + "/svc", SERVICE_BASE + "/svc", "clashes"),
        (SERVICE_BASE, SERVICE_BASE + "/api/v1/callback", "clashes"),
    ],
)
def test_a_redirect_uri_the_service_cannot_route_is_refused_at_creation(
    settings, public_url: str, redirect_uri: str, message: str
) -> None:
    bad = make_settings(settings.database_url, public_url=public_url, redirect_uri=redirect_uri)
    with pytest.raises(ConfigurationError, match=message) as raised:
        create_app(bad)
    assert "PDAUTH_REDIRECT_URI" in str(raised.value)


async def test_the_page_after_approve_says_connected_once(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    assert "Connected." not in (await browser.get("/")).text
    assert (await connect(browser, emulator_client)).status_code == 303
    first = await browser.get("/")
    assert "Connected." in first.text
    assert "Connected." not in (await browser.get("/")).text


async def test_a_new_connection_shows_no_last_refresh(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    await connect(browser, emulator_client)
    page = await browser.get(f"/connections/{await connection_id_of(browser)}")
    assert page.status_code == 200
    assert "Last refresh" not in page.text
    assert "Connected" in page.text  # the facts list is there (negative control)


async def test_a_connection_found_dead_on_use_shows_one_status_and_reconnect(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    await connect(browser, emulator_client)
    connection_id = await connection_id_of(browser)
    before = await browser.get(f"/connections/{connection_id}")
    assert "status-active" in before.text
    assert ">Reconnect<" not in before.text
    revoked = await emulator_client.post("/_emulator/revoke", json={"client_id": "pdauth-demo"})
    assert revoked.status_code == 200
    tried = await browser.get(f"/connections/{connection_id}", params={"try": "1"})
    assert tried.status_code == 200
    assert "status-active" not in tried.text
    assert "needs re-authorization" in tried.text
    assert ">Reconnect<" in tried.text


async def test_a_revoked_connection_can_be_removed(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    await connect(browser, emulator_client)
    connection_id = await connection_id_of(browser)
    token = await csrf(browser)
    # Active: not removable (disconnect first).
    refused = await browser.post(f"/connections/{connection_id}/remove", data={"csrf_token": token})
    assert refused.status_code == 409
    await browser.post(f"/connections/{connection_id}/disconnect", data={"csrf_token": token})
    page = await browser.get(f"/connections/{connection_id}")
    assert ">Remove<" in page.text
    removed = await browser.post(f"/connections/{connection_id}/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    assert (await browser.get(f"/connections/{connection_id}")).status_code == 404
    assert "/connections/" not in (await browser.get("/")).text


async def test_remove_needs_the_owner_and_the_csrf_token(
    browser: httpx.AsyncClient,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
) -> None:
    await connect(browser, emulator_client)
    connection_id = await connection_id_of(browser)
    token = await csrf(browser)
    await browser.post(f"/connections/{connection_id}/disconnect", data={"csrf_token": token})
    forged = await browser.post(f"/connections/{connection_id}/remove", data={"csrf_token": "x"})
    assert forged.status_code == 403
    mallory = browser_factory("mallory")
    other = await mallory.post(
        f"/connections/{connection_id}/remove", data={"csrf_token": await csrf(mallory)}
    )
    assert other.status_code == 404
    assert (await browser.get(f"/connections/{connection_id}")).status_code == 200


async def test_the_admin_view_shows_human_status_labels(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
) -> None:
    app = app_factory()
    user = browser_factory("alice", target=app)
    await connect(user, emulator_client)
    await emulator_client.post("/_emulator/revoke", json={"client_id": "pdauth-demo"})
    connection_id = await connection_id_of(user)
    await user.get(f"/connections/{connection_id}", params={"try": "1"})
    admin = browser_factory(None, target=app)
    token = await csrf(admin, "/admin")
    signed = await admin.post(
        "/admin/login", data={"csrf_token": token, "password": ADMIN_PASSWORD}
    )
    assert signed.status_code == 303
    page = await admin.get("/admin")
    assert "needs re-authorization: 1" in page.text
    assert "needs_reauth:" not in page.text
