"""schemathesis against /api/v1/openapi.json: no 5xx, and every response matches the document.

The service runs on a real loopback socket (uvicorn in a thread, its Connector routed to the
in-process emulator); schemathesis reads the served document and sends generated requests —
valid and invalid — with the API key, plus a few without it. One connection exists, so the
id-taking operations see real rows as well as 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.service import create_app
from pdauth.service.server import ServiceServer, bind_socket
from pdauth.store import upgrade
from tests.service.conftest import API_KEY, csrf, make_settings

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('api')}/api.db"
    upgrade(database_url)
    with EmulatorServer(EmulatorConfig()) as emulator:
        sock = bind_socket("127.0.0.1", 0)
        redirect_uri = f"http://127.0.0.1:{sock.getsockname()[1]}/callback"
        registered = httpx.post(
            emulator.url + "/_emulator/apps",
            json={
                "client_id": "schemathesis-app",
                "client_secret": "schemathesis-secret",
                "redirect_uris": [redirect_uri],
                "scopes": "read",
            },
        )
        assert registered.status_code in (200, 201), registered.text
        settings_ = make_settings(
            database_url,
            client_id="schemathesis-app",
            client_secret="schemathesis-secret",
            redirect_uri=redirect_uri,
            identity_url=emulator.url,
            api_url=emulator.url,
            api_url_eu=emulator.eu_api_url,
            connect_rate_limit=0,
        )
        app = create_app(settings_, lambda request: "owner-1")
        with ServiceServer(app, sock=sock) as server:
            anyio.run(_connect_once, server.url, emulator.url)
            yield server.url


async def _connect_once(base: str, pagerduty: str) -> None:
    """One real connection, so operations on ids see rows as well as 404s."""
    async with (
        httpx.AsyncClient(base_url=pagerduty) as pd,
        httpx.AsyncClient(base_url=base, headers={"x-test-user": "owner-1"}) as browser,
    ):
        response = await browser.post("/connect", data={"csrf_token": await csrf(browser)})
        assert response.status_code == 303
        params = dict(parse_qsl(urlsplit(response.headers["location"]).query))
        answer = await pd.post(
            "/_emulator/authorize", json={**params, "user": "admin@acme.example"}
        )
        callback = answer.json()["redirect"][len(base) :]
        assert (await browser.get(callback)).status_code == 303


@pytest.fixture(scope="module")
def schema(served: str) -> Any:
    return schemathesis.openapi.from_url(served + "/api/v1/openapi.json")


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_is_valid_openapi(schema: Any) -> None:
    labels = sorted(op.label for op in _operations(schema))
    assert labels == [
        "DELETE /connections/{connection_id}",
        "DELETE /connections/{connection_id}/proxy/{path}",
        "GET /connections",
        "GET /connections/{connection_id}",
        "GET /connections/{connection_id}/proxy/{path}",
        "GET /events",
        "PATCH /connections/{connection_id}/proxy/{path}",
        "POST /connect-sessions",
        "POST /connections/{connection_id}/access-token",
        "POST /connections/{connection_id}/proxy/{path}",
        "PUT /connections/{connection_id}/proxy/{path}",
    ]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_never_get_a_5xx_and_match_the_document(
    schema: Any, served: str, mode: str
) -> None:
    generation_mode = schemathesis.GenerationMode(mode)
    failures: list[str] = []
    for operation in _operations(schema):
        strategy = operation.as_strategy(generation_mode=generation_mode, headers=AUTH)

        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=strategy, with_key=st.booleans())
        def run(case: Any, with_key: bool) -> None:
            if not with_key:
                case.headers = {
                    k: v for k, v in (case.headers or {}).items() if k != "Authorization"
                }
            response = case.call()
            assert response.status_code < 500, (case.operation.label, response.status_code)
            try:
                case.validate_response(response)
            except Exception as exc:  # collect every mismatch, then fail once
                failures.append(f"{case.operation.label}: {exc}")

        run()
    assert not failures, "\n".join(failures[:10])
