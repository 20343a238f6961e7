"""RedisPacer: the pacing rules as atomic Lua scripts, one budget for many processes.

Needs Redis on 127.0.0.1:6379 (``PDAUTH_TEST_REDIS_URL`` to override); skipped without it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis

from pdauth.client import PagerDutyClient, RedisPacer
from pdauth.client.credentials import ApiKeyToken
from pdauth.client.pacing import RateLimitHeaders, Ticket
from pdauth.client.redis_pacer import (
    ACQUIRE_LUA,
    BLOCK_LUA,
    FORGET_LUA,
    OBSERVE_LUA,
    observe_args,
    parse_acquire,
    script_keys,
)
from pdauth.clock import FrozenClock
from pdauth.errors import ConfigurationError, DeadlineExceededError

from .emulator_helpers import BASE, Emulator
from .pacing_sim import FixedWindowServer, simulate
from .test_client_pacing_emulator import hammer

REDIS_URL = os.environ.get("PDAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_up() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not redis_up(), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    value = f"pdauth-test:{uuid.uuid4().hex}:"
    yield value
    with redis.Redis.from_url(REDIS_URL) as r:
        for key in r.scan_iter(match=f"{value}*"):
            r.delete(key)


class LuaPacing:
    """The Lua scripts behind the interface of PacingState, on simulated time."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = script_keys(prefix, "sim")
        self.scripts = {s: client.register_script(s) for s in (ACQUIRE_LUA, OBSERVE_LUA)}
        self.scripts[FORGET_LUA] = client.register_script(FORGET_LUA)
        self.scripts[BLOCK_LUA] = client.register_script(BLOCK_LUA)

    def run(self, script: str, *args: Any) -> Any:
        return self.scripts[script](keys=self.keys, args=list(args))

    @property
    def in_flight(self) -> int:
        return int(self.redis.zcard(self.keys[1]))

    def try_acquire(self, now: float) -> Ticket | float:
        return parse_acquire(self.run(ACQUIRE_LUA, repr(now), "120.0"))

    def observe(
        self, ticket: Ticket, now: float, headers: RateLimitHeaders | None, status: int
    ) -> None:
        self.run(OBSERVE_LUA, *observe_args(repr(now), ticket, status, headers))

    def forget(self, ticket: Ticket) -> None:
        self.run(FORGET_LUA, "0", ticket.seq)

    def block(self, until: float) -> None:
        self.run(BLOCK_LUA, repr(until), "0")


@pytest.mark.parametrize("rounding", ["ceil", "floor", "float"])
def test_the_lua_rules_pace_like_the_python_ones(prefix: str, rounding: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        server = FixedWindowServer(300, 5.0, rounding)  # type: ignore[arg-type]
        result = simulate(server, workers=16, requests=1500, state=LuaPacing(client, prefix))
    assert result.rejected == 0
    assert result.completed == 1500
    assert result.steady_rate(300) >= 0.95 * 300 / 5.0


@pytest.mark.parametrize("rounding", ["ceil", "floor", "round", "float"])
def test_the_lua_rules_decide_as_the_python_ones(prefix: str, rounding: str) -> None:
    """Same server, same seed: the Lua scripts and PacingState make the same decisions (to the
    microsecond Redis stores times at), first window and failed early probes included."""
    runs = []
    with redis.Redis.from_url(REDIS_URL) as client:
        for state in (None, LuaPacing(client, prefix)):
            server = FixedWindowServer(100, 5.0, rounding)  # type: ignore[arg-type]
            runs.append(simulate(server, workers=8, requests=300, seed=7, state=state))
    python, lua = runs
    assert python.rejected == lua.rejected == 0
    assert lua.done_at[100] == pytest.approx(python.done_at[100], abs=0.01)
    assert lua.elapsed == pytest.approx(python.elapsed, abs=0.05)


def test_a_crashed_process_does_not_hold_a_probe_forever(prefix: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        lua = LuaPacing(client, prefix)
        probe = lua.try_acquire(0.0)
        assert isinstance(probe, Ticket)
        assert lua.try_acquire(1.0) == float("inf")  # waiting for the probe's answer
        assert isinstance(lua.try_acquire(121.0), Ticket)  # its owner died: probe again


@pytest.mark.anyio
async def test_pacers_with_separate_memory_share_one_budget(prefix: str) -> None:
    emulator = Emulator.create(rate_limit=25, rate_window=1.5)
    key = emulator.api_key()
    pacers = [RedisPacer(REDIS_URL, prefix=prefix) for _ in range(4)]
    clients = [
        PagerDutyClient(BASE, ApiKeyToken(key), transport=emulator.transport(), pacer=pacer)
        for pacer in pacers
    ]
    try:
        results = await hammer(clients, 60, 12)
    finally:
        for client in clients:
            await client.aclose()
        for pacer in pacers:
            await pacer.aclose()
    assert len(results) == 60
    assert emulator.rate_limited()["total"] == 0


@pytest.mark.anyio
async def test_the_deadline_applies_to_shared_pacing(prefix: str) -> None:
    clock = FrozenClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    pacer = RedisPacer(REDIS_URL, prefix=prefix, clock=clock, sleep=sleep)
    try:
        ticket = await pacer.acquire("k", max_wait=1)
        await pacer.complete("k", ticket, status=200, headers=RateLimitHeaders(5, 0, 30.0))
        with pytest.raises(DeadlineExceededError):
            await pacer.acquire("k", max_wait=1)
        await pacer.block("k", 2.0)
        with anyio.fail_after(5):
            lost = await pacer.acquire("k", max_wait=60)  # after the window: a probe
        assert lost.probe
        await pacer.abandon("k", lost)
    finally:
        await pacer.aclose()
    assert sum(slept) <= 60


def test_only_redis_urls() -> None:
    with pytest.raises(ConfigurationError, match="redis"):
        RedisPacer("http://127.0.0.1:6379")
    assert "secret" not in repr(RedisPacer("redis://:secret@127.0.0.1:6379/0"))
