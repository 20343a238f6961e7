"""A Connector wired to an in-process emulator, with both clocks frozen and moved together.

pdauth reads a :class:`FrozenClock`; the emulator its own :class:`EmulatorClock` frozen at the
same start. :meth:`Harness.advance` moves both, so expiry is exercised without sleeping. All
outbound HTTP goes through ``httpx.ASGITransport`` (optionally wrapped, e.g. to count or delay
requests); nothing patches httpx.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette

from pdauth.clock import FrozenClock
from pdauth.config import Settings
from pdauth.connections import AuthorizationStart, Connection, Connector
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, create_app
from pdauth.emulator.state import EmulatorState
from pdauth.store import AsyncStore, Store
from tests.emulator_kit import EMULATOR_START as START, emulator_signing_key, make_emulator_state

BASE = "http://127.0.0.1:9"
DEMO_ID = "pdauth-demo"
DEMO_SECRET = "pdauth-demo-secret"
DEMO_REDIRECT = "http://127.0.0.1:8000/callback"
US_ADMIN = "admin@acme.example"
EU_ADMIN = "admin@eurocorp.example"
TEST_KEYS = format_key(generate_key("test1"))


# Other test modules import these from here; the emulator's start and key are tests/emulator_kit's.
signing_key = emulator_signing_key


def make_settings(base: str = BASE, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "client_id": DEMO_ID,
        "client_secret": DEMO_SECRET,
        "redirect_uri": DEMO_REDIRECT,
        "scopes": ("read", "write"),
        "encryption_keys": TEST_KEYS,
        "identity_url": base,
        "api_url": base,
        "api_url_eu": base + "/eu",
        "http_timeout": 2.0,
        "lease_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


Intercept = Callable[[httpx.Request], Awaitable[httpx.Response | None]]
Rewrite = Callable[[httpx.Request, httpx.Response], Awaitable[httpx.Response]]


class Wrapped(httpx.AsyncBaseTransport):
    """A transport around another: counts requests by path; test hooks may delay a request
    (``before``), answer it themselves (``intercept``), or rewrite the answer (``rewrite``),
    as a network between pdauth and PagerDuty could."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        before: Callable[[httpx.Request], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.before = before
        self.intercept: Intercept | None = None
        self.rewrite: Rewrite | None = None
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        if self.before is not None:
            await self.before(request)
        if self.intercept is not None:
            answer = await self.intercept(request)
            if answer is not None:
                return answer
        response = await self.inner.handle_async_request(request)
        if self.rewrite is not None:
            await response.aread()
            response = await self.rewrite(request, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Harness:
    state: EmulatorState
    app: Starlette
    clock: FrozenClock
    settings: Settings
    connector: Connector
    control: httpx.AsyncClient
    transport: Wrapped
    store: AsyncStore
    extra: list[Connector] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.state.clock.advance(seconds)

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    def token_count(self, grant_type: str, outcome: str = "ok") -> int:
        requests: dict[str, dict[str, int]] = self.stats()["token_requests"]
        return requests.get(grant_type, {}).get(outcome, 0)

    def refreshes(self) -> int:
        requests: dict[str, dict[str, int]] = self.stats()["token_requests"]
        return sum(requests.get("refresh_token", {}).values())

    async def authorize(
        self,
        start: AuthorizationStart,
        *,
        user: str = US_ADMIN,
        decision: str = "approve",
        **override: str,
    ) -> str:
        """What the browser does at PagerDuty; returns the callback's query string."""
        params = dict(parse_qsl(urlsplit(start.url).query))
        params.update(override)
        body = {**params, "user": user, "decision": decision}
        response = await self.control.post("/_emulator/authorize", json=body)
        assert response.status_code == 200, response.text
        redirect: str = response.json()["redirect"]
        return urlsplit(redirect).query

    async def connect(self, owner: str = "user-1", *, user: str = US_ADMIN) -> Connection:
        start = await self.connector.begin(owner)
        query = await self.authorize(start, user=user)
        return await self.connector.complete(query, start.binding)

    async def fault(self, kind: str, count: int = 1, delay: float = 0.0) -> None:
        response = await self.control.post(
            "/_emulator/faults",
            json={"target": "token", "kind": kind, "count": count, "delay": delay},
        )
        assert response.status_code == 200, response.text

    async def revoke_all(self) -> None:
        response = await self.control.post("/_emulator/revoke", json={"client_id": DEMO_ID})
        assert response.status_code == 200, response.text

    def another_connector(self, **kwargs: Any) -> Connector:
        """A second Connector on the same database and emulator (another 'process')."""
        kwargs.setdefault("settings", self.settings)
        settings = kwargs.pop("settings")
        connector = Connector(
            settings,
            clock=kwargs.pop("clock", self.clock),
            transport=kwargs.pop("transport", self.transport),
            store=self.store,
            **kwargs,
        )
        self.extra.append(connector)
        return connector


def sqlite_url(tmp_path: os.PathLike[str], name: str = "t.db") -> str:
    """A new SQLite database file in the test's ``tmp_path``."""
    return "sqlite:///" + os.path.join(os.fspath(tmp_path), name)


def revocation_harness(db_url: str) -> AbstractAsyncContextManager[Harness]:
    """A harness whose emulator serves RFC 7009 revocation (NOT a PagerDuty endpoint) and whose
    Connector is configured to use it, so revocations can be counted."""
    return harness(
        db_url, config=EmulatorConfig(revocation_endpoint=True), revoke_url=BASE + "/oauth/revoke"
    )


@asynccontextmanager
async def harness(
    db_url: str,
    *,
    config: EmulatorConfig | None = None,
    before: Callable[[httpx.Request], Awaitable[None]] | None = None,
    connector_kwargs: dict[str, Any] | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[Harness]:
    state = make_emulator_state(config)  # frozen at START, like the FrozenClock below
    app = create_app(state=state)
    clock = FrozenClock(current=START)
    settings = make_settings(database_url=db_url, **settings_overrides)
    sync_store = Store(db_url)
    sync_store.upgrade()
    store = AsyncStore(sync_store)
    transport = Wrapped(httpx.ASGITransport(app=app), before)
    connector = Connector(
        settings, clock=clock, transport=transport, store=store, **(connector_kwargs or {})
    )
    control = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    h = Harness(state, app, clock, settings, connector, control, transport, store)
    try:
        yield h
    finally:
        for extra in h.extra:
            await extra.aclose()
        await connector.aclose()
        await control.aclose()
        await transport.aclose()
        sync_store.dispose()
