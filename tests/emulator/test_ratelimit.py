"""Rate limits: the fixed-window counter itself, and the REST API's ``ratelimit-*`` headers, 429
body and header-less 429s (PagerDuty REST 04-Rate-Limits.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.ratelimit import RateLimiter
from pdauth.emulator.state import EmulatorState

from .test_rest_support import SchemaChecker, api_key, bearer, emulator, schema_checker, user_token


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counts_down_and_refills() -> None:
    time = FakeTime()
    limiter = RateLimiter(limit=3, window=60.0, clock=time)
    decisions = [limiter.hit("cred") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    assert decisions[0].headers() == {
        "ratelimit-limit": "3",
        "ratelimit-remaining": "2",
        "ratelimit-reset": "60",
    }
    time.now += 40.5
    refused = limiter.hit("cred")
    assert not refused.allowed
    assert refused.reset == 20  # ceil(19.5)
    time.now += 19.5
    assert limiter.hit("cred").remaining == 2


def test_reset_is_at_least_one_second() -> None:
    time = FakeTime()
    limiter = RateLimiter(limit=1, window=60.0, clock=time)
    limiter.hit("cred")
    time.now += 59.999
    assert limiter.hit("cred").reset == 1


def test_credentials_have_separate_buckets_keyed_by_digest() -> None:
    limiter = RateLimiter(limit=1, window=60.0, clock=FakeTime())
    assert limiter.hit("a").allowed
    assert not limiter.hit("a").allowed
    assert limiter.hit("b").allowed
    assert "a" not in limiter._windows  # plaintext credentials are not kept
    assert RateLimiter.key_for("a") in limiter._windows


def test_manual_reset_and_bad_arguments() -> None:
    limiter = RateLimiter(limit=1, window=60.0, clock=FakeTime())
    limiter.hit("a")
    limiter.reset()
    assert limiter.hit("a").allowed
    with pytest.raises(ValueError, match="limit"):
        RateLimiter(limit=0, window=60.0, clock=FakeTime())
    with pytest.raises(ValueError, match="window"):
        RateLimiter(limit=1, window=float("nan"), clock=FakeTime())
    with pytest.raises(ValueError, match="drop_headers"):
        RateLimiter(limit=1, window=1.0, clock=FakeTime(), drop_headers=1.5)


def test_headerless_fraction_is_seeded() -> None:
    def refusals(seed: int) -> list[bool]:
        limiter = RateLimiter(limit=1, window=60.0, clock=FakeTime(), drop_headers=0.5, seed=seed)
        limiter.hit("a")
        return [limiter.hit("a").headerless for _ in range(200)]

    first = refusals(3)
    assert first == refusals(3)
    assert 60 < sum(first) < 140


# -- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return schema_checker()


@pytest.fixture
async def small(checker: SchemaChecker) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app, client = emulator(checker, EmulatorConfig(rate_limit=5, rate_window=60.0))
    async with client:
        yield app, client


def state_of(app: Starlette) -> EmulatorState:
    state: EmulatorState = app.state.emulator
    return state


@pytest.mark.anyio
async def test_headers_decrease_then_429_then_reset(
    small: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = small
    auth = {"Authorization": f"Token token={api_key(app)}"}
    remaining = []
    for _ in range(5):
        response = await client.get("/users", headers=auth)
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "5"
        assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    limited = await client.get("/users", headers=auth)
    assert limited.status_code == 429
    assert limited.json() == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-limit"] == "5"
    state_of(app).clock.advance(30)
    assert int((await client.get("/users", headers=auth)).headers["ratelimit-reset"]) == 30
    state_of(app).clock.advance(30)
    fresh = await client.get("/users", headers=auth)
    assert fresh.status_code == 200
    assert fresh.headers["ratelimit-remaining"] == "4"
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["rate_limited"] == {"total": 2, "with_headers": 2, "without_headers": 0}


@pytest.mark.anyio
async def test_errors_carry_headers_but_401_does_not(
    small: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = small
    auth = {"Authorization": f"Token token={api_key(app)}"}
    not_found = await client.get("/users/PNOPE00", headers=auth)
    assert not_found.status_code == 404
    assert not_found.headers["ratelimit-remaining"] == "4"
    bad = await client.get("/users", params={"limit": "x"}, headers=auth)
    assert bad.headers["ratelimit-remaining"] == "3"
    for _ in range(10):  # failed authentication never spends anyone's budget
        unauthorized = await client.get("/users", headers={"Authorization": "Bearer nope"})
        assert unauthorized.status_code == 401
        assert "ratelimit-remaining" not in unauthorized.headers
    assert (await client.get("/users", headers=auth)).headers["ratelimit-remaining"] == "2"


@pytest.mark.anyio
async def test_each_token_has_its_own_budget(small: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = small
    first = await user_token(client)
    second = await user_token(client)
    for _ in range(5):
        await client.get("/users/me", headers=bearer(first))
    assert (await client.get("/users/me", headers=bearer(first))).status_code == 429
    other = await client.get("/users/me", headers=bearer(second))
    assert other.status_code == 200
    assert other.headers["ratelimit-remaining"] == "4"
    key = await client.get("/abilities", headers={"Authorization": f"Token token={api_key(app)}"})
    assert key.headers["ratelimit-remaining"] == "4"
    # The bucket follows the credential, not the spelling of the header.
    same = await client.get(
        "/abilities", headers={"Authorization": f'token  token="{api_key(app)}"'}
    )
    assert same.headers["ratelimit-remaining"] == "3"


@pytest.mark.anyio
async def test_control_reset_refills(small: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = small
    auth = {"Authorization": f"Token token={api_key(app)}"}
    for _ in range(6):
        await client.get("/abilities", headers=auth)
    assert (await client.get("/abilities", headers=auth)).status_code == 429
    assert (await client.post("/_emulator/reset")).status_code == 200
    assert (await client.get("/abilities", headers=auth)).headers["ratelimit-remaining"] == "4"


@pytest.mark.anyio
async def test_headerless_429s(checker: SchemaChecker) -> None:
    config = EmulatorConfig(rate_limit=1, drop_ratelimit_headers=1.0)
    app, client = emulator(checker, config)
    async with client:
        auth = {"Authorization": f"Token token={api_key(app)}"}
        assert (await client.get("/abilities", headers=auth)).status_code == 200
        bare = await client.get("/abilities", headers=auth)
        assert bare.status_code == 429
        assert bare.content == b""
        assert not any(h.startswith("ratelimit-") for h in bare.headers)
        assert "content-type" not in bare.headers
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["rate_limited"] == {"total": 1, "with_headers": 0, "without_headers": 1}


@pytest.mark.anyio
async def test_headerless_fraction_over_http(checker: SchemaChecker) -> None:
    config = EmulatorConfig(rate_limit=1, drop_ratelimit_headers=0.3, seed=11)
    app, client = emulator(checker, config)
    async with client:
        auth = {"Authorization": f"Token token={api_key(app)}"}
        await client.get("/abilities", headers=auth)
        bare = 0
        for _ in range(60):
            response = await client.get("/abilities", headers=auth)
            assert response.status_code == 429
            bare += "ratelimit-limit" not in response.headers
        assert 5 <= bare <= 35
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["rate_limited"]["without_headers"] == bare
