"""The PagerDuty proxy (``ANY /api/v1/connections/{id}/proxy/{path}``) against the emulator:
PagerDuty's status and body relayed for reads and writes (query, JSON body, ``From``), no token
and no hop-by-hop header in the answer, and the refusals — a wrong key, paths that try to leave
PagerDuty's REST API, a revoked connection, oversized or non-JSON bodies — plus a 429 passed
through with its Retry-After."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.service.proxy import proxied_path
from tests.service.conftest import (
    API_KEY,
    EMULATOR_BASE,
    AppFactory,
    BrowserFactory,
    connect,
    make_settings,
    token_requests,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}
USER_EMAIL = "admin@acme.example"


async def connected(
    app: Starlette, browser_factory: BrowserFactory, emulator: Starlette
) -> tuple[httpx.AsyncClient, str]:
    """Alice connects through the pages; returns an API client and the connection id."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR_BASE
    ) as pd:
        browser = browser_factory("alice", target=app)
        assert (await connect(browser, pd)).status_code == 303
    api = browser_factory(None, target=app)
    api.headers.update(AUTH)
    listed = await api.get("/api/v1/connections", params={"owner": "alice"})
    return api, listed.json()["connections"][0]["id"]


@pytest.fixture
async def proxied(
    app: Starlette, browser_factory: BrowserFactory, emulator: Starlette
) -> tuple[httpx.AsyncClient, str]:
    return await connected(app, browser_factory, emulator)


