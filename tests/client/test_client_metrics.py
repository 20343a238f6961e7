"""The REST client feeds pdauth's metrics: requests by status class, 429s and pacing delay."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pdauth.client import LocalPacer, PagerDutyClient
from pdauth.metrics import metrics_registry

from .emulator_helpers import Emulator

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples() -> Samples:
    registry = metrics_registry()
    assert registry is not None  # prometheus-client (the metrics extra) is a dev dependency
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_successful_calls_are_counted_by_status_class() -> None:
    emulator = Emulator.create()
    before = _samples()
    async with PagerDutyClient.from_token(
        emulator.api_key(),
        kind="api_key",
        base_url="http://127.0.0.1:9",
        transport=emulator.transport(),
        pacer=LocalPacer(),
    ) as client:
        await client.get("/users", params={"limit": 1})
        await client.get("/services", params={"limit": 1})
    after = _samples()
    assert _delta(before, after, "pdauth_api_requests_total", method="GET", status_class="2xx") == 2
    assert _delta(before, after, "pdauth_api_pacing_delay_seconds_count", cause="pacer") == 2


async def test_a_429_is_counted_with_its_wait() -> None:
    calls = 0

    async def endpoint(request: Request) -> JSONResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return JSONResponse(
                {"error": {"message": "Rate Limit Exceeded", "code": 2020}},
                status_code=429,
                headers={
                    "ratelimit-limit": "960",
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": "1",
                },
            )
        return JSONResponse({"users": []})

    app = Starlette(routes=[Route("/users", endpoint)])
    before = _samples()
    async with PagerDutyClient.from_token(
        "a-static-token",
        base_url="http://127.0.0.1:9",
        transport=httpx.ASGITransport(app=app),
        pacer=LocalPacer(),
        deadline=10.0,
    ) as client:
        assert await client.get("/users") == {"users": []}
    after = _samples()
    assert calls == 2
    assert _delta(before, after, "pdauth_api_rate_limited_total") == 1
    assert _delta(before, after, "pdauth_api_pacing_delay_seconds_count", cause="429") == 1
    assert _delta(before, after, "pdauth_api_requests_total", method="GET", status_class="4xx") == 1
