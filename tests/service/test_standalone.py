"""Standalone mode: connect-session links from the host backend, and the admin view."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pytest

from pdauth.clock import FrozenClock
from tests.service.conftest import (
    ADMIN_PASSWORD,
    API_KEY,
    AppFactory,
    BrowserFactory,
    Started,
    approve,
    connect,
    csrf,
    csrf_of,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def standalone(app_factory: AppFactory):
    return app_factory(owner_resolver=None)


async def mint(client: httpx.AsyncClient, owner: str = "user-7", **extra: str) -> str:
    response = await client.post(
        "/api/v1/connect-sessions", json={"owner": owner, **extra}, headers=AUTH
    )
    assert response.status_code == 201
    url = urlsplit(response.json()["url"])
    return f"{url.path}?{url.query}"


async def open_link(browser: httpx.AsyncClient, link: str) -> str:
    page = await browser.get(link)
    assert page.status_code == 200, page.text
    assert "Connect your PagerDuty account" in page.text
    return csrf_of(page.text)


async def test_a_connect_session_link_signs_the_browser_in_and_connects(
    standalone, browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    backend = browser_factory(None, target=standalone)
    link = await mint(backend, "user-7", return_to="/done")
    browser = browser_factory(None, target=standalone)
    assert "You are not signed in" in (await browser.get("/")).text
    token = await open_link(browser, link)
    assert "token=" not in (await browser.get(link)).text  # the link token is not in the page
    start = await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert start.status_code == 303

    params = dict(p.split("=", 1) for p in urlsplit(start.headers["location"]).query.split("&"))
    from urllib.parse import unquote

    started = Started(start.headers["location"], {k: unquote(v) for k, v in params.items()})
    callback = await browser.get(await approve(emulator_client, started))
    assert callback.status_code == 303
    assert callback.headers["location"] == "/done"
    home = await browser.get("/")
    assert "Signed in as <strong>user-7</strong>" in home.text
    assert "status-active" in home.text
    listed = await backend.get("/api/v1/connections", params={"owner": "user-7"}, headers=AUTH)
    assert len(listed.json()["connections"]) == 1


async def test_a_link_works_once(standalone, browser_factory: BrowserFactory) -> None:
    backend = browser_factory(None, target=standalone)
    link = await mint(backend)
    first = browser_factory(None, target=standalone)
    token = await open_link(first, link)
    assert (
        await first.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    ).status_code == 303
    second = browser_factory(None, target=standalone)
    token = await open_link(second, link)
    refused = await second.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert refused.status_code == 400
    assert "cannot be used" in refused.text
    assert "location" not in refused.headers


async def test_opening_a_link_does_not_spend_it(
    standalone, browser_factory: BrowserFactory
) -> None:
    backend = browser_factory(None, target=standalone)
    link = await mint(backend)
    scanner = browser_factory(None, target=standalone)  # a mail scanner or link preview
    for _ in range(3):
        assert (await scanner.get(link)).status_code == 200
    user = browser_factory(None, target=standalone)
    token = await open_link(user, link)
    assert (
        await user.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    ).status_code == 303


async def test_an_expired_or_forged_link_is_refused(
    app_factory: AppFactory, browser_factory: BrowserFactory
) -> None:
    clock = FrozenClock(current=time.time())
    app = app_factory(owner_resolver=None, clock=clock)
    backend = browser_factory(None, target=app)
    link = await mint(backend)
    browser = browser_factory(None, target=app)
    forged = await browser.get(link[:-4] + "AAAA")
    assert forged.status_code == 400
    token = await open_link(browser, link)
    clock.advance(601)
    assert (await browser.get(link)).status_code == 400
    late = await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert late.status_code == 400


async def test_the_owner_of_a_link_cannot_be_changed_by_the_browser(
    standalone, browser_factory
) -> None:
    backend = browser_factory(None, target=standalone)
    link = await mint(backend, "user-7")
    browser = browser_factory(None, target=standalone)
    token = await open_link(browser, link)
    response = await browser.post(
        "/connect",
        data={"csrf_token": token, "connect_session": "1", "owner": "admin"},
        headers={"x-test-user": "admin"},
    )
    assert response.status_code == 303
    home = await browser.get("/")
    assert "Signed in as <strong>user-7</strong>" in home.text


async def test_the_session_is_renewed_when_a_link_signs_the_browser_in(
    standalone, browser_factory
) -> None:
    backend = browser_factory(None, target=standalone)
    browser = browser_factory(None, target=standalone)
    token = await open_link(browser, await mint(backend))
    before = browser.cookies["pdauth_session"]
    await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    after = browser.cookies["pdauth_session"]
    assert after != before
    # The pre-login CSRF token no longer works.
    stale = await browser.post("/connect", data={"csrf_token": token})
    assert stale.status_code == 403


async def admin_login(browser: httpx.AsyncClient, password: str) -> httpx.Response:
    token = await csrf(browser, "/admin")
    return await browser.post("/admin/login", data={"csrf_token": token, "password": password})


async def test_the_admin_view_lists_every_owner_behind_a_login(
    browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    for owner in ("alice", "bob"):
        await connect(browser_factory(owner), emulator_client)
    admin = browser_factory(None)
    page = await admin.get("/admin")
    assert "Administrator sign-in" in page.text
    assert "alice" not in page.text
    wrong = await admin_login(admin, "not-the-password")
    assert wrong.status_code == 403
    assert "not right" in wrong.text
    before = admin.cookies["pdauth_session"]
    ok = await admin_login(admin, ADMIN_PASSWORD)
    assert ok.status_code == 303
    assert admin.cookies["pdauth_session"] != before
    listing = await admin.get("/admin")
    assert "alice" in listing.text
    assert "bob" in listing.text
    assert "active: 2" in listing.text
    assert "pdus" not in listing.text
    connection_id = listing.text.split('action="/admin/connections/')[1].split("/")[0]
    token = csrf_of(listing.text)
    done = await admin.post(
        f"/admin/connections/{connection_id}/disconnect", data={"csrf_token": token}
    )
    assert done.status_code == 303
    assert "revoked: 1" in (await admin.get("/admin")).text
    await admin.post("/admin/logout", data={"csrf_token": token})
    assert "Administrator sign-in" in (await admin.get("/admin")).text


async def test_admin_actions_need_the_admin_session(
    browser_factory: BrowserFactory, emulator_client
) -> None:
    await connect(browser_factory("alice"), emulator_client)
    user = browser_factory("alice")
    token = await csrf(user)
    response = await user.post("/admin/connections/pdc_x/disconnect", data={"csrf_token": token})
    assert response.status_code == 403


async def test_the_admin_view_is_off_without_a_password(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    from tests.service.conftest import make_settings

    app = app_factory(settings_=make_settings(settings.database_url, admin_password=None))
    browser = browser_factory(None, target=app)
    page = await browser.get("/admin")
    assert "disabled" in page.text
    assert 'name="password"' not in page.text
