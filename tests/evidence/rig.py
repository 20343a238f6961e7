"""An in-process PagerDuty for the fault and load tests, with a tap on the token endpoint.

The emulator app runs on an :class:`EmulatorClock` frozen at ``START``; pdauth runs on a
:class:`StepClock` whose wall time is frozen at the same instant and moved together with the
emulator's (:meth:`Rig.advance`), while its monotonic time is real — so token expiry is driven
by the test, but the TokenManager's lease and retry bounds are measured in real seconds as in
production. Every outbound request goes through :class:`Tap`, an ``httpx`` transport around
``httpx.ASGITransport`` (nothing patches httpx): for the token endpoint it records which call
made the request (the :data:`CURRENT_CALL` context variable names it) and how PagerDuty
answered, can queue one of the emulator's faults before the request (through the control API,
``POST /_emulator/faults``, with a seeded probability), and can run a hook right after
PagerDuty answered — the moment a test stops the database or kills a worker.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from starlette.applications import Starlette

from pdauth.config import Settings
from pdauth.connections import Connection, Connector
from pdauth.emulator import EmulatorConfig, create_app
from pdauth.emulator.state import EmulatorState
from pdauth.store import AsyncStore, ConnectionRow, Store
from tests.emulator_kit import make_emulator_state
from tests.workers.harness import (
    DEMO_ID,
    DEMO_REDIRECT,
    DEMO_SECRET,
    TEST_KEYS,
    US_ADMIN,
)

__all__ = [
    "BASE",
    "CURRENT_CALL",
    "START",
    "CallRecord",
    "Exchange",
    "Rig",
    "StepClock",
    "Tap",
    "WatchedStore",
    "rig",
    "rig_settings",
]

START = 1_800_000_000.0
BASE = "http://127.0.0.1:9"  # any loopback URL: ASGITransport ignores the host
TOKEN_PATH = "/oauth/token"


@dataclass
class StepClock:
    """pdauth's clock in these tests: wall time moved by the test, monotonic time real."""

    current: float = START

    def now(self) -> float:
        return self.current

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.current += seconds


@dataclass
class Exchange:
    """One token-endpoint request as the network saw it.

    ``outcome``: the HTTP status PagerDuty answered, or ``"timeout"`` when pdauth gave up
    waiting (its own deadline cancelled the request), or the exception's class name.
    """

    grant_type: str
    call: CallRecord | None
    injected: str | None = None
    outcome: int | str | None = None
    answered_at: float | None = None  # monotonic, when the answer reached pdauth's side

    @property
    def ok(self) -> bool:
        return self.outcome == 200


@dataclass
class CallRecord:
    """One application-level call (``access_token()`` or an API call) and what it cost."""

    label: str
    round: int = 0
    exchanges: list[Exchange] = field(default_factory=list)
    outcome: str | None = None
    error: str | None = None
    token: str | None = field(default=None, repr=False)
    stored_at: float | None = None  # monotonic, when its refreshed pair was committed

    def window(self) -> float | None:
        """Seconds from PagerDuty's answer to the committed write of the new pair: the only
        time in which losing this process also loses the rotated refresh token."""
        answered = [x.answered_at for x in self.exchanges if x.ok and x.answered_at is not None]
        if self.stored_at is None or not answered:
            return None
        return self.stored_at - answered[-1]


#: The call the current task is making; the Tap charges token requests to it.
CURRENT_CALL: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "pdauth_evidence_call", default=None
)

AfterAnswer = Callable[[Exchange, httpx.Response], Awaitable[None]]


