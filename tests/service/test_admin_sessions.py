"""Admin sign-out ends the admin session everywhere (docs/SECURITY.md item 48, ASVS 7.4.1).

Admin sessions live on the server: a copied ``pdauth_session`` cookie is refused right after
sign-out, after 30 minutes unused and after the one-hour lifetime, and a new admin password
ends every admin session. Negative controls: an active session stays signed in.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
import sqlalchemy as sa
from itsdangerous.encoding import base64_decode

from pdauth.clock import FrozenClock
from pdauth.config import Settings
from tests.service.conftest import (
    ADMIN_PASSWORD,
    AppFactory,
    BrowserFactory,
    csrf,
    csrf_of,
    make_settings,
)

pytestmark = pytest.mark.anyio

SIGN_IN = "Administrator sign-in"
SIGNED_IN = "All connections"


async def _sign_in(browser: httpx.AsyncClient, password: str = ADMIN_PASSWORD) -> str:
    token = await csrf(browser, "/admin")
    response = await browser.post("/admin/login", data={"csrf_token": token, "password": password})
    assert response.status_code == 303, response.text
    return browser.cookies["pdauth_session"]


def _copy(browser_factory: BrowserFactory, cookie: str, app: object = None) -> httpx.AsyncClient:
    thief = browser_factory(None, target=app)
    thief.cookies.set("pdauth_session", cookie, domain="127.0.0.1")
    return thief


async def _page(browser: httpx.AsyncClient) -> str:
    return (await browser.get("/admin")).text


@pytest.fixture
def clocked(app_factory: AppFactory, clock: FrozenClock):
    return app_factory(clock=clock)


async def test_a_copied_cookie_stops_working_at_sign_out(
    clocked, browser_factory: BrowserFactory
) -> None:
    admin = browser_factory(None, target=clocked)
    cookie = await _sign_in(admin)
    thief = _copy(browser_factory, cookie, clocked)
    assert SIGNED_IN in await _page(thief)  # negative control: the copy works while signed in
    listing = await admin.get("/admin")
    await admin.post("/admin/logout", data={"csrf_token": csrf_of(listing.text)})
    assert SIGN_IN in await _page(admin)
    assert SIGN_IN in await _page(thief)
    refused = await thief.post(
        "/admin/connections/pdc_x/disconnect", data={"csrf_token": csrf_of(listing.text)}
    )
    assert refused.status_code == 403


async def test_thirty_idle_minutes_end_the_session_and_use_keeps_it(
    clocked, browser_factory: BrowserFactory, clock: FrozenClock
) -> None:
    busy = browser_factory(None, target=clocked)
    await _sign_in(busy)
    idle = browser_factory(None, target=clocked)
    await _sign_in(idle)
    for _ in range(5):
        clock.advance(10 * 60)
        assert SIGNED_IN in await _page(busy)
    assert SIGN_IN in await _page(idle)  # 50 minutes without a request


async def test_the_one_hour_lifetime_ends_even_a_busy_session(
    clocked, browser_factory: BrowserFactory, clock: FrozenClock
) -> None:
    admin = browser_factory(None, target=clocked)
    await _sign_in(admin)
    for _ in range(5):
        clock.advance(11 * 60)
        assert SIGNED_IN in await _page(admin)
    clock.advance(6 * 60)
    assert SIGN_IN in await _page(admin)


async def test_a_new_admin_password_ends_every_session(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings: Settings
) -> None:
    old = app_factory()
    first = browser_factory(None, target=old)
    second = browser_factory(None, target=old)
    cookies = [await _sign_in(first), await _sign_in(second)]
    changed = app_factory(
        settings_=make_settings(settings.database_url, admin_password="a-brand-new-password-42")
    )
    for cookie in cookies:
        assert SIGN_IN in await _page(_copy(browser_factory, cookie, changed))
    # Gone from the database, not just refused: the old password's app refuses them now too.
    for cookie in cookies:
        assert SIGN_IN in await _page(_copy(browser_factory, cookie, old))
    fresh = browser_factory(None, target=changed)
    await _sign_in(fresh, "a-brand-new-password-42")
    assert SIGNED_IN in await _page(fresh)


async def test_only_the_hash_of_the_session_id_is_stored(
    clocked, browser_factory: BrowserFactory, settings: Settings
) -> None:
    admin = browser_factory(None, target=clocked)
    cookie = await _sign_in(admin)
    # The cookie is signed, not encrypted: its payload is base64 JSON before the signature.
    admin_sid = json.loads(base64_decode(cookie.split(".")[0]))["adm_sid"]
    assert len(admin_sid) >= 40
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM admin_sessions")).mappings().all()
    engine.dispose()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert ADMIN_PASSWORD not in stored
    assert admin_sid not in stored
    assert rows[0]["id_hash"] == hashlib.sha256(admin_sid.encode()).hexdigest()
