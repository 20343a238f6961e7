"""PagerDuty's webhook subscriptions on the emulator's REST API: create (the secret once), list
(pagination, filter_type/filter_id), get, update, delete, enable, ping — in both regions, with the
same authentication, scope checks and error envelope as the other routes, every response checked
against the official schema when it is available."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator.app import create_app
from tests.schema_lookup import find_schema, require_schema

from .test_rest_support import (
    BASE,
    api_key,
    app_token,
    bearer,
    make_state,
    scoped_user_token,
    user_token,
)
from .webhook_kit import WebhookChecker, subscription_body

pytestmark = pytest.mark.anyio

ACME, EURO = "PACME01", "PEURO01"


@pytest.fixture
def checker() -> WebhookChecker:
    return WebhookChecker(find_schema())


@pytest.fixture
async def api(checker: WebhookChecker) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(state=make_state())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
        event_hooks={"response": [checker.hook()]},
    ) as client:
        yield app, client
    await app.state.emulator.webhooks.aclose()


def key_headers(app: Starlette, account: str = ACME) -> dict[str, str]:
    return {
        "Authorization": f"Token token={api_key(app, account)}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }


async def create(client: httpx.AsyncClient, headers: dict[str, str], **kw: Any) -> httpx.Response:
    return await client.post(
        "/webhook_subscriptions", headers=headers, json=subscription_body(**kw)
    )


async def test_crud_round_trip_and_the_secret_only_on_create(api) -> None:
    app, client = api
    headers = key_headers(app)
    created = await create(
        client,
        headers,
        delivery_method={
            "type": "http_delivery_method",
            "url": "https://example.com/hook",
            "custom_headers": [{"name": "X-Tenant", "value": "t-1"}],
        },
    )
    assert created.status_code == 200, created.text
    sub = created.json()["webhook_subscription"]
    secret = sub["delivery_method"]["secret"]
    assert isinstance(secret, str)
    assert len(secret) >= 32
    assert sub["delivery_method"]["temporarily_disabled"] is False
    assert sub["delivery_method"]["custom_headers"] == [
        {"name": "X-Tenant", "value": "-- redacted --"}
    ]
    assert sub["filter"] == {"type": "account_reference", "id": ACME}
    assert sub["active"] is True

    got = await client.get(f"/webhook_subscriptions/{sub['id']}", headers=headers)
    assert got.status_code == 200
    assert got.json()["webhook_subscription"]["delivery_method"]["secret"] is None
    assert secret not in got.text

    listed = await client.get("/webhook_subscriptions", headers=headers)
    assert [s["id"] for s in listed.json()["webhook_subscriptions"]] == [sub["id"]]
    assert secret not in listed.text

    updated = await client.put(
        f"/webhook_subscriptions/{sub['id']}",
        headers=headers,
        json={"webhook_subscription": {"events": ["incident.resolved"], "active": False}},
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()["webhook_subscription"]
    assert (body["events"], body["active"]) == (["incident.resolved"], False)
    assert body["delivery_method"]["url"] == "https://example.com/hook"

    deleted = await client.delete(f"/webhook_subscriptions/{sub['id']}", headers=headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/webhook_subscriptions/{sub['id']}", headers=headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "Not Found"


async def test_list_paginates_and_filters(api) -> None:
    app, client = api
    headers = key_headers(app)
    state = app.state.emulator
    service = state.directory.services_of(ACME)[0]
    team = service.team_ids[0]
    for _ in range(3):
        assert (await create(client, headers)).status_code == 200
    svc = await create(client, headers, filter_={"type": "service_reference", "id": service.id})
    assert svc.status_code == 200, svc.text
    tm = await create(client, headers, filter_={"type": "team_reference", "id": team})
    assert tm.status_code == 200, tm.text

    page = await client.get("/webhook_subscriptions?limit=2&total=true", headers=headers)
    assert page.json()["limit"] == 2
    assert page.json()["more"] is True
    assert page.json()["total"] == 5
    by_service = await client.get(
        f"/webhook_subscriptions?filter_type=service&filter_id={service.id}", headers=headers
    )
    assert [s["id"] for s in by_service.json()["webhook_subscriptions"]] == [
        svc.json()["webhook_subscription"]["id"]
    ]
    accounts = await client.get("/webhook_subscriptions?filter_type=account", headers=headers)
    assert len(accounts.json()["webhook_subscriptions"]) == 3
    no_id = await client.get("/webhook_subscriptions?filter_type=team", headers=headers)
    assert no_id.status_code == 400
    bad = await client.get("/webhook_subscriptions?filter_type=user", headers=headers)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"delivery_method": {"type": "http_delivery_method", "url": "ftp://x/y"}}, "url"),
        ({"delivery_method": {"type": "http_delivery_method", "url": "not a url"}}, "url"),
        ({"delivery_method": {"type": "email", "url": "https://x.test/"}}, "delivery_method"),
        ({"delivery_method": None}, "delivery_method"),
        ({"events": ["incident.exploded"]}, "Unknown event type"),
        ({"events": []}, "events"),
        ({"events": ["incident.triggered", "incident.triggered"]}, "repeat"),
        ({"filter": None}, "filter"),
        ({"filter": {"type": "user_reference", "id": "PX"}}, "filter.type"),
        ({"filter": {"type": "service_reference"}}, "service"),
        ({"filter": {"type": "service_reference", "id": "PNOPE00"}}, "service"),
        ({"filter": {"type": "account_reference", "id": EURO}}, "account"),
        ({"active": "yes"}, "active"),
        ({"type": "webhook"}, "type"),
    ],
)
async def test_invalid_subscriptions_are_refused(api, spec: dict[str, Any], fragment: str) -> None:
    app, client = api
    body = subscription_body()
    for key, value in spec.items():
        if value is None:
            del body["webhook_subscription"][key]
        else:
            body["webhook_subscription"][key] = value
    refused = await client.post("/webhook_subscriptions", headers=key_headers(app), json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"] == "Invalid Input Provided"
    assert any(fragment in e for e in error["errors"]), error
    assert app.state.emulator.webhooks.subscriptions == {}  # nothing half-created


async def test_update_cannot_change_the_delivery_method(api) -> None:
    app, client = api
    headers = key_headers(app)
    sub = (await create(client, headers)).json()["webhook_subscription"]
    refused = await client.put(
        f"/webhook_subscriptions/{sub['id']}",
        headers=headers,
        json={"webhook_subscription": {"delivery_method": {"url": "https://evil.test/"}}},
    )
    assert refused.status_code == 400
    kept = app.state.emulator.webhooks.subscriptions[sub["id"]]
    assert kept.url == sub["delivery_method"]["url"]


async def test_scoped_tokens_need_the_webhook_scopes(api) -> None:
    _, client = api
    reader = await scoped_user_token(client, ["webhook_subscriptions.read"])
    writer = await scoped_user_token(client, ["webhook_subscriptions.write"])
    other = await app_token(client, ["users.read"])

    refused = await client.post(
        "/webhook_subscriptions", headers=bearer(reader), json=subscription_body()
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "message": "Token missing required scopes",
        "required_scopes": "webhook_subscriptions.write",
    }
    created = await client.post(
        "/webhook_subscriptions", headers=bearer(writer), json=subscription_body()
    )
    assert created.status_code == 200, created.text
    sub_id = created.json()["webhook_subscription"]["id"]
    assert (await client.get("/webhook_subscriptions", headers=bearer(reader))).status_code == 200
    listed = await client.get("/webhook_subscriptions", headers=bearer(other))
    assert listed.status_code == 403
    assert listed.json()["error"]["required_scopes"] == "webhook_subscriptions.read"
    for path in (
        f"/webhook_subscriptions/{sub_id}/enable",
        f"/webhook_subscriptions/{sub_id}/ping",
    ):
        denied = await client.post(path, headers=bearer(reader))
        assert denied.status_code == 403
    kept = await client.delete(f"/webhook_subscriptions/{sub_id}", headers=bearer(reader))
    assert kept.status_code == 403


async def test_classic_read_and_write_scopes(api) -> None:
    _, client = api
    read = await user_token(client, scope="read")
    write = await user_token(client, scope="write")
    refused = await client.post(
        "/webhook_subscriptions", headers=bearer(read), json=subscription_body()
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["required_scopes"] == "write"
    created = await client.post(
        "/webhook_subscriptions", headers=bearer(write), json=subscription_body()
    )
    assert created.status_code == 200
    assert (await client.get("/webhook_subscriptions", headers=bearer(read))).status_code == 200
    unauthenticated = await client.get("/webhook_subscriptions")
    assert unauthenticated.status_code == 401


async def test_accounts_and_regions_are_separate(api) -> None:
    app, client = api
    us = (await create(client, key_headers(app))).json()["webhook_subscription"]
    eu_headers = key_headers(app, EURO)
    eu = await client.post(
        "/eu/webhook_subscriptions", headers=eu_headers, json=subscription_body()
    )
    assert eu.status_code == 200, eu.text
    assert eu.json()["webhook_subscription"]["filter"]["id"] == EURO
    listed = await client.get("/eu/webhook_subscriptions", headers=eu_headers)
    assert [s["id"] for s in listed.json()["webhook_subscriptions"]] == [
        eu.json()["webhook_subscription"]["id"]
    ]
    other = await client.get(f"/eu/webhook_subscriptions/{us['id']}", headers=eu_headers)
    assert other.status_code == 404
    wrong_region = await client.get("/webhook_subscriptions", headers=eu_headers)
    assert wrong_region.status_code == 401


async def test_enable_and_ping_answer_as_the_schema_says(api) -> None:
    app, client = api
    headers = key_headers(app)
    sub = (await create(client, headers)).json()["webhook_subscription"]
    enabled = await client.post(f"/webhook_subscriptions/{sub['id']}/enable", headers=headers)
    assert enabled.status_code == 200
    assert (
        enabled.json()["webhook_subscription"]["delivery_method"]["temporarily_disabled"] is False
    )
    ping = await client.post(f"/webhook_subscriptions/{sub['id']}/ping", headers=headers)
    assert ping.status_code == 202
    assert ping.content == b""
    missing = await client.post("/webhook_subscriptions/PNOPE00/ping", headers=headers)
    assert missing.status_code == 404
    wrong_method = await client.get(f"/webhook_subscriptions/{sub['id']}/enable", headers=headers)
    assert wrong_method.status_code == 405


async def test_every_webhook_response_conforms_to_the_official_schema() -> None:
    checker = WebhookChecker(require_schema())
    app = create_app(state=make_state())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
        event_hooks={"response": [checker.hook()]},
    ) as client:
        headers = key_headers(app)
        service = app.state.emulator.directory.services_of(ACME)[0]
        sub = (
            await create(client, headers, filter_={"type": "service_reference", "id": service.id})
        ).json()["webhook_subscription"]
        await client.get("/webhook_subscriptions?total=true", headers=headers)
        await client.get(f"/webhook_subscriptions/{sub['id']}", headers=headers)
        await client.put(
            f"/webhook_subscriptions/{sub['id']}",
            headers=headers,
            json={"webhook_subscription": {"description": "renamed"}},
        )
        await client.post(f"/webhook_subscriptions/{sub['id']}/enable", headers=headers)
        await client.post(f"/webhook_subscriptions/{sub['id']}/ping", headers=headers)
        await create(client, headers, events=["nope"])
        await client.get("/webhook_subscriptions/PNOPE00", headers=headers)
        incident = app.state.emulator.directory.incidents_of(ACME)[-1]
        fetched = await client.get(f"/incidents/{incident.id}", headers=headers)
        assert fetched.json()["incident"]["id"] == incident.id
        foreign = app.state.emulator.directory.incidents_of(EURO)[0]
        assert (await client.get(f"/incidents/{foreign.id}", headers=headers)).status_code == 404
        await client.put(
            f"/incidents/{incident.id}",
            headers={**headers, "From": "admin@acme.example"},
            json={"incident": {"type": "incident_reference", "status": "acknowledged"}},
        )
        await client.delete(f"/webhook_subscriptions/{sub['id']}", headers=headers)
        await app.state.emulator.webhooks.aclose()
    seen = {(m, t, s) for (m, t, s) in checker.checked}
    assert ("POST", "/webhook_subscriptions", 200) in seen
    assert ("POST", "/webhook_subscriptions", 400) in seen
    assert ("GET", "/webhook_subscriptions/{id}", 404) in seen
    assert ("PUT", "/incidents/{id}", 200) in seen
    assert ("GET", "/incidents/{id}", 404) in seen
    assert len(seen) == 12