class Tap(httpx.AsyncBaseTransport):
    """Forwards to the emulator; watches (and optionally disturbs) the token endpoint."""

    def __init__(self, app: Starlette, control: httpx.AsyncClient, *, seed: int = 7) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.control = control
        self.rng = random.Random(seed)
        self.fault_rate = 0.0
        self.fault_kinds: Sequence[tuple[str, float]] = ()  # (kind, delay), drawn uniformly
        self.token_delay = 0.0
        self.after_answer: AfterAnswer | None = None
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != TOKEN_PATH:
            return await self.inner.handle_async_request(request)
        form = dict(parse_qsl(request.content.decode("ascii", "replace")))
        call = CURRENT_CALL.get()
        exchange = Exchange(grant_type=form.get("grant_type", ""), call=call)
        self.exchanges.append(exchange)
        if call is not None:
            call.exchanges.append(exchange)
        if self.fault_kinds and self.rng.random() < self.fault_rate:
            kind, delay = self.fault_kinds[self.rng.randrange(len(self.fault_kinds))]
            exchange.injected = kind
            # The emulator's fault queue serves the NEXT token request, which under
            # concurrency may be another one; outcomes are read from the answers, not assumed.
            answer = await self.control.post(
                "/_emulator/faults",
                json={"target": "token", "kind": kind, "count": 1, "delay": delay},
            )
            assert answer.status_code == 200, answer.text
        if self.token_delay:
            await anyio.sleep(self.token_delay)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            exchange.outcome = "timeout" if cancelled else type(exc).__name__
            raise
        exchange.outcome = response.status_code
        exchange.answered_at = time.monotonic()
        if self.after_answer is not None:
            await response.aread()
            await self.after_answer(exchange, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class WatchedStore(AsyncStore):
    """The real store; stamps the current call when a refreshed pair has been committed."""

    async def store_tokens(self, connection_id: str, **kwargs: Any) -> ConnectionRow | None:
        stored = await super().store_tokens(connection_id, **kwargs)
        call = CURRENT_CALL.get()
        if stored is not None and call is not None:
            call.stored_at = time.monotonic()
        return stored


def rig_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "client_id": DEMO_ID,
        "client_secret": DEMO_SECRET,
        "redirect_uri": DEMO_REDIRECT,
        "scopes": ("read", "write"),
        "encryption_keys": TEST_KEYS,
        "identity_url": BASE,
        "api_url": BASE,
        "api_url_eu": BASE + "/eu",
        "http_timeout": 2.0,
        "lease_seconds": 5.0,
        "database_url": database_url,
    }
    values.update(overrides)
    # from_env with an empty mapping: nothing leaks in from this process's PDAUTH_* variables.
    return Settings.from_env({}, **values)


@dataclass
class Rig:
    state: EmulatorState
    app: Starlette
    clock: StepClock
    settings: Settings
    tap: Tap
    control: httpx.AsyncClient
    store: AsyncStore
    _stores: list[Store] = field(default_factory=list)
    _connectors: list[Connector] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        """Move pdauth's and the emulator's wall clocks together."""
        self.clock.advance(seconds)
        self.state.clock.advance(seconds)

    def new_store(self, url: str | None = None) -> WatchedStore:
        """Another Store on the database (its own engine and pool, as another process has)."""
        store = Store(url or self.settings.database_url)
        self._stores.append(store)
        return WatchedStore(store)

    def connector(self, store: AsyncStore | None = None, **kwargs: Any) -> Connector:
        connector = Connector(
            self.settings,
            clock=self.clock,
            transport=self.tap,
            store=store or self.store,
            **kwargs,
        )
        self._connectors.append(connector)
        return connector

    async def consent(self, authorize_url: str, user: str = US_ADMIN) -> str:
        """What the browser does at PagerDuty; returns the callback's query string."""
        params = dict(parse_qsl(urlsplit(authorize_url).query))
        answer = await self.control.post(
            "/_emulator/authorize", json={**params, "user": user, "decision": "approve"}
        )
        assert answer.status_code == 200, answer.text
        redirect: str = answer.json()["redirect"]
        return urlsplit(redirect).query

    async def connect(self, connector: Connector, owner: str) -> Connection:
        start = await connector.begin(owner)
        return await connector.complete(await self.consent(start.url), start.binding)

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    async def users_me(self, token: str) -> int:
        """The status PagerDuty's ``GET /users/me`` answers for ``token``."""
        response = await self.control.get(
            "/users/me",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.pagerduty+json;version=2",
            },
        )
        return response.status_code


@asynccontextmanager
async def rig(
    database_url: str, config: EmulatorConfig | None = None, **settings_overrides: Any
) -> AsyncIterator[Rig]:
    """A migrated database, an in-process emulator and pdauth wired to them."""
    state = make_emulator_state(config or EmulatorConfig(rate_limit=1_000_000), start=START)
    app = create_app(state=state)
    sync_store = Store(database_url)
    sync_store.upgrade()
    control = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    tap = Tap(app, control)
    r = Rig(
        state=state,
        app=app,
        clock=StepClock(),
        settings=rig_settings(database_url, **settings_overrides),
        tap=tap,
        control=control,
        store=WatchedStore(sync_store),
        _stores=[sync_store],
    )
    try:
        yield r
    finally:
        with anyio.CancelScope(shield=True):
            for connector in r._connectors:
                await connector.aclose()
            await control.aclose()
            await tap.aclose()
        for store in r._stores:
            store.dispose()
