"""A rig for PagerDuty's events per connection: the emulator delivers its v3 webhooks to the
pdauth service app (in process), the keeper delivers pdauth's events to a host receiver, and
the Connector's Python hook records what it is told. Nothing is patched: the emulator's
deliveries go through ``httpx.ASGITransport`` into the service's real route; a wrapper between
them can play a receiver that is down (:class:`Gate`)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.clock import FrozenClock
from pdauth.connections import Connection
from pdauth.emulator import EmulatorConfig
from pdauth.keeper import Keeper
from pdauth.service import create_app
from pdauth.subscriptions import PagerDutyNotice
from pdauth.webhooks import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, verify_signature
from tests.workers.harness import Harness, harness, sqlite_url

EVENTS = ("incident.triggered", "incident.acknowledged", "incident.resolved")
HOST_SECRET = "whsec-host-test-0123456789abcdefghijklmnop"
HOST_URL = "http://127.0.0.1:9/hooks"
SESSION_SECRET = "session-secret-for-tests-0123456789abcdef"


@dataclass(frozen=True)
class HostDelivery:
    event_id: str
    type: str
    body: dict[str, Any]
    verified: bool


class HostReceiver:
    """The host application's webhook endpoint (pdauth's signed outbox deliveries)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.deliveries: list[HostDelivery] = []
        self.app = Starlette(routes=[Route("/hooks", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        verified = verify_signature(
            HOST_SECRET,
            request.headers.get(SIGNATURE_HEADER),
            raw,
            self.clock.now(),
            event_id=request.headers.get(EVENT_ID_HEADER),
        )
        self.deliveries.append(
            HostDelivery(
                request.headers[EVENT_ID_HEADER],
                request.headers[EVENT_TYPE_HEADER],
                json.loads(raw),
                verified is not None,
            )
        )
        return Response(status_code=204)

    def of_type(self, prefix: str) -> list[HostDelivery]:
        return [d for d in self.deliveries if d.type.startswith(prefix)]


class Gate(httpx.AsyncBaseTransport):
    """Between the emulator and the pdauth app: ``down`` answers 503 without passing the
    request on (pdauth unreachable); ``lose_answers`` passes it on, then answers 503 anyway
    (pdauth recorded it but PagerDuty never saw the 2xx). Counts what reached pdauth."""

    def __init__(self, app: Starlette) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.down = 0
        self.lose_answers = 0
        self.attempts = 0
        self.statuses: list[int] = []
        self._changed = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        try:
            if self.down > 0:
                self.down -= 1
                self.statuses.append(503)
                return httpx.Response(503)
            response = await self.inner.handle_async_request(request)
            await response.aread()
            if self.lose_answers > 0:
                self.lose_answers -= 1
                self.statuses.append(503)
                return httpx.Response(503)
            self.statuses.append(response.status_code)
            return response
        finally:
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_statuses(self, count: int, timeout: float = 10.0) -> list[int]:
        with anyio.fail_after(timeout):
            while len(self.statuses) < count:
                await self._changed.wait()
        return self.statuses


@dataclass
class Rig:
    h: Harness
    app: Starlette
    gate: Gate
    host: HostReceiver
    keeper: Keeper
    notices: list[PagerDutyNotice] = field(default_factory=list)
    _arrived: anyio.Event = field(default_factory=anyio.Event)

    def hook(self, notice: PagerDutyNotice) -> None:
        self.notices.append(notice)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_notices(self, count: int, timeout: float = 10.0) -> list[PagerDutyNotice]:
        with anyio.fail_after(timeout):
            while len(self.notices) < count:
                await self._arrived.wait()
        return self.notices

    async def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription at the emulator (its control view)."""
        response = await self.h.control.get("/_emulator/webhook_subscriptions")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["webhook_subscriptions"]
        return found

    async def incident(self, connection: Connection, **extra: Any) -> dict[str, Any]:
        response = await self.h.control.post(
            "/_emulator/incidents", json={"account": connection.account_id, **extra}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settle(self) -> None:
        """Wait until the emulator has nothing left to deliver or retry now."""
        with anyio.fail_after(10.0):
            while self.h.state.webhooks.stats()["pending"]:
                await anyio.sleep(0.005)

    def emulator_secret(self, pd_id: str) -> str:
        return self.h.state.webhooks.subscriptions[pd_id].secrets[0]


@asynccontextmanager
async def rig(
    tmp_path: os.PathLike[str], *, config: EmulatorConfig | None = None, **overrides: Any
) -> AsyncIterator[Rig]:
    values: dict[str, Any] = {
        "pagerduty_events": EVENTS,
        "webhook_url": HOST_URL,
        "webhook_secret": HOST_SECRET,
        "session_secret": SESSION_SECRET,
    }
    values.update(overrides)
    async with harness(sqlite_url(tmp_path, "events.db"), config=config, **values) as h:
        app = create_app(h.settings, connector=h.connector)
        gate = Gate(app)
        h.state.webhooks.transport = gate
        host = HostReceiver(h.clock)
        keeper = Keeper(
            h.connector,
            clock=h.clock,
            transport=httpx.ASGITransport(app=host.app),
            rng=random.Random(7),
        )
        r = Rig(h, app, gate, host, keeper)
        remove = h.connector.on_pagerduty_event(r.hook)
        try:
            yield r
        finally:
            remove()
            await h.state.webhooks.aclose()
            await keeper.aclose()
            await app.state.pdauth.aclose()
