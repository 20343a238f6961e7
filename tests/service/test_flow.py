"""The whole connect flow over HTTP with a cookie jar, against the in-process emulator."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.service.conftest import (
    API_KEY,
    CLIENT_SECRET,
    SERVICE_BASE,
    SESSION_SECRET,
    BrowserFactory,
    approve,
    connect,
    csrf,
    start_flow,
    token_requests,
)

pytestmark = pytest.mark.anyio


async def test_connect_view_try_disconnect(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    home = await browser.get("/")
    assert home.status_code == 200
    assert "Connect PagerDuty" in home.text
    assert "No PagerDuty account is connected yet" in home.text

    callback = await connect(browser, emulator_client)
    assert callback.status_code == 303
    assert callback.headers["location"] == "/"
    assert callback.headers["referrer-policy"] == "no-referrer"
    assert callback.headers["cache-control"] == "no-store"

    home = await browser.get("/")
    assert "acme" in home.text
    assert "status-active" in home.text
    assert "admin@acme.example" in home.text
    link = home.text.split('href="/connections/')[1].split('"')[0]

    page = await browser.get(f"/connections/{link}")
    assert page.status_code == 200
    assert "Try it" in page.text
    tried = await browser.get(f"/connections/{link}", params={"try": "1"})
    assert tried.status_code == 200
    assert 'id="try-users"' in tried.text
    assert "@acme.example" in tried.text.split('id="try-users"')[1]

    confirm = await browser.get(f"/connections/{link}/disconnect")
    assert confirm.status_code == 200
    token = csrf_from(confirm.text)
    gone = await browser.post(f"/connections/{link}/disconnect", data={"csrf_token": token})
    assert gone.status_code == 303
    home = await browser.get("/")
    assert "status-revoked" in home.text


def csrf_from(html: str) -> str:
    from tests.service.conftest import csrf_of

    return csrf_of(html)


async def test_return_to_is_kept_server_side(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await connect(browser, emulator_client, return_to="/settings/integrations")
    assert callback.status_code == 303
    assert callback.headers["location"] == "/settings/integrations"


async def test_several_tabs_finish_in_reverse_order(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    tabs = [await start_flow(browser) for _ in range(3)]
    callbacks = [await approve(emulator_client, tab) for tab in tabs]
    for url in reversed(callbacks):
        response = await browser.get(url)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"


async def test_exactly_one_exchange_per_flow(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    before = await token_requests(emulator_client)
    await connect(browser, emulator_client)
    assert await token_requests(emulator_client) == before + 1


async def test_reconnecting_the_same_user_updates_the_connection(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    await connect(browser, emulator_client)
    await connect(browser, emulator_client)
    home = await browser.get("/")
    assert home.text.count('href="/connections/') == 1


async def test_owners_see_only_their_connections(
    browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    alice = browser_factory("alice")
    bob = browser_factory("bob")
    await connect(alice, emulator_client)
    home = await alice.get("/")
    link = home.text.split('href="/connections/')[1].split('"')[0]
    assert (await bob.get("/")).text.count('href="/connections/') == 0
    assert (await bob.get(f"/connections/{link}")).status_code == 404
    assert (await bob.get(f"/connections/{link}/disconnect")).status_code == 404
    token = await csrf(bob)
    response = await bob.post(f"/connections/{link}/disconnect", data={"csrf_token": token})
    assert response.status_code == 404
    assert "status-active" in (await alice.get("/")).text


async def test_no_secret_reaches_a_log_line(
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = browser_factory("alice")
    started = await start_flow(browser)
    callback = await approve(emulator_client, started)
    query = dict(parse_qsl(urlsplit(callback).query))
    assert (await browser.get(callback)).status_code == 303
    assert (await browser.get(callback)).status_code == 400  # the error path logs too
    api = browser_factory(None)
    listing = await api.get("/api/v1/connections", headers={"authorization": f"Bearer {API_KEY}"})
    connection_id = listing.json()["connections"][0]["id"]
    vended = await api.post(
        f"/api/v1/connections/{connection_id}/access-token",
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    secrets = [
        query["code"],
        query["state"],
        vended.json()["access_token"],
        CLIENT_SECRET,
        SESSION_SECRET,
        API_KEY,
        browser.cookies["pdauth_binding"],
        browser.cookies["pdauth_session"],
    ]
    # Everything but the emulator's own logs and this test's browser (httpx lines for requests
    # *to* the service, which a real browser would not log): the service, the Connector and
    # its HTTP client.
    ours = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith("pdauth.emulator") and SERVICE_BASE not in record.getMessage()
    )
    assert "/oauth/token" in ours  # the Connector's own HTTP lines are among what is checked
    for secret in secrets:
        assert secret not in ours
