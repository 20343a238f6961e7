"""Schema conformance: every REST operation the emulator serves answers with bodies that validate
against PagerDuty's official OpenAPI document — successes, pages and errors — and the checker
itself really rejects bodies that do not conform. The tests that need the document skip with one
reason when it is absent (tests/schema_lookup.py); the lookup and the envelope checks always run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState
from tests.schema_lookup import ENV_VAR, MISSING_REASON, REPO, candidates, find_schema

from .test_rest_support import (
    ADMIN_EU,
    ADMIN_US,
    OPERATIONS,
    SchemaChecker,
    _adapt,
    api_key,
    app_token,
    bearer,
    conformance_checker,
    emulator,
    scoped_user_token,
    user_token,
)


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return conformance_checker()


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


def test_checker_refuses_json_errors_without_json_type() -> None:
    with pytest.raises(AssertionError):
        SchemaChecker(None).check("GET", "/users", 401, b'{"error":{"message":"x"}}', "text/html")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b'{"message":"Not Found"}', "application/json"),  # no error envelope
        (400, b'{"error":{"code":2001}}', "application/json"),  # envelope without a message
        (204, b"{}", "application/json"),  # no-content with a body
        (502, b"", "application/json"),  # the dropped answer claims JSON
    ],
)
def test_checker_without_the_schema_still_checks_the_envelope(
    status: int, body: bytes, content_type: str
) -> None:
    with pytest.raises(AssertionError):
        SchemaChecker(None).check("GET", "/users", status, body, content_type)
    SchemaChecker(None).check(
        "GET", "/users", 404, b'{"error":{"message":"x"}}', "application/json"
    )


def test_missing_schema_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="PDAUTH_OPENAPI_SCHEMA"):
        SchemaChecker(tmp_path / "missing.json")


def test_schema_lookup_order(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shared = tmp_path / "shared" / "pagerduty-openapi" / "openapiv3.json"
    cached = repo / ".cache" / "pagerduty-openapi" / "openapiv3.json"
    assert candidates(repo, {}) == [shared, cached]
    assert find_schema(repo, {}) is None
    cached.parent.mkdir(parents=True)
    cached.write_text("{}")
    assert find_schema(repo, {}) == cached
    shared.parent.mkdir(parents=True)
    shared.write_text("{}")
    assert find_schema(repo, {}) == shared
    # An explicit variable wins, and naming no file means absent: no fallback to the others.
    explicit = tmp_path / "x.json"
    assert find_schema(repo, {ENV_VAR: str(explicit)}) is None
    explicit.write_text("{}")
    assert find_schema(repo, {ENV_VAR: str(explicit)}) == explicit
    assert Path(__file__).resolve().parents[2] == REPO


def test_a_missing_schema_skips_with_one_reason_that_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.json"))
    with pytest.raises(pytest.skip.Exception) as skipped:
        conformance_checker()
    assert skipped.value.msg == MISSING_REASON
    assert "make schema" in MISSING_REASON
    assert ENV_VAR in MISSING_REASON
    assert SchemaChecker(find_schema()).registry is None  # behaviour tests still get a checker


@pytest.mark.anyio
async def test_every_operation_conforms() -> None:
    checker = conformance_checker()  # fresh counters for this test
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


# -- scripts/fetch_schema.py (`make schema`) ----------------------------------------------------


def _fetch_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_schema", REPO / "scripts/fetch_schema.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_schema_verifies_then_writes_atomically(tmp_path: Path) -> None:
    import hashlib

    fetch = _fetch_script()
    data = b'{"openapi": "3.0.2"}'
    target = tmp_path / "cache" / "openapiv3.json"
    with pytest.raises(fetch.FetchError, match="SHA-256 mismatch: got "):
        fetch.verify(data)
    fetch.verify(data, hashlib.sha256(data).hexdigest())
    fetch.write_atomically(data, target)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["openapiv3.json"]  # no temp left


def test_fetch_schema_offline_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    fetch = _fetch_script()
    with socket.socket() as sock:  # a port that refuses connections: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fetch.URL = f"http://127.0.0.1:{port}/openapiv3.json"
    target = tmp_path / "openapiv3.json"
    assert fetch.main([str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("fetch_schema: cannot download"), err
    assert "Traceback" not in err
    assert not target.exists()
