"""schemathesis over the emulator's REST surface, against PagerDuty's official OpenAPI schema.

The schema is PagerDuty's own document (found as tests/schema_lookup.py says; without it the
tests skip with its one reason, ``make schema`` fetches it), trimmed to the operations the emulator
serves (``OPERATIONS`` of tests/emulator/test_rest_support.py) — every component stays, so each
``$ref`` resolves as PagerDuty wrote it. schemathesis generates requests from it, valid
("positive") and invalid ("negative"), and sends them to the emulator on a real socket, US and
EU, with a valid bearer token of a Classic read+write user grant (minted again whenever a
generated ``DELETE /oauth_delegations`` revokes it). Every answer must be below 500 and match
the official schema for its operation and status, as ``SchemaChecker`` reads it (an error status
the operation does not define is checked against PagerDuty's generic error envelope).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdauth.emulator import EmulatorConfig, EmulatorServer
from tests.emulator.test_rest_support import (
    ADMIN_EU,
    ADMIN_US,
    OPERATIONS,
    SchemaChecker,
    conformance_checker,
    user_token,
)

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

EXAMPLES = 15  # per operation, mode and region: 11 operations x 2 x 2 x 15 = 660 requests


@dataclass
class Region:
    name: str
    prefix: str
    user: str
    token: str = ""


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return conformance_checker()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(rate_limit=1_000_000)) as srv:
        yield srv


@pytest.fixture(scope="module")
def schema(checker: SchemaChecker) -> Any:
    """The official document, only the served operations (all components kept)."""
    assert checker.path is not None
    document = json.loads(checker.path.read_text(encoding="utf-8"))
    paths: dict[str, Any] = {}
    for method, template in OPERATIONS:
        item = document["paths"][template]
        kept = paths.setdefault(template, {k: v for k, v in item.items() if k == "parameters"})
        kept[method.lower()] = item[method.lower()]
    document["paths"] = paths
    return schemathesis.openapi.from_dict(document)


def _real_values(srv: EmulatorServer, email: str) -> dict[str, list[str]]:
    """Ids that exist in the region's account, so generated requests also reach success paths."""
    directory = srv.state.directory
    user = directory.find_user(email)
    assert user is not None
    account = directory.accounts[user.account_id]
    return {
        "/users/{id}": [u.id for u in directory.users_of(account.id)[:5]],
        "/services/{id}": [s.id for s in directory.services.values() if s.account_id == account.id],
        "/abilities/{id}": list(account.abilities),
        "user_id": [user.id],
        "email": [user.email],
    }


def _aim(case: Any, real: dict[str, list[str]], pick: int) -> None:
    """Point a generated case at existing entities (ids, the From user, the incident's service)."""

    def choose(values: list[str]) -> str:
        return values[pick % len(values)]

    template = case.operation.path
    if "id" in (case.path_parameters or {}) and real.get(template):
        case.path_parameters["id"] = choose(real[template])
    if template == "/oauth_delegations" and isinstance(case.query, dict):
        case.query["user_id"] = choose(real["user_id"])
    if template == "/incidents" and case.method.upper() == "POST":
        case.headers = {**(case.headers or {}), "From": choose(real["email"])}
        incident = case.body.get("incident") if isinstance(case.body, dict) else None
        service = incident.get("service") if isinstance(incident, dict) else None
        if isinstance(service, dict):
            service["id"] = choose(real["/services/{id}"])
            service["type"] = "service_reference"


def _mint(srv: EmulatorServer, user: str) -> str:
    async def go() -> str:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            return await user_token(client, scope="read write", user=user)

    return anyio.run(go)


def _fresh_token(srv: EmulatorServer, region: Region) -> str:
    """The region's token, minted again if a generated request revoked its grant."""
    if not region.token or srv.state.authenticate(region.token) is None:
        region.token = _mint(srv, region.user)
    return region.token


def test_the_trimmed_schema_has_exactly_the_served_operations(schema: Any) -> None:
    labels = sorted(op.ok().label for op in schema.get_all_operations())
    assert labels == sorted(f"{m} {p}" for m, p in OPERATIONS)


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("region_name", ["us", "eu"])
def test_generated_requests_get_no_5xx_and_answers_match_the_official_schema(
    schema: Any, server: EmulatorServer, checker: SchemaChecker, mode: str, region_name: str
) -> None:
    region = Region("us", "", ADMIN_US) if region_name == "us" else Region("eu", "/eu", ADMIN_EU)
    base_url = server.url + region.prefix
    generation_mode = schemathesis.GenerationMode(mode)
    real = _real_values(server, region.user)
    failures: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(
            case=operation.as_strategy(generation_mode=generation_mode),
            aim=st.booleans(),
            pick=st.integers(min_value=0, max_value=50),
        )
        def run(case: Any, aim: bool, pick: int) -> None:
            if aim:
                _aim(case, real, pick)
            token = _fresh_token(server, region)
            headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            seen[(case.operation.label, response.status_code)] += 1
            label = f"{case.operation.label} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{label}: {response.content[:200]!r}")
                return
            path = urlsplit(response.request.url).path
            if region.prefix and path.startswith(region.prefix + "/"):
                path = path[len(region.prefix) :]
            content_type = (response.headers.get("content-type") or [""])[0]
            try:
                checker.check(
                    case.method.upper(), path, response.status_code, response.content, content_type
                )
            except AssertionError as exc:  # collect every mismatch, then fail once
                failures.append(f"{label}: {exc}")

        run()
    assert not failures, "\n".join(failures[:10])
    # The run reached every operation, and in positive mode got real answers from each.
    labels = {label for label, _ in seen}
    assert labels == {f"{m} {p}" for m, p in OPERATIONS}
    if mode == "positive":
        succeeded = {label for label, status in seen if status < 300}
        assert len(succeeded) >= len(OPERATIONS) - 3, sorted(seen.items())
    print(f"\n{region_name}/{mode}: {sum(seen.values())} requests, statuses {sorted(seen.items())}")