async def test_a_read_is_relayed_with_its_query_and_no_token(
    proxied: tuple[httpx.AsyncClient, str], emulator_client: httpx.AsyncClient
) -> None:
    api, connection_id = proxied
    token = (await api.post(f"/api/v1/connections/{connection_id}/access-token")).json()
    direct = await emulator_client.get(
        "/users",
        params={"limit": 2},
        headers={"authorization": f"Bearer {token['access_token']}"},
    )
    answer = await api.get(f"/api/v1/connections/{connection_id}/proxy/users", params={"limit": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["users"] == direct.json()["users"]
    assert len(answer.json()["users"]) == 2
    assert answer.headers["content-type"].startswith("application/json")
    assert token["access_token"] not in answer.text
    assert not any(token["access_token"] in value for value in answer.headers.values())
    for hop in ("connection", "keep-alive", "transfer-encoding", "set-cookie", "authorization"):
        assert hop not in answer.headers
    assert "ratelimit-remaining" in answer.headers  # PagerDuty's rate-limit headers pass
    # Repeated query keys (PagerDuty's arrays) arrive as they were sent.
    filtered = await api.get(
        f"/api/v1/connections/{connection_id}/proxy/incidents",
        params=[("statuses[]", "triggered"), ("statuses[]", "acknowledged")],
    )
    assert filtered.status_code == 200
    assert {i["status"] for i in filtered.json()["incidents"]} <= {"triggered", "acknowledged"}


async def test_a_write_is_relayed_with_its_body_from_header_and_status(
    app_factory: AppFactory, browser_factory: BrowserFactory, emulator: Starlette, settings
) -> None:
    app = app_factory(settings_=make_settings(settings.database_url, scopes="read write"))
    api, connection_id = await connected(app, browser_factory, emulator)
    base = f"/api/v1/connections/{connection_id}/proxy"
    service = (await api.get(f"{base}/services", params={"limit": 1})).json()["services"][0]
    incident = {
        "incident": {
            "type": "incident",
            "title": "Proxied from Node",
            "service": {"id": service["id"], "type": "service_reference"},
        }
    }
    # PagerDuty's own error, relayed as it is: POST /incidents needs a From header.
    without_from = await api.post(f"{base}/incidents", json=incident)
    assert without_from.status_code == 400
    assert without_from.json()["error"]["code"] == 2011
    created = await api.post(f"{base}/incidents", json=incident, headers={"From": USER_EMAIL})
    assert created.status_code == 201, created.text
    assert created.json()["incident"]["title"] == "Proxied from Node"


@pytest.mark.parametrize(
    "path",
    [
        "oauth/token",
        "_emulator/stats",
        "incidents/../oauth/token",
        "incidents/%2e%2e/%2e%2e/oauth/token",
        "%2e%2e/oauth/token",
        "incidents//users",
        "incidents/%5Cevil",
        "https:/evil.example/incidents",
        "users/me.json",
        "Users",
        "incidents/" + "a" * 1100,
    ],
)
async def test_paths_outside_the_rest_api_are_refused_before_anything_is_sent(
    proxied: tuple[httpx.AsyncClient, str], emulator_client: httpx.AsyncClient, path: str
) -> None:
    api, connection_id = proxied
    before = await token_requests(emulator_client)
    stats_before = (await emulator_client.get("/_emulator/stats")).json()
    answer = await api.get(f"/api/v1/connections/{connection_id}/proxy/{path}")
    assert answer.status_code in (400, 404), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["code"] == "invalid_path"
    assert await token_requests(emulator_client) == before
    assert (await emulator_client.get("/_emulator/stats")).json() == stats_before


def test_the_path_rule() -> None:
    assert proxied_path("incidents/PT4KHLK/notes") == "/incidents/PT4KHLK/notes"
    assert proxied_path("users") == "/users"
    for bad in ("", "oauth/token", "incidents/..", "incidents/.", "incidents/", "/incidents", 7):
        assert proxied_path(bad) is None


async def test_the_proxy_needs_a_valid_api_key(proxied: tuple[httpx.AsyncClient, str]) -> None:
    api, connection_id = proxied
    url = f"/api/v1/connections/{connection_id}/proxy/users"
    for headers in ({"authorization": "Bearer wrong-key-0123456789abcdef"}, {"authorization": ""}):
        answer = await api.get(url, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
    assert (await api.get(url)).status_code == 200  # negative control: the right key works


async def test_unknown_and_revoked_connections(proxied: tuple[httpx.AsyncClient, str]) -> None:
    api, connection_id = proxied
    unknown = await api.get("/api/v1/connections/nosuchconnection/proxy/users")
    assert unknown.status_code == 404
    assert (await api.delete(f"/api/v1/connections/{connection_id}")).status_code == 200
    revoked = await api.get(f"/api/v1/connections/{connection_id}/proxy/users")
    assert revoked.status_code == 409
    assert revoked.json()["error"]["code"] == "needs_reauth"


async def test_bodies_must_be_small_json(proxied: tuple[httpx.AsyncClient, str]) -> None:
    api, connection_id = proxied
    url = f"/api/v1/connections/{connection_id}/proxy/incidents"
    big = await api.post(
        url, content=b"[" + b"1," * 20_000 + b"1]", headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    text = await api.post(url, content=b"title=x", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    broken = await api.post(url, content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400
    bad_from = await api.get(url, headers={"From": "not an email"})
    assert bad_from.status_code == 400


async def test_a_429_from_pagerduty_is_passed_through_with_retry_after(
    app_factory: AppFactory, browser_factory: BrowserFactory
) -> None:
    emulator = create_emulator(EmulatorConfig(rate_limit=3, rate_window=3600))
    app = app_factory(emulator_=emulator)
    api, connection_id = await connected(app, browser_factory, emulator)
    token = (await api.post(f"/api/v1/connections/{connection_id}/access-token")).json()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR_BASE
    ) as pd:
        # Another program spends the connection's budget with the same credential.
        spent = [
            await pd.get("/users", headers={"authorization": f"Bearer {token['access_token']}"})
            for _ in range(4)
        ]
    assert spent[-1].status_code == 429
    answer = await api.get(f"/api/v1/connections/{connection_id}/proxy/users")
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) > 0
    assert "error" in answer.json()
