"""Schema conformance: every REST operation the emulator serves answers with bodies that validate
against PagerDuty's official OpenAPI document — successes, pages and errors — and the checker
itself really rejects bodies that do not conform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState

from .test_rest_support import (
    ADMIN_EU,
    ADMIN_US,
    OPERATIONS,
    SchemaChecker,
    _adapt,
    api_key,
    app_token,
    bearer,
    emulator,
    openapi_path,
    schema_checker,
    scoped_user_token,
    user_token,
)


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return schema_checker()


def test_adapt_translates_openapi_30_dialect() -> None:
    assert _adapt({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert _adapt({"type": "string", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert _adapt({"allOf": [{"$ref": "#/x"}], "nullable": True}) == {
        "anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]
    }
    assert _adapt({"minimum": 0, "exclusiveMinimum": True}) == {"exclusiveMinimum": 0}
    assert _adapt({"maximum": 9, "exclusiveMaximum": False}) == {"maximum": 9}
    assert _adapt({"properties": {"a": {"type": "integer", "nullable": False}}}) == {
        "properties": {"a": {"type": "integer"}}
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/users/me", 200, {"user": {"id": "P1", "type": "user"}}),  # no name/email
        ("GET", "/users", 200, {"limit": 25, "offset": 0, "more": False, "total": None}),
        ("GET", "/users", 200, {"users": [], "total": "many"}),
        ("GET", "/incidents", 200, {"incidents": [{"status": "open"}]}),
        ("GET", "/audit/records", 200, {"records": [], "limit": 1}),  # next_cursor required
        ("GET", "/users", 404, {"error": {"message": "Not Found", "code": "2100"}}),
        ("GET", "/services/PX", 200, {"service": {"type": "service"}}),  # no escalation_policy
    ],
)
def test_checker_rejects_bodies_that_do_not_conform(
    checker: SchemaChecker, method: str, path: str, status: int, body: dict[str, Any]
) -> None:
    with pytest.raises(AssertionError):
        checker.check(method, path, status, json.dumps(body).encode(), "application/json")


def test_checker_refuses_json_errors_without_json_type(checker: SchemaChecker) -> None:
    with pytest.raises(AssertionError):
        checker.check("GET", "/users", 401, b'{"error":{"message":"x"}}', "text/html")


def test_missing_schema_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="PDAUTH_OPENAPI_SCHEMA"):
        SchemaChecker(tmp_path / "missing.json")


def test_schema_path_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PDAUTH_OPENAPI_SCHEMA", str(tmp_path / "x.json"))
    assert openapi_path() == tmp_path / "x.json"
    monkeypatch.delenv("PDAUTH_OPENAPI_SCHEMA")
    assert openapi_path().parts[-3:] == ("shared", "pagerduty-openapi", "openapiv3.json")


@pytest.mark.anyio
async def test_every_operation_conforms() -> None:
    checker = schema_checker()  # fresh counters for this test
    app, client = emulator(checker, EmulatorConfig(rate_limit=200))
    state: EmulatorState = app.state.emulator
    directory = state.directory
    key = {"Authorization": f"Token token={api_key(app)}"}
    eu_key = {"Authorization": f"Token token={api_key(app, 'PEURO01')}"}
    async with client:
        reader = bearer(await user_token(client))
        writer = {**bearer(await user_token(client, scope="write")), "From": ADMIN_US}
        eu = bearer(await user_token(client, user=ADMIN_EU))
        app_only = bearer(await app_token(client, ["users.read"]))
        narrow = bearer(await scoped_user_token(client, ["services.read"]))
        user = directory.users_of("PACME01")[3]
        service = next(s for s in directory.services_of("PACME01") if s.status == "active")
        new_incident = {
            "incident": {
                "type": "incident",
                "title": "CPU on fire",
                "service": {"id": service.id, "type": "service_reference"},
            }
        }
        calls: list[tuple[str, str, dict[str, str], dict[str, Any] | None, Any]] = [
            ("GET", "/users/me", reader, None, None),
            ("GET", "/users/me", app_only, None, None),  # 400
            ("GET", "/eu/users/me", eu, None, None),
            ("GET", "/users", reader, {"limit": 100, "offset": 200, "total": "true"}, None),
            ("GET", "/users", key, {"query": "zzzz-nobody"}, None),
            ("GET", "/users", key, {"limit": "x"}, None),  # 400
            ("GET", "/users", {}, None, None),  # 401
            ("GET", "/users", narrow, None, None),  # 403
            ("GET", f"/users/{user.id}", key, None, None),
            ("GET", "/users/PNOPE00", key, None, None),  # 404
            ("GET", "/services", reader, {"limit": 5}, None),
            ("GET", "/services", narrow, {"sort_by": "name:desc"}, None),
            ("GET", f"/services/{service.id}", key, None, None),
            ("GET", "/services/PNOPE00", key, None, None),  # 404
            ("GET", "/incidents", key, {"date_range": "all", "limit": 100}, None),
            ("GET", "/incidents", key, {"date_range": "all", "offset": 100, "limit": 100}, None),
            ("GET", "/incidents", key, {"date_range": "all", "offset": 200, "limit": 100}, None),
            ("GET", "/incidents", reader, {"statuses[]": "acknowledged"}, None),
            ("GET", "/incidents", key, {"since": "nope"}, None),  # 400
            ("GET", "/incidents", narrow, None, None),  # 403
            ("POST", "/incidents", writer, None, new_incident),
            ("POST", "/incidents", writer, None, {"incident": {}}),  # 400
            ("POST", "/incidents", reader, None, {"incident": {}}),  # 403
            ("GET", "/abilities", key, None, None),
            ("GET", "/abilities", narrow, None, None),  # 403
            ("GET", "/abilities/teams", key, None, None),  # 204
            ("GET", "/eu/abilities/sso", eu_key, None, None),  # 402
            ("GET", "/abilities/flying", key, None, None),  # 404
            ("GET", "/audit/records", key, {"limit": 100}, None),
            ("GET", "/audit/records", key, {"cursor": "bogus"}, None),  # 400
            ("DELETE", "/oauth_delegations", key, {"user_id": user.id, "type": "web"}, None),
            ("DELETE", "/oauth_delegations", key, {"user_id": user.id}, None),  # 400
            ("GET", "/no/such/thing", key, None, None),  # 404
        ]
        for method, path, headers, params, body in calls:
            response = await client.request(method, path, headers=headers, params=params, json=body)
            assert response.status_code < 500, (method, path, response.text)
        # A cursor walk and an injected 500, both schema-checked too.
        page = await client.get("/audit/records", params={"limit": 50}, headers=key)
        await client.get(
            "/audit/records", params={"cursor": page.json()["next_cursor"]}, headers=key
        )
        state.faults.add("rest", "500")
        await client.get("/users", headers=key)
    served_ok = {(m, t) for (m, t, status) in checker.checked if status < 300}
    assert served_ok == set(OPERATIONS)
    statuses = {status for (_, _, status) in checker.checked}
    assert {200, 201, 204, 400, 401, 402, 403, 404, 500} <= statuses
    assert sum(checker.checked.values()) >= len(calls)
