"""A connect link is a bearer credential: links that name the PagerDuty account or user they
are meant for connect nothing when someone else approves (docs/SECURITY.md item 47).

The forwarded-link attack end to end: the host mints a link for its user ``user-7`` meant for
the ``acme`` account; a victim at another account opens it and approves; the owner gets no
connection, the victim's fresh tokens are revoked, the page says why, one event is written.
Negative controls: the right account or user connects.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from tests.service.conftest import (
    API_KEY,
    EMULATOR_BASE,
    AppFactory,
    BrowserFactory,
    Started,
    approve,
    csrf_of,
    make_settings,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}
EU_ADMIN = "admin@eurocorp.example"
US_ADMIN = "admin@acme.example"


@pytest.fixture
def revoking_emulator() -> Starlette:
    return create_emulator(EmulatorConfig(revocation_endpoint=True))


@pytest.fixture
def standalone(app_factory: AppFactory, database_url: str, revoking_emulator: Starlette):
    settings = make_settings(database_url, revoke_url=EMULATOR_BASE + "/oauth/revoke")
    return app_factory(owner_resolver=None, settings_=settings, emulator_=revoking_emulator)


@pytest.fixture
async def pd(revoking_emulator: Starlette):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=revoking_emulator), base_url=EMULATOR_BASE
    ) as client:
        yield client


async def _mint(backend: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await backend.post(
        "/api/v1/connect-sessions", json={"owner": "user-7", **fields}, headers=AUTH
    )


async def _follow_link(
    browser: httpx.AsyncClient, pd: httpx.AsyncClient, url: str, user: str
) -> tuple[str, httpx.Response]:
    parts = urlsplit(url)
    page = await browser.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200, page.text
    start = await browser.post(
        "/connect", data={"csrf_token": csrf_of(page.text), "connect_session": "1"}
    )
    assert start.status_code == 303, start.text
    location = start.headers["location"]
    started = Started(location, dict(parse_qsl(urlsplit(location).query)))
    return page.text, await browser.get(await approve(pd, started, user=user))


async def _revoked(pd: httpx.AsyncClient) -> int:
    stats = (await pd.get("/_emulator/stats")).json()
    return sum(int(n) for n in stats["tokens_revoked"].values())


async def test_a_forwarded_link_approved_by_another_account_connects_nothing(
    standalone, browser_factory: BrowserFactory, pd: httpx.AsyncClient
) -> None:
    backend = browser_factory(None, target=standalone)
    minted = await _mint(backend, expected_account="acme")
    assert minted.status_code == 201
    assert minted.json()["expected_account"] == "acme"
    assert minted.json()["expected_user"] is None
    assert "acme" not in minted.json()["url"]  # sealed in the link, not readable

    victim = browser_factory(None, target=standalone)
    landing, callback = await _follow_link(victim, pd, minted.json()["url"], EU_ADMIN)
    assert "user-7" in landing
    assert "the PagerDuty account <strong>acme</strong>" in landing
    assert callback.status_code == 403
    assert "This link was meant for the PagerDuty account acme" in callback.text
    assert "Nothing was connected" in callback.text
    assert "code=" not in callback.text
    assert await _revoked(pd) >= 1  # the victim's fresh grant is withdrawn
    listed = await backend.get("/api/v1/connections", params={"owner": "user-7"}, headers=AUTH)
    assert listed.json()["connections"] == []
    events = (await backend.get("/api/v1/events", headers=AUTH)).json()["events"]
    assert [e["type"] for e in events] == ["connect.rejected"]
    assert events[0]["data"]["reason"] == "unexpected_account"


async def test_another_user_is_refused_and_the_right_one_connects(
    standalone, browser_factory: BrowserFactory, pd: httpx.AsyncClient
) -> None:
    backend = browser_factory(None, target=standalone)
    wrong = await _mint(backend, expected_user=EU_ADMIN)
    _, refused = await _follow_link(
        browser_factory(None, target=standalone), pd, wrong.json()["url"], US_ADMIN
    )
    assert refused.status_code == 403
    assert f"This link was meant for the PagerDuty user {EU_ADMIN}" in refused.text
    # Negative control: the same kind of link, approved by the user it names, connects.
    right = await _mint(backend, expected_account="ACME", expected_user=US_ADMIN)
    _, connected = await _follow_link(
        browser_factory(None, target=standalone), pd, right.json()["url"], US_ADMIN
    )
    assert connected.status_code == 303
    listed = await backend.get("/api/v1/connections", params={"owner": "user-7"}, headers=AUTH)
    assert [c["subdomain"] for c in listed.json()["connections"]] == ["acme"]


async def test_a_link_without_expectations_still_connects_anyone(
    standalone, browser_factory: BrowserFactory, pd: httpx.AsyncClient
) -> None:
    backend = browser_factory(None, target=standalone)
    minted = await _mint(backend)
    landing, callback = await _follow_link(
        browser_factory(None, target=standalone), pd, minted.json()["url"], EU_ADMIN
    )
    assert "this link is meant for" not in landing.lower()
    assert callback.status_code == 303


async def test_the_landing_page_names_the_app_and_the_owner_and_asks_to_confirm(
    standalone, browser_factory: BrowserFactory
) -> None:
    backend = browser_factory(None, target=standalone)
    minted = await _mint(backend)
    parts = urlsplit(minted.json()["url"])
    page = await browser_factory(None, target=standalone).get(f"{parts.path}?{parts.query}")
    assert "This application asks you to connect" in page.text
    assert "will belong to <strong>user-7</strong> in this application" in page.text
    assert "Only continue if you are user-7" in page.text
    assert "Yes, connect my PagerDuty account for user-7" in page.text


@pytest.mark.parametrize(
    "fields",
    [
        {"expected_account": ""},
        {"expected_user": "a\nb"},
        {"expected_account": "x" * 256},
        {"expected_user": 5},
        {"expected_account": "\u202eacme"},
    ],
)
async def test_bad_expectations_are_a_400(
    standalone, browser_factory: BrowserFactory, fields: dict[str, object]
) -> None:
    backend = browser_factory(None, target=standalone)
    response = await backend.post(
        "/api/v1/connect-sessions", json={"owner": "user-7", **fields}, headers=AUTH
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_every_callback_page_maps_an_unexpected_grant_to_its_own_page() -> None:
    """The shared mapping (the service and the Flask/Django adapters use it) names the
    unexpected-account and unexpected-user pages, not the generic PagerDuty error."""
    from pdauth.connect_flow import UnexpectedGrantError
    from pdauth.service.flow import failure_kind
    from pdauth.service.views import FLOW_FAILURES

    for reason in ("unexpected_account", "unexpected_user"):
        exc = UnexpectedGrantError(reason, expected_account="acme", expected_user="PUSER")
        assert failure_kind(exc) == reason
        assert reason in FLOW_FAILURES
