"""Header-driven pacing against the emulator's rate limiter: bursts of concurrent calls get
everything done without a single 429, and clients of one credential share one budget."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdauth.client import LocalPacer, PagerDutyClient, RedisPacer, StaticToken
from pdauth.client.credentials import ApiKeyToken
from pdauth.errors import DeadlineExceededError

from .emulator_helpers import BASE, Emulator


async def hammer(clients: list[PagerDutyClient], requests: int, tasks: int) -> list[Any]:
    """``requests`` GETs from ``tasks`` concurrent tasks spread over ``clients``."""
    results: list[Any] = []
    remaining = requests

    async def worker(i: int) -> None:
        nonlocal remaining
        client = clients[i % len(clients)]
        while remaining > 0:
            remaining -= 1
            results.append(await client.get("/users", params={"limit": 1}))

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(worker, i)
    return results


@pytest.mark.anyio
@pytest.mark.slow
async def test_3000_requests_from_16_tasks_under_300_per_5s_never_see_a_429() -> None:
    emulator = Emulator.create(rate_limit=300, rate_window=5)
    async with PagerDutyClient(
        BASE,
        ApiKeyToken(emulator.api_key()),
        transport=emulator.transport(),
        pacer=LocalPacer(),
        max_concurrency=16,
        deadline=120,
    ) as client:
        results = await hammer([client], 3000, 16)
    assert len(results) == 3000
    assert all(r["users"] for r in results)
    assert emulator.rate_limited()["total"] == 0
    assert emulator.rest("GET /users", 200) == 3000


@pytest.mark.anyio
async def test_a_burst_across_several_windows_never_sees_a_429() -> None:
    emulator = Emulator.create(rate_limit=40, rate_window=1.5)
    async with PagerDutyClient(
        BASE,
        ApiKeyToken(emulator.api_key()),
        transport=emulator.transport(),
        pacer=LocalPacer(),
    ) as client:
        results = await hammer([client], 100, 16)
    assert len(results) == 100
    assert emulator.rate_limited()["total"] == 0


@pytest.mark.anyio
async def test_clients_of_one_credential_share_one_budget() -> None:
    emulator = Emulator.create(rate_limit=25, rate_window=1.5)
    pacer = LocalPacer()
    key = emulator.api_key()
    clients = [
        PagerDutyClient(BASE, ApiKeyToken(key), transport=emulator.transport(), pacer=pacer)
        for _ in range(4)
    ]
    try:
        results = await hammer(clients, 60, 12)
    finally:
        for client in clients:
            await client.aclose()
    assert len(results) == 60
    assert emulator.rate_limited()["total"] == 0


@pytest.mark.anyio
async def test_negative_control_separate_budgets_get_throttled() -> None:
    """Clients that each keep their own budget do overshoot (so the test above can fail)."""
    emulator = Emulator.create(rate_limit=25, rate_window=1.5)
    key = emulator.api_key()
    clients = [
        PagerDutyClient(BASE, ApiKeyToken(key), transport=emulator.transport(), pacer=LocalPacer())
        for _ in range(4)
    ]
    try:
        results = await hammer(clients, 60, 12)
    finally:
        for client in clients:
            await client.aclose()
    assert len(results) == 60  # they recover by waiting ratelimit-reset
    assert emulator.rate_limited()["total"] > 0


@pytest.mark.anyio
async def test_the_default_pacer_is_shared_by_short_lived_clients() -> None:
    # A seed of its own: the process-wide pacer must not meet this credential in other tests.
    emulator = Emulator.create(seed=4242, rate_limit=3, rate_window=30)
    key = emulator.api_key()
    for _ in range(2):  # throwaway clients, one credential
        async with PagerDutyClient(BASE, ApiKeyToken(key), transport=emulator.transport()) as c:
            await c.get("/users", params={"limit": 1})
    # One request is left, kept for the rollover: a third client knows it without asking.
    async with PagerDutyClient(
        BASE, ApiKeyToken(key), transport=emulator.transport(), deadline=1
    ) as client:
        with pytest.raises(DeadlineExceededError, match="pacing"):
            await client.get("/users", params={"limit": 1})
    assert emulator.rest("GET /users") == 2
    assert emulator.rate_limited()["total"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("use_redis", [False, True])
async def test_the_concurrency_limit_holds_per_credential(use_redis: bool) -> None:
    active = 0
    peak = 0

    async def slow(request: Request) -> Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.02)
        active -= 1
        return JSONResponse({"users": []})

    app = Starlette(routes=[Route("/users", slow)])
    pacer: Any = LocalPacer()
    if use_redis:
        from .test_client_redis_pacer import REDIS_URL, redis_up

        if not redis_up():
            pytest.skip("no Redis")
        pacer = RedisPacer(REDIS_URL, prefix=f"pdauth-test:{uuid.uuid4().hex}:")
    clients = [
        PagerDutyClient(
            BASE,
            StaticToken("one-credential"),
            transport=httpx.ASGITransport(app=app),
            pacer=pacer,
            max_concurrency=3,
        )
        for _ in range(2)
    ]
    try:
        results = await hammer(clients, 40, 10)
    finally:
        for client in clients:
            await client.aclose()
        if use_redis:
            await pacer.aclose()
    assert len(results) == 40
    assert peak == 3
