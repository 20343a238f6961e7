"""Request limits across instances: with Redis two service apps share one budget per client.

Two apps built from the same settings stand for two instances (separate memory, one Redis).
Without Redis each enforces the limit alone — the negative control that shows the test can
fail. Redis unreachable: the limit still holds per process, nothing answers 500, one warning.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette

from pdauth.clock import FrozenClock, SystemClock
from pdauth.config import Settings
from pdauth.service.shared_limits import (
    RETRY_REDIS_AFTER,
    LocalLimiter,
    RedisLimiter,
    build_limiter,
)
from tests.service.conftest import API_KEY, AppFactory, BrowserFactory, make_settings
from tests.service.test_standalone import mint, open_link

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/8"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
AUTH = {"authorization": f"Bearer {API_KEY}"}
LIMIT = 3


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own, removed afterwards."""
    redis = pytest.importorskip("redis")
    value = f"pdauth-test-{secrets.token_hex(4)}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(value + "*"):
            client.delete(key)
    finally:
        client.close()


def _settings(database_url: str, redis_url: str | None, prefix: str) -> Settings:
    extra = {"redis_url": redis_url} if redis_url else {}
    return make_settings(database_url, connect_rate_limit=LIMIT, redis_prefix=prefix, **extra)


async def _mint(browser: httpx.AsyncClient) -> httpx.Response:
    return await browser.post("/api/v1/connect-sessions", json={"owner": "user-1"}, headers=AUTH)


async def _alternate(apps: list[Starlette], browser_factory: BrowserFactory, n: int) -> list[int]:
    browsers = [browser_factory(None, target=app) for app in apps]
    return [(await _mint(browsers[i % len(browsers)])).status_code for i in range(n)]


async def test_with_redis_two_instances_share_one_limit(
    app_factory: AppFactory, browser_factory: BrowserFactory, database_url: str, prefix: str
) -> None:
    settings = _settings(database_url, REDIS_URL, prefix)
    apps = [app_factory(None, settings_=settings) for _ in range(2)]
    statuses = await _alternate(apps, browser_factory, 2 * LIMIT)
    assert statuses == [201] * LIMIT + [429] * LIMIT


async def test_without_redis_each_instance_allows_the_whole_limit(
    app_factory: AppFactory, browser_factory: BrowserFactory, database_url: str, prefix: str
) -> None:
    settings = _settings(database_url, None, prefix)
    apps = [app_factory(None, settings_=settings) for _ in range(2)]
    statuses = await _alternate(apps, browser_factory, 2 * LIMIT)
    assert statuses == [201] * (2 * LIMIT)  # N instances allow N times the limit
    assert (await _mint(browser_factory(None, target=apps[0]))).status_code == 429


async def test_a_refusal_says_when_to_retry_and_is_documented(
    app_factory: AppFactory, browser_factory: BrowserFactory, database_url: str, prefix: str
) -> None:
    app = app_factory(None, settings_=_settings(database_url, REDIS_URL, prefix))
    browser = browser_factory(None, target=app)
    for _ in range(LIMIT):
        assert (await _mint(browser)).status_code == 201
    refused = await _mint(browser)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    spec = (await browser.get("/api/v1/openapi.json")).json()
    assert "429" in spec["paths"]["/connect-sessions"]["post"]["responses"]


async def test_redis_keys_hold_no_client_address(
    app_factory: AppFactory, browser_factory: BrowserFactory, database_url: str, prefix: str
) -> None:
    redis = pytest.importorskip("redis")
    app = app_factory(None, settings_=_settings(database_url, REDIS_URL, prefix))
    browser = browser_factory(None, target=app, peer="203.0.113.77")
    assert (await _mint(browser)).status_code == 201
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() for k in client.scan_iter(prefix + "*")]
    finally:
        client.close()
    assert keys
    assert all(k.startswith(prefix + "limit") for k in keys)
    assert not any("203.0.113.77" in k for k in keys)


async def test_redis_unreachable_limits_per_process_without_a_500(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    database_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pdauth.service")
    app = app_factory(None, settings_=_settings(database_url, UNREACHABLE_REDIS, prefix))
    browser = browser_factory(None, target=app)
    statuses = [(await _mint(browser)).status_code for _ in range(LIMIT + 1)]
    assert statuses == [201] * LIMIT + [429]
    warnings = [r for r in caplog.records if "request limits are per process" in r.message]
    assert len(warnings) == 1


class OwnRedis:
    """A Redis server of this test's own on a free port, that the test kills and restarts."""

    def __init__(self, binary: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = OwnRedis(binary)
    yield server
    server.kill()


async def test_the_limiter_survives_a_redis_outage_and_comes_back_to_it(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pdauth.service")
    clock = FrozenClock()
    own_redis.start()
    limiter = build_limiter(own_redis.url, limit=2, window=60, prefix="t:", clock=clock)
    assert isinstance(limiter, RedisLimiter)
    try:
        assert await limiter.hit("connect|a") == 0  # 1st of 2, counted in Redis
        own_redis.kill()
        # Down: judged locally (a fresh local bucket allows 2), never an exception.
        assert await limiter.hit("connect|a") == 0
        assert await limiter.hit("connect|a") == 0
        assert await limiter.hit("connect|a") > 0
        own_redis.start()  # back, empty (no persistence)
        clock.advance(RETRY_REDIS_AFTER + 1)
        assert await limiter.hit("connect|a") == 0  # counted in Redis again
        assert await limiter.hit("connect|a") == 0
        assert await limiter.hit("connect|a") > 0
    finally:
        await limiter.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("per process until it is back" in m for m in messages) == 1
    assert sum("Redis answers again" in m for m in messages) == 1


def test_without_redis_or_with_no_limit_the_local_limiter_is_used() -> None:
    clock = SystemClock()
    assert isinstance(
        build_limiter(None, limit=3, window=60, prefix="p:", clock=clock), LocalLimiter
    )
    assert isinstance(
        build_limiter(REDIS_URL, limit=0, window=60, prefix="p:", clock=clock), LocalLimiter
    )


async def test_a_connect_link_redeemed_while_redis_is_down_is_a_503_and_stays_usable(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    database_url: str,
    own_redis: OwnRedis,
) -> None:
    own_redis.start()
    app = app_factory(None, settings_=_settings(database_url, own_redis.url, "t:"))
    link = await mint(browser_factory(None, target=app), "user-9")
    browser = browser_factory(None, target=app)
    token = await open_link(browser, link)
    own_redis.kill()
    down = await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert down.status_code == 503  # retryable; the link's single use could not be checked
    assert "location" not in down.headers
    own_redis.start()
    token = await open_link(browser, link)
    up = await browser.post("/connect", data={"csrf_token": token, "connect_session": "1"})
    assert up.status_code == 303  # the link was not spent by the failed attempt
