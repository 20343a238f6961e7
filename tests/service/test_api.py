"""The JSON API: API-key auth, connect sessions, connections, token vending, events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.clock import FrozenClock
from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.emulator.state import EmulatorClock
from tests.emulator_kit import make_emulator_state
from tests.service.conftest import API_KEY, SERVICE_BASE, AppFactory, BrowserFactory, connect

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def api(browser_factory: BrowserFactory) -> httpx.AsyncClient:
    client = browser_factory(None)
    client.headers.update(AUTH)
    return client


async def connected(browser_factory, emulator_client, owner: str = "alice") -> str:
    browser = browser_factory(owner)
    assert (await connect(browser, emulator_client)).status_code == 303
    home = await browser.get("/")
    return str(home.text.split('href="/connections/')[1].split('"')[0])


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Basic {API_KEY}", f"Bearer {API_KEY}x", "Bearer wrong-key-wrong-key-123"],
)
async def test_every_operation_needs_an_api_key(
    authorization: str | None, browser_factory: BrowserFactory
) -> None:
    client = browser_factory(None)
    headers = {"authorization": authorization} if authorization is not None else {}
    for method, path in [
        ("POST", "/api/v1/connect-sessions"),
        ("GET", "/api/v1/connections"),
        ("GET", "/api/v1/connections/pdc_x"),
        ("DELETE", "/api/v1/connections/pdc_x"),
        ("POST", "/api/v1/connections/pdc_x/access-token"),
        ("GET", "/api/v1/events"),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


async def test_connect_session_is_minted(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/connect-sessions", json={"owner": "user-7", "return_to": "/done"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["url"].startswith(SERVICE_BASE + "/connect-session?token=")
    assert body["owner"] == "user-7"
    assert body["return_to"] == "/done"
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 590 < expires - time.time() < 610
    assert "user-7" not in body["url"]


async def test_connect_session_with_an_unsafe_return_to_gets_the_default(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/api/v1/connect-sessions", json={"owner": "u", "return_to": "//evil.com"}
    )
    assert response.status_code == 201
    assert response.json()["return_to"] is None


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"owner": "u"}', "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"owner": ""}', "application/json", 400),
        (b'{"owner": "' + b"x" * 256 + b'"}', "application/json", 400),
        (b'{"owner": "a\\nb"}', "application/json", 400),
        (b'{"owner": 5}', "application/json", 400),
        (b'{"owner": "u", "extra": 1}', "application/json", 400),
        (b'{"owner": "u", "return_to": 5}', "application/json", 400),
        (b'{"owner": "u", "return_to": "' + b"/a" * 300 + b'"}', "application/json", 400),
        (b'{"owner": "' + b"x" * 20_000 + b'"}', "application/json", 413),
        (b"[" * 100_000, "application/json", 413),
        (b"[" * 5_000, "application/json", 400),
    ],
)
async def test_connect_session_input_is_validated(
    content: bytes, content_type: str, status: int, api: httpx.AsyncClient
) -> None:
    response = await api.post(
        "/api/v1/connect-sessions", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}


async def test_a_streamed_body_over_the_limit_is_cut_off(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"owner": "'
        for _ in range(100):
            yield b"x" * 1024  # no Content-Length: counted as it arrives
        yield b'"}'

    response = await api.post(
        "/api/v1/connect-sessions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


async def test_connections_are_listed_and_shown_without_secrets(
    api: httpx.AsyncClient, browser_factory: BrowserFactory, emulator_client
) -> None:
    connection_id = await connected(browser_factory, emulator_client)
    listing = await api.get("/api/v1/connections", params={"owner": "alice"})
    assert listing.status_code == 200
    body = listing.json()
    assert [c["id"] for c in body["connections"]] == [connection_id]
    assert body["next_after"] is None
    connection = body["connections"][0]
    assert connection["status"] == "active"
    assert connection["region"] == "us"
    assert connection["subdomain"] == "acme"
    assert connection["user"]["email"] == "admin@acme.example"
    assert connection["scopes"] == ["openid", "read"]
    assert "pdus" not in listing.text
    assert "_ct" not in listing.text
    single = await api.get(f"/api/v1/connections/{connection_id}")
    assert single.json() == {"connection": connection}
    assert (await api.get("/api/v1/connections", params={"owner": "bob"})).json()[
        "connections"
    ] == []
    assert (await api.get("/api/v1/connections", params={"status": "revoked"})).json()[
        "connections"
    ] == []


async def test_connections_page_by_cursor(
    api: httpx.AsyncClient, browser_factory: BrowserFactory, emulator_client
) -> None:
    ids = sorted([await connected(browser_factory, emulator_client, f"u{i}") for i in range(3)])
    first = (await api.get("/api/v1/connections", params={"limit": 2})).json()
    assert [c["id"] for c in first["connections"]] == ids[:2]
    assert first["next_after"] == ids[1]
    second = (
        await api.get("/api/v1/connections", params={"limit": 2, "after": first["next_after"]})
    ).json()
    assert [c["id"] for c in second["connections"]] == ids[2:]
    assert second["next_after"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "x"},
        {"limit": "-1"},
        {"status": "dead"},
        {"owner": ""},
        {"owner": "x" * 256},
        {"after": "x" * 65},
    ],
)
async def test_bad_list_parameters_are_400(params: dict[str, str], api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/connections", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_repeated_parameters_are_400(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/connections?limit=1&limit=2")
    assert response.status_code == 400


async def test_unknown_and_malformed_ids_are_404(api: httpx.AsyncClient) -> None:
    for connection_id in ("pdc_unknown", "a" * 65, "bad%20id", "%00"):
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/access-token")):
            response = await api.request(method, f"/api/v1/connections/{connection_id}{suffix}")
            assert response.status_code == 404, (connection_id, method)
            assert response.json()["error"]["code"] == "not_found"


async def test_access_token_vending_then_delete(
    api: httpx.AsyncClient, browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    connection_id = await connected(browser_factory, emulator_client)
    vended = await api.post(f"/api/v1/connections/{connection_id}/access-token")
    assert vended.status_code == 200
    assert vended.headers["cache-control"] == "no-store"
    body = vended.json()
    assert body["token_type"] == "bearer"
    assert body["connection_id"] == connection_id
    assert body["expires_at"].endswith("Z")
    me = await emulator_client.get(
        body["api_base_url"].removeprefix("http://127.0.0.1:9") + "/users/me",
        headers={"authorization": f"Bearer {body['access_token']}"},
    )
    assert me.status_code == 200

    deleted = await api.delete(f"/api/v1/connections/{connection_id}")
    assert deleted.status_code == 200
    assert deleted.json()["connection"]["status"] == "revoked"
    again = await api.post(f"/api/v1/connections/{connection_id}/access-token")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "needs_reauth"
    assert (await api.delete(f"/api/v1/connections/{connection_id}")).status_code == 200


async def test_a_grant_revoked_at_pagerduty_needs_reauth_and_can_be_reconnected(
    app_factory: AppFactory, browser_factory: BrowserFactory
) -> None:
    emulator = create_emulator(
        state=make_emulator_state(EmulatorConfig(access_token_ttl=60), clock=EmulatorClock())
    )
    clock = FrozenClock(current=time.time())
    app = app_factory(clock=clock, emulator_=emulator)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url="http://127.0.0.1:9"
    ) as pagerduty:
        browser = browser_factory("alice", target=app)
        assert (await connect(browser, pagerduty)).status_code == 303
        home = await browser.get("/")
        connection_id = home.text.split('href="/connections/')[1].split('"')[0]
        api = browser_factory(None, target=app)
        api.headers.update(AUTH)
        # "Revoke All Tokens" in PagerDuty, then the access token runs out.
        assert (
            await pagerduty.post("/_emulator/revoke", json={"client_id": "pdauth-demo"})
        ).status_code == 200
        clock.advance(61)
        response = await api.post(f"/api/v1/connections/{connection_id}/access-token")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "needs_reauth"
        shown = (await api.get(f"/api/v1/connections/{connection_id}")).json()["connection"]
        assert shown["status"] == "needs_reauth"
        page = await browser.get(f"/connections/{connection_id}")
        assert "needs re-authorization" in page.text
        assert "Reconnect" in page.text
        assert "Try it" not in page.text
        # Reconnecting the same PagerDuty user revives the same connection.
        assert (await connect(browser, pagerduty)).status_code == 303
        again = (await api.get(f"/api/v1/connections/{connection_id}")).json()["connection"]
        assert again["status"] == "active"
        vended = await api.post(f"/api/v1/connections/{connection_id}/access-token")
        assert vended.status_code == 200


async def test_events_page_by_cursor(
    api: httpx.AsyncClient, browser_factory: BrowserFactory, emulator_client
) -> None:
    connection_id = await connected(browser_factory, emulator_client)
    everything = (await api.get("/api/v1/events")).json()
    created = [e for e in everything["events"] if e["type"] == "connection.created"]
    assert [e["connection_id"] for e in created] == [connection_id]
    assert created[0]["owner"] == "alice"
    assert everything["next_cursor"] == everything["events"][-1]["id"]
    after = (await api.get("/api/v1/events", params={"cursor": everything["next_cursor"]})).json()
    assert after == {"events": [], "next_cursor": everything["next_cursor"]}
    await api.delete(f"/api/v1/connections/{connection_id}")
    newer = (await api.get("/api/v1/events", params={"cursor": everything["next_cursor"]})).json()
    assert [e["type"] for e in newer["events"]] == ["connection.revoked"]
    only = (await api.get("/api/v1/events", params={"type": "connection.revoked"})).json()
    assert {e["type"] for e in only["events"]} == {"connection.revoked"}
    assert (await api.get("/api/v1/events", params={"owner": "nobody"})).json()["events"] == []
    for bad in ({"cursor": "x"}, {"cursor": "-1"}, {"limit": "0"}, {"limit": "501"}):
        assert (await api.get("/api/v1/events", params=bad)).status_code == 400


async def test_the_openapi_document_is_served(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": "/api/v1"}]
    assert set(spec["paths"]) == {
        "/connect-sessions",
        "/connections",
        "/connections/{connection_id}",
        "/connections/{connection_id}/access-token",
        "/connections/{connection_id}/proxy/{path}",
        "/events",
    }


async def test_vending_fails_closed_with_a_documented_503_when_the_key_is_gone(
    app: Starlette,
    browser_factory: BrowserFactory,
    app_factory: AppFactory,
    emulator_client: httpx.AsyncClient,
) -> None:
    """A token encrypted under a key no longer configured: a documented 503, never a 500."""
    from pydantic import SecretStr

    from pdauth.crypto import format_key, generate_key
    from pdauth.service.openapi import openapi_document

    connection_id = await connected(browser_factory, emulator_client)
    settings = app.state.pdauth.settings
    rekeyed = settings.model_copy(
        update={"encryption_keys": SecretStr(format_key(generate_key("other")))}
    )
    client = browser_factory(None, target=app_factory(settings_=rekeyed))
    client.headers.update(AUTH)
    response = await client.post(f"/api/v1/connections/{connection_id}/access-token")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "decryption_failed"
    documented = openapi_document("/api/v1")["paths"]["/connections/{connection_id}/access-token"]
    assert "503" in documented["post"]["responses"]
