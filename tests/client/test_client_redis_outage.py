"""RedisPacer when Redis goes away and comes back: calls go on with local pacing, one warning,
the outage observer told, shared pacing again after a probe. Against a redis-server of the
test's own on a free port, killed and restarted; plus the key prefix and the missing extra."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdauth.client import PagerDutyClient, RedisPacer, StaticToken
from pdauth.client.credentials import ApiKeyToken
from pdauth.errors import ConfigurationError

from .emulator_helpers import BASE, Emulator

REDIS_SERVER = shutil.which("redis-server")
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A throwaway redis-server (no persistence) that a test can kill and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", *NO_PERSISTENCE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for the server to accept commands (bounded; it normally takes milliseconds).
        give_up = time.monotonic() + 20
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as r:
                    if r.ping():
                        return
            except redis.RedisError:
                if time.monotonic() > give_up or self.proc.poll() is not None:
                    raise
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def keys(self, prefix: str) -> list[bytes]:
        with redis.Redis.from_url(self.url) as r:
            return list(r.scan_iter(match=f"{prefix}*"))


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Outages:
    """The ``on_outage`` observer: what it was told, and events to wait on."""

    def __init__(self) -> None:
        self.told: list[bool] = []
        self.down = anyio.Event()
        self.back = anyio.Event()

    def __call__(self, down: bool) -> None:
        self.told.append(down)
        (self.down if down else self.back).set()


@needs_redis_server
@pytest.mark.anyio
async def test_calls_go_on_through_an_outage_and_sharing_comes_back(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = Emulator.create(rate_limit=1000, rate_window=60)
    outages = Outages()
    prefix = f"pdauth-test:{uuid.uuid4().hex}:"
    pacer = RedisPacer(
        redis_process.url, prefix=prefix, timeout=0.5, probe_backoff=(0.05, 0.2), on_outage=outages
    )
    client = PagerDutyClient(
        BASE, ApiKeyToken(emulator.api_key()), transport=emulator.transport(), pacer=pacer
    )
    caplog.set_level(logging.INFO, logger="pdauth.client")
    try:
        for _ in range(3):
            await client.get("/users", params={"limit": 1})
        assert redis_process.keys(prefix)  # shared: the state is in Redis
        redis_process.stop()
        during = [await client.get("/users", params={"limit": 1}) for _ in range(10)]
        assert outages.down.is_set()
        shared_during = pacer.shared
        redis_process.start()  # same port, empty: the next probe finds it
        with anyio.fail_after(30):
            while not outages.back.is_set():
                await client.get("/users", params={"limit": 1})
        shared_after = pacer.shared
        await client.get("/users", params={"limit": 1})
        assert redis_process.keys(prefix)  # shared pacing again
    finally:
        await client.aclose()
        await pacer.aclose()
    assert all(page["users"] for page in during)  # no call lost
    assert (shared_during, shared_after) == (False, True)
    assert outages.told == [True, False]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # one warning for the outage, not one per call or probe
    assert "unreachable" in warnings[0].getMessage()
    assert str(redis_process.port) not in caplog.text  # never the URL
    assert emulator.rate_limited()["total"] == 0


@needs_redis_server
@pytest.mark.anyio
async def test_a_call_in_flight_when_redis_dies_still_returns(redis_process: RedisProcess) -> None:
    entered, release = anyio.Event(), anyio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        headers = {"ratelimit-limit": "100", "ratelimit-remaining": "90", "ratelimit-reset": "30"}
        return JSONResponse({"users": [{"id": "P1"}]}, headers=headers)

    app = Starlette(routes=[Route("/users", slow)])
    outages = Outages()
    pacer = RedisPacer(
        redis_process.url,
        prefix=f"pdauth-test:{uuid.uuid4().hex}:",
        timeout=0.5,
        on_outage=outages,
    )
    client = PagerDutyClient(
        BASE, StaticToken("in-flight"), transport=httpx.ASGITransport(app=app), pacer=pacer
    )
    result: dict[str, Any] = {}

    async def call() -> None:
        result["body"] = await client.get("/users")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await entered.wait()  # the ticket came from Redis; the request is in flight
            redis_process.stop()
            release.set()
    finally:
        await client.aclose()
        await pacer.aclose()
    assert result["body"] == {"users": [{"id": "P1"}]}
    assert outages.told == [True]  # completing found Redis gone, and said so


@needs_redis_server
@pytest.mark.anyio
async def test_every_key_lives_under_the_prefix(redis_process: RedisProcess) -> None:
    emulator = Emulator.create()
    prefix = f"pdauth-test:{uuid.uuid4().hex}:"
    pacer = RedisPacer(redis_process.url, prefix=prefix)
    client = PagerDutyClient(
        BASE, ApiKeyToken(emulator.api_key()), transport=emulator.transport(), pacer=pacer
    )
    try:
        await client.get("/users", params={"limit": 1})
    finally:
        await client.aclose()
        await pacer.aclose()
    with redis.Redis.from_url(redis_process.url) as r:
        every = [k.decode() for k in r.scan_iter()]
    assert every
    assert all(k.startswith(prefix + "{") for k in every)


def test_the_default_prefix_is_pdauths() -> None:
    assert "'pdauth:'" in repr(RedisPacer("redis://127.0.0.1:1/0"))


def test_without_the_redis_package_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # import fails as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'pdauth\[redis\]'"):
        RedisPacer("redis://127.0.0.1:6379/0")
