"""Bad input never breaks the REST API: arbitrary query parameters on ``/users`` and
``/incidents`` get a 200 or a 4xx PagerDuty envelope (schema-checked), never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig

from .test_rest_support import SchemaChecker, api_key, make_state, schema_checker

NAMES = (
    "limit",
    "offset",
    "total",
    "query",
    "include[]",
    "statuses[]",
    "urgencies[]",
    "since",
    "until",
    "date_range",
    "sort_by",
    "team_ids[]",
    "service_ids[]",
    "user_ids[]",
    "incident_key",
    "time_zone",
    "cursor",
)
INTERESTING = (
    "",
    "0",
    "-1",
    "1",
    "100",
    "101",
    "9999",
    "10000",
    "1e3",
    "true",
    "false",
    "all",
    "high",
    "triggered",
    "created_at:desc",
    "urgency,incident_number",
    "2026-11-01T00:00:00Z",
    "2026-02-30",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01",
    "\x00",
    "ü" * 300,
)
text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
values = st.one_of(st.sampled_from(INTERESTING), text)
params = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), text), values), max_size=6)
paths = st.sampled_from(["/users", "/incidents", "/eu/users", "/eu/incidents"])


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return schema_checker()


Fuzz = tuple[TestClient, dict[str, dict[str, str]]]


@pytest.fixture(scope="module")
def fuzz(checker: SchemaChecker) -> Iterator[Fuzz]:
    app = create_app(state=make_state(EmulatorConfig(rate_limit=1_000_000)))
    auth = {
        region: {"Authorization": f"Token token={api_key(app, account)}"}
        for region, account in (("us", "PACME01"), ("eu", "PEURO01"))
    }
    with TestClient(app, base_url="http://emulator") as client:
        client.event_hooks["response"] = [checker.sync_hook()]
        yield client, auth


def auth_for(fuzz: Fuzz, path: str) -> dict[str, str]:
    return fuzz[1]["eu" if path.startswith("/eu/") else "us"]


def assert_clean(status: int, body: object) -> None:
    assert status < 500
    assert status in (200, 400), (status, body)
    if status == 400:
        assert isinstance(body, dict)
        assert isinstance(body["error"]["message"], str)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, query=params)
def test_query_params_never_break_the_api(
    fuzz: Fuzz, path: str, query: list[tuple[str, str]]
) -> None:
    response = fuzz[0].get(path, params=tuple(query), headers=auth_for(fuzz, path))
    assert_clean(response.status_code, response.json())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, raw=st.binary(max_size=60))
def test_raw_query_bytes_never_break_the_api(fuzz: Fuzz, path: str, raw: bytes) -> None:
    # Arbitrary bytes, percent-encoded but kept as "name=value&…" structure where present.
    query = quote_from_bytes(raw, safe=b"=&[]")
    response = fuzz[0].get(f"{path}?{query}", headers=auth_for(fuzz, path))
    assert_clean(response.status_code, response.json())
