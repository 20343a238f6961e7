"""The emulated REST API: routes, authentication, scopes, pagination, POST /incidents, audit
cursor pagination, delegation deletion and faults — each response checked against the official
schema by the client's response hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.rest import RestApi
from pdauth.emulator.state import EmulatorState

from .test_rest_support import (
    ADMIN_EU,
    ADMIN_US,
    DEMO_CLIENT_ID,
    SchemaChecker,
    api_key,
    app_token,
    bearer,
    emulator,
    schema_checker,
    scoped_user_token,
    user_token,
)

pytestmark = pytest.mark.anyio

Emu = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return schema_checker()


@pytest.fixture
async def emu(checker: SchemaChecker) -> AsyncIterator[Emu]:
    app, client = emulator(checker)
    async with client:
        yield app, client


def state_of(app: Starlette) -> EmulatorState:
    state: EmulatorState = app.state.emulator
    return state


def rest_api(app: Starlette, region: str) -> RestApi:
    """The region's RestApi instance inside the app's mounts."""
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        inner = getattr(route, "app", None)
        if isinstance(inner, RestApi) and inner.region == region:
            return inner
        pending.extend(getattr(route, "routes", []))
    raise AssertionError(f"no REST app for {region}")


def key_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token token={token}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# -- users ------------------------------------------------------------------------------------


async def test_users_me_is_the_token_user(emu: Emu) -> None:
    _, client = emu
    token = await user_token(client)
    response = await client.get("/users/me", headers=bearer(token))
    assert response.status_code == 200
    user = response.json()["user"]
    assert user["email"] == ADMIN_US
    assert user["role"] == "admin"
    assert user["self"] == f"http://emulator/users/{user['id']}"
    assert user["html_url"].startswith("https://acme.pagerduty.com/users/")
    assert response.headers["content-type"] == "application/json"


async def test_users_me_needs_a_user_token(emu: Emu) -> None:
    # Assumption: 400 (the only client error the schema lists for this op).
    app, client = emu
    by_key = await client.get("/users/me", headers=key_auth(api_key(app)))
    assert by_key.status_code == 400
    assert error_of(by_key)["code"] == 2001
    token = await app_token(client, ["users.read"])
    by_app = await client.get("/users/me", headers=bearer(token))
    assert by_app.status_code == 400


async def test_get_user_and_unknown_ids(emu: Emu) -> None:
    app, client = emu
    directory = state_of(app).directory
    some = directory.users_of("PACME01")[42]
    found = await client.get(f"/users/{some.id}", headers=key_auth(api_key(app)))
    assert found.status_code == 200
    assert found.json()["user"]["name"] == some.name
    missing = await client.get("/users/PNOPE00", headers=key_auth(api_key(app)))
    assert missing.status_code == 404
    assert error_of(missing) == {"message": "Not Found", "code": 2100}
    # A user of the other account is as invisible as an unknown one.
    eu_user = directory.users_of("PEURO01")[0]
    other = await client.get(f"/users/{eu_user.id}", headers=key_auth(api_key(app)))
    assert other.status_code == 404


async def test_users_query_filter(emu: Emu) -> None:
    app, client = emu
    response = await client.get(
        "/users", params={"query": "ADMIN@acme"}, headers=key_auth(api_key(app))
    )
    assert [u["email"] for u in response.json()["users"]] == [ADMIN_US]


async def test_unknown_path_and_method(emu: Emu) -> None:
    app, client = emu
    unknown = await client.get("/nothing/here", headers=key_auth(api_key(app)))
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == 2100
    wrong_method = await client.put("/users", headers=key_auth(api_key(app)))
    assert wrong_method.status_code == 405
    assert "message" in error_of(wrong_method)


# -- classic pagination -----------------------------------------------------------------------


async def test_users_in_three_pages_of_100(emu: Emu) -> None:
    app, client = emu
    seen: list[str] = []
    mores: list[bool] = []
    for offset in (0, 100, 200):
        page = await client.get(
            "/users", params={"limit": 100, "offset": offset}, headers=key_auth(api_key(app))
        )
        body = page.json()
        assert (body["limit"], body["offset"], body["total"]) == (100, offset, None)
        seen += [u["id"] for u in body["users"]]
        mores.append(body["more"])
    assert mores == [True, True, False]
    assert len(seen) == len(set(seen)) == 250
    assert seen == [u.id for u in state_of(app).directory.users_of("PACME01")]


async def test_total_only_when_asked(emu: Emu) -> None:
    app, client = emu
    default = await client.get("/users", headers=key_auth(api_key(app)))
    assert default.json()["total"] is None
    assert default.json()["limit"] == 25
    assert len(default.json()["users"]) == 25
    counted = await client.get("/users", params={"total": "true"}, headers=key_auth(api_key(app)))
    assert counted.json()["total"] == 250


async def test_limit_above_100_is_clamped(emu: Emu) -> None:
    # Assumption: PagerDuty's "cannot exceed 100" answered by clamping and echoing 100.
    app, client = emu
    response = await client.get("/users", params={"limit": 1000}, headers=key_auth(api_key(app)))
    assert response.status_code == 200
    assert response.json()["limit"] == 100
    assert len(response.json()["users"]) == 100


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"offset": 9900, "limit": 100}, 200),
        ({"offset": 9901, "limit": 100}, 400),
        ({"offset": 10000, "limit": 1}, 400),
        ({"limit": "abc"}, 400),
        ({"limit": "-1"}, 400),
        ({"limit": "0"}, 400),
        ({"offset": "1.5"}, 400),
        ({"offset": "99999999999"}, 400),
        ({"total": "yes"}, 400),
    ],
)
async def test_pagination_bounds(emu: Emu, params: dict[str, Any], status: int) -> None:
    app, client = emu
    response = await client.get("/users", params=params, headers=key_auth(api_key(app)))
    assert response.status_code == status
    if status == 400:
        assert error_of(response)["code"] == 2001
        assert error_of(response)["errors"]
    else:
        assert response.json()["users"] == []
        assert response.json()["more"] is False


# -- services ---------------------------------------------------------------------------------


async def test_services_list_and_get(emu: Emu) -> None:
    app, client = emu
    listed = await client.get(
        "/services",
        params={"sort_by": "name:desc", "total": "true"},
        headers=key_auth(api_key(app)),
    )
    services = listed.json()["services"]
    assert listed.json()["total"] == len(services) == 15
    names = [s["name"] for s in services]
    assert names == sorted(names, reverse=True)
    one = await client.get(f"/services/{services[0]['id']}", headers=key_auth(api_key(app)))
    assert one.json()["service"]["escalation_policy"]["type"] == "escalation_policy_reference"
    missing = await client.get("/services/PNOPE00", headers=key_auth(api_key(app)))
    assert missing.status_code == 404
    bad_sort = await client.get(
        "/services", params={"sort_by": "age"}, headers=key_auth(api_key(app))
    )
    assert bad_sort.status_code == 400


# -- incidents --------------------------------------------------------------------------------


async def all_incidents(
    client: httpx.AsyncClient, auth: dict[str, str], **params: Any
) -> list[Any]:
    found: list[Any] = []
    offset = 0
    while True:
        page = await client.get(
            "/incidents", params={**params, "limit": 100, "offset": offset}, headers=auth
        )
        assert page.status_code == 200, page.text
        found += page.json()["incidents"]
        if not page.json()["more"]:
            return found
        offset += len(page.json()["incidents"])


async def test_incidents_default_window_is_one_month(emu: Emu) -> None:
    app, client = emu
    state = state_of(app)
    now = state.clock.now()
    everything = state.directory.incidents_of("PACME01")
    recent = [i for i in everything if i.created_at >= now - 30 * 86400]
    listed = await all_incidents(client, key_auth(api_key(app)))
    assert len(listed) == len(recent) < len(everything)
    every = await all_incidents(client, key_auth(api_key(app)), date_range="all")
    assert len(every) == len(everything) == 300
    assert [i["incident_number"] for i in every] == sorted(i["incident_number"] for i in every)


async def test_incident_filters(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    everything = state_of(app).directory.incidents_of("PACME01")
    triggered = await all_incidents(client, auth, date_range="all", **{"statuses[]": "triggered"})
    assert triggered
    assert {i["status"] for i in triggered} == {"triggered"}
    assert len(triggered) == sum(1 for i in everything if i.status == "triggered")
    both = await client.get(
        "/incidents",
        params=[("statuses[]", "triggered"), ("statuses[]", "acknowledged"), ("urgencies[]", "low"),
                ("date_range", "all"), ("limit", "100")],
        headers=auth,
    )  # fmt: skip
    expected = [
        i for i in everything if i.status in ("triggered", "acknowledged") and i.urgency == "low"
    ]
    assert [i["id"] for i in both.json()["incidents"]] == [i.id for i in expected]
    for i in both.json()["incidents"]:
        assert "resolved_at" not in i
        assert i["assignments"]


async def test_incident_since_until_and_sort(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    listed = await all_incidents(
        client,
        auth,
        since="2026-11-01T00:00:00Z",
        until="2026-12-01T00:00:00+00:00",
        sort_by="created_at:desc",
    )
    created = [i["created_at"] for i in listed]
    assert created
    assert all("2026-11-01" <= c < "2026-12-01" for c in created)
    assert created == sorted(created, reverse=True)
    by_urgency = await all_incidents(
        client, auth, date_range="all", sort_by="urgency,incident_number:desc"
    )
    keys = [(i["urgency"], -i["incident_number"]) for i in by_urgency]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"since": "2026-12-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        {"since": "2026-01-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"},
        {"statuses[]": "open"},
        {"urgencies[]": "urgent"},
        {"sort_by": "title"},
        {"sort_by": "created_at:sideways"},
        {"sort_by": "created_at,urgency,incident_number"},
        {"date_range": "some"},
        {"include[]": "everything"},
    ],
)
async def test_incident_bad_params(emu: Emu, params: dict[str, str]) -> None:
    app, client = emu
    response = await client.get("/incidents", params=params, headers=key_auth(api_key(app)))
    assert response.status_code == 400
    assert error_of(response)["code"] in (2001, 2004, 2005)


INCIDENT = {"incident": {"type": "incident", "title": "Disk full on db-1"}}


def incident_body(app: Starlette, **extra: Any) -> dict[str, Any]:
    service = next(
        s for s in state_of(app).directory.services_of("PACME01") if s.status == "active"
    )
    spec = {**INCIDENT["incident"], "service": {"id": service.id, "type": "service_reference"}}
    return {"incident": {**spec, **extra}}


async def test_post_incident_requires_a_valid_from(emu: Emu) -> None:
    app, client = emu
    token = await user_token(client, scope="write")
    body = incident_body(app)
    missing = await client.post("/incidents", json=body, headers=bearer(token))
    assert missing.status_code == 400
    assert error_of(missing)["code"] == 2011
    stranger = await client.post(
        "/incidents", json=body, headers={**bearer(token), "From": "nobody@acme.example"}
    )
    assert stranger.status_code == 400
    other_account = await client.post(
        "/incidents", json=body, headers={**bearer(token), "From": ADMIN_EU}
    )
    assert other_account.status_code == 400
    before = len(state_of(app).directory.incidents)
    created = await client.post(
        "/incidents", json=body, headers={**bearer(token), "From": ADMIN_US.upper()}
    )
    assert created.status_code == 201, created.text
    incident = created.json()["incident"]
    assert incident["status"] == "triggered"
    assert incident["title"] == "Disk full on db-1"
    assert incident["incident_number"] == 301
    assert len(state_of(app).directory.incidents) == before + 1
    listed = await client.get("/incidents", params={"statuses[]": "triggered", "limit": 100},
                              headers=bearer(token))  # fmt: skip
    assert incident["id"] in [i["id"] for i in listed.json()["incidents"]]


async def test_post_incident_validation(emu: Emu) -> None:
    app, client = emu
    headers = {**key_auth(api_key(app)), "From": ADMIN_US}
    bad_bodies: list[Any] = [
        {"incident": {"type": "incident", "title": "x"}},
        {"incident": {**incident_body(app)["incident"], "type": "alert"}},
        {"incident": {**incident_body(app)["incident"], "title": ""}},
        {"incident": {**incident_body(app)["incident"], "urgency": "urgent"}},
        {"incident": {**incident_body(app)["incident"], "service": {"id": "PNOPE00"}}},
        {"incident": {**incident_body(app)["incident"], "assignments": [{"assignee": {}}]}},
        {"incident": "nope"},
        [1, 2],
    ]
    for body in bad_bodies:
        response = await client.post("/incidents", json=body, headers=headers)
        assert response.status_code == 400, body
    not_json = await client.post(
        "/incidents", content=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    huge = await client.post("/incidents", json={"pad": "x" * 70_000}, headers=headers)
    assert huge.status_code == 413


async def test_post_incident_dedup_key(emu: Emu) -> None:
    app, client = emu
    headers = {**key_auth(api_key(app)), "From": ADMIN_US}
    body = incident_body(app, incident_key="disk-db-1", urgency="low")
    first = await client.post("/incidents", json=body, headers=headers)
    assert first.status_code == 201
    assert first.json()["incident"]["incident_key"] == "disk-db-1"
    assert first.json()["incident"]["urgency"] == "low"
    again = await client.post("/incidents", json=body, headers=headers)
    assert again.status_code == 400


async def test_classic_scopes(emu: Emu) -> None:
    # Assumption: a Classic `write` token may read too.
    app, client = emu
    reader = await user_token(client, scope="read")
    writer = await user_token(client, scope="write")
    assert (await client.get("/incidents", headers=bearer(writer))).status_code == 200
    refused = await client.post(
        "/incidents", json=incident_body(app), headers={**bearer(reader), "From": ADMIN_US}
    )
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {"message": "Token missing required scopes", "required_scopes": "write"}
    }


async def test_scoped_token_needs_the_operation_scope(emu: Emu) -> None:
    app, client = emu
    token = await scoped_user_token(client, ["incidents.write", "services.read"])
    assert (await client.get("/services", headers=bearer(token))).status_code == 200
    for path, scope in [
        ("/users", "users.read"),
        ("/incidents", "incidents.read"),  # incidents.write does not imply read (PagerDuty)
        ("/abilities", "abilities.read"),
        ("/audit/records", "audit_records.read"),
    ]:
        response = await client.get(path, headers=bearer(token))
        assert response.status_code == 403, path
        assert response.json() == {
            "error": {"message": "Token missing required scopes", "required_scopes": scope}
        }
        assert response.headers["ratelimit-limit"] == "960"
    created = await client.post(
        "/incidents", json=incident_body(app), headers={**bearer(token), "From": ADMIN_US}
    )
    assert created.status_code == 201


async def test_read_only_role_cannot_write(emu: Emu) -> None:
    app, client = emu
    observer = next(
        u for u in state_of(app).directory.users_of("PACME01") if u.role == "read_only_user"
    )
    token = await user_token(client, scope="write", user=observer.email)
    response = await client.post(
        "/incidents", json=incident_body(app), headers={**bearer(token), "From": observer.email}
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == 2010


async def test_abilities(emu: Emu) -> None:
    _, client = emu
    token = await app_token(client, ["abilities.read"])
    response = await client.get("/abilities", headers=bearer(token))
    assert response.status_code == 200
    assert "teams" in response.json()["abilities"]
    assert (await client.get("/abilities/teams", headers=bearer(token))).status_code == 204
    eu_token = await app_token(client, ["abilities.read"], account="eurocorp")
    missing = await client.get("/eu/abilities/sso", headers=bearer(eu_token))
    assert missing.status_code == 402
    assert error_of(missing) == {
        "message": "Missing Account Ability",
        "code": 2014,
        "errors": ["sso"],
    }
    unknown = await client.get("/abilities/flying", headers=bearer(token))
    assert unknown.status_code == 404


# -- audit records (cursor pagination) ----------------------------------------------------------


async def test_audit_records_each_visited_once(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    ids: list[str] = []
    times: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/audit/records", params=params, headers=auth)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["limit"] == 100
        ids += [r["id"] for r in body["records"]]
        times += [r["execution_time"] for r in body["records"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = state_of(app).directory.audit_records_of("PACME01")
    assert len(ids) == len(set(ids)) == len(expected) == 400
    assert ids == [r.id for r in expected]
    assert times == sorted(times, reverse=True)
    assert pages == 4


async def test_audit_cursor_survives_new_records_and_clock(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    first = await client.get("/audit/records", params={"limit": 10}, headers=auth)
    # Time passes between pages: the default 24-hour window must not slide under the cursor.
    state_of(app).clock.advance(3600)
    second = await client.get(
        "/audit/records", params={"limit": 10, "cursor": first.json()["next_cursor"]}, headers=auth
    )
    expected = [r.id for r in state_of(app).directory.audit_records_of("PACME01")[10:20]]
    assert [r["id"] for r in second.json()["records"]] == expected


async def test_audit_bad_cursor_and_window(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    first = await client.get("/audit/records", params={"limit": 5}, headers=auth)
    cursor = first.json()["next_cursor"]
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for bad in ("garbage", tampered, "%%%", "A" * 600, "AAAA"):
        response = await client.get("/audit/records", params={"cursor": bad}, headers=auth)
        assert response.status_code == 400, bad
        assert error_of(response)["code"] == 2001
    too_wide = await client.get(
        "/audit/records",
        params={"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        headers=auth,
    )
    assert too_wide.status_code == 400
    old_window = await client.get(
        "/audit/records",
        params={"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
        headers=auth,
    )
    assert old_window.json() == {"records": [], "limit": 25, "next_cursor": None}


async def test_audit_filters_and_roles(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    users_only = await client.get(
        "/audit/records",
        params={"root_resource_types[]": "users", "actions[]": "delete", "limit": 100},
        headers=auth,
    )
    records = users_only.json()["records"]
    assert records
    assert {(r["root_resource"]["type"], r["action"]) for r in records} == {
        ("user_reference", "delete")
    }
    plain = next(u for u in state_of(app).directory.users_of("PACME01") if u.role == "user")
    token = await user_token(client, user=plain.email)
    refused = await client.get("/audit/records", headers=bearer(token))
    assert refused.status_code == 403
    assert error_of(refused)["code"] == 2010


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-token",
        "Token token=",
        "Token nope=abc",
        "Token token=u+wrongwrongwrongwr",
        "Bearer a b",
        "Bearer " + "x" * 5000,
    ],
)
async def test_401_for_missing_or_bad_credentials(emu: Emu, header: str | None) -> None:
    _, client = emu
    headers = {} if header is None else {"Authorization": header}
    response = await client.get("/users", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "Authentication failed", "code": 2006}}
    assert "ratelimit-limit" not in response.headers


async def test_401_after_expiry(emu: Emu) -> None:
    app, client = emu
    token = await user_token(client)
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200
    state_of(app).clock.advance(30 * 86400 + 1)  # Classic access tokens live 30 days
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 401


async def test_401_after_revocation(emu: Emu) -> None:
    app, client = emu
    token = await user_token(client)
    assert state_of(app).revoke(client_id=DEMO_CLIENT_ID) == 1
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 401


async def test_region_bound_tokens(emu: Emu) -> None:
    app, client = emu
    eu_token = await user_token(client, user=ADMIN_EU)
    us_token = await user_token(client)
    assert (await client.get("/users/me", headers=bearer(eu_token))).status_code == 401
    assert (await client.get("/eu/users/me", headers=bearer(us_token))).status_code == 401
    eu_me = await client.get("/eu/users/me", headers=bearer(eu_token))
    assert eu_me.status_code == 200
    assert eu_me.json()["user"]["email"] == ADMIN_EU
    assert eu_me.json()["user"]["self"].startswith("http://emulator/eu/users/")
    assert eu_me.json()["user"]["html_url"].startswith("https://eurocorp.eu.pagerduty.com/")
    eu_key = api_key(app, "PEURO01")
    assert (await client.get("/users", headers=key_auth(eu_key))).status_code == 401
    eu_users = await client.get("/eu/users", params={"total": "true"}, headers=key_auth(eu_key))
    assert eu_users.json()["total"] == 20


async def test_token_header_forms(emu: Emu) -> None:
    app, client = emu
    key = api_key(app)
    for header in (f"Token token={key}", f'token token="{key}"', f"Token token={key}  "):
        response = await client.get("/abilities", headers={"Authorization": header})
        assert response.status_code == 200, header
    token = await user_token(client)
    lower = await client.get("/users/me", headers={"Authorization": f"bearer {token}"})
    assert lower.status_code == 200


async def test_accept_header_is_lenient_but_counted(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    for accept in ("*/*", "application/json", "application/vnd.pagerduty+json;version=2", "text/x"):
        response = await client.get("/abilities", headers={**auth, "Accept": accept})
        assert response.status_code == 200
    bare = client.build_request("GET", "/abilities", headers=auth)
    del bare.headers["accept"]
    assert (await client.send(bare)).status_code == 200
    counts = rest_api(app, "us").accept_counts
    assert counts == {"any": 1, "json": 1, "v2": 1, "other": 1, "missing": 1}


# -- delegation deletion ------------------------------------------------------------------------


async def test_delete_oauth_delegations(emu: Emu) -> None:
    app, client = emu
    user = state_of(app).directory.users_of("PACME01")[5]
    victim = await user_token(client, user=user.email)
    bystander = await user_token(client)
    auth = key_auth(api_key(app))
    mobile = await client.delete(
        "/oauth_delegations", params={"user_id": user.id, "type": "mobile"}, headers=auth
    )
    assert mobile.json() == {"status": "ok"}
    assert (await client.get("/users/me", headers=bearer(victim))).status_code == 200
    web = await client.delete(
        "/oauth_delegations", params={"user_id": user.id, "type": "web"}, headers=auth
    )
    assert web.status_code == 200
    assert web.json() == {"status": "ok"}
    assert (await client.get("/users/me", headers=bearer(victim))).status_code == 401
    assert (await client.get("/users/me", headers=bearer(bystander))).status_code == 200


async def test_delete_oauth_delegations_errors(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    user = state_of(app).directory.users_of("PACME01")[5]
    for params in ({"user_id": user.id}, {"type": "web"}, {"user_id": user.id, "type": "desk"}):
        response = await client.delete("/oauth_delegations", params=params, headers=auth)
        assert response.status_code == 400, params
    unknown = await client.delete(
        "/oauth_delegations", params={"user_id": "PNOPE00", "type": "web"}, headers=auth
    )
    assert unknown.status_code == 400
    token = await scoped_user_token(client, ["users.read"])
    refused = await client.delete(
        "/oauth_delegations", params={"user_id": user.id, "type": "web"}, headers=bearer(token)
    )
    assert refused.status_code == 403
    assert error_of(refused)["required_scopes"] == "oauth_delegations.write"
    allowed = await scoped_user_token(client, ["oauth_delegations.write"])
    mine = await client.delete(
        "/oauth_delegations", params={"user_id": user.id, "type": "web"}, headers=bearer(allowed)
    )
    assert mine.status_code == 200  # the admin may sign another user out


# -- faults and stats ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("timeout", 504)])
async def test_faults_answer_without_processing(emu: Emu, kind: str, status: int) -> None:
    app, client = emu
    state = state_of(app)
    before = len(state.directory.incidents)
    state.faults.add("rest", kind)
    response = await client.post(
        "/incidents", json=incident_body(app), headers={**key_auth(api_key(app)), "From": ADMIN_US}
    )
    assert response.status_code == status
    assert "message" in error_of(response)
    assert len(state.directory.incidents) == before
    retried = await client.post(
        "/incidents", json=incident_body(app), headers={**key_auth(api_key(app)), "From": ADMIN_US}
    )
    assert retried.status_code == 201


async def test_drop_fault_processes_then_loses_the_answer(emu: Emu) -> None:
    app, client = emu
    state = state_of(app)
    before = len(state.directory.incidents)
    state.faults.add("rest", "drop")
    response = await client.post(
        "/incidents", json=incident_body(app), headers={**key_auth(api_key(app)), "From": ADMIN_US}
    )
    assert response.status_code == 502
    assert response.content == b""
    assert len(state.directory.incidents) == before + 1


async def test_stats_count_rest_requests(emu: Emu) -> None:
    app, client = emu
    auth = key_auth(api_key(app))
    user = state_of(app).directory.users_of("PACME01")[1]
    await client.get(f"/users/{user.id}", headers=auth)
    await client.get("/users/PNOPE00", headers=auth)
    await client.get("/users", headers={})
    await client.get("/eu/whatever", headers=auth)
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["rest_requests"]["GET /users/{id}"] == {"200": 1, "404": 1}
    assert stats["rest_requests"]["GET /users"] == {"401": 1}
    assert stats["rest_requests"]["GET (unmatched)"] == {"401": 1}


async def test_public_url_shapes_self_links(checker: SchemaChecker) -> None:
    app, client = emulator(checker, EmulatorConfig(public_url="https://pd.test:8443"))
    async with client:
        token = await user_token(client, user=ADMIN_EU)
        response = await client.get("/eu/users/me", headers=bearer(token))
        assert response.json()["user"]["self"].startswith("https://pd.test:8443/eu/users/")
        us = await client.get("/abilities", headers=key_auth(api_key(app)))
        assert us.status_code == 200
