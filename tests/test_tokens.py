"""TokenManager against the in-process emulator (strict refresh-token reuse) and a real database.

Time is frozen on both sides and moved with ``Harness.advance``; the emulator's counters
(``/_emulator/stats``) show how many token requests really happened.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import anyio
import httpx
import pytest

from pdauth.client.credentials import TokenSource
from pdauth.emulator import EmulatorConfig
from pdauth.errors import (
    ConnectionNotFoundError,
    InvalidClientError,
    NeedsReauthError,
    OAuthError,
)
from pdauth.store import AsyncStore, ConnectionRow
from pdauth.tokens import (
    REFRESH_FRACTION,
    ConnectionTokenSource,
    TokenManager,
    refresh_at,
)
from tests.workers.harness import Harness, harness, make_settings, sqlite_url

P = ParamSpec("P")
T = TypeVar("T")

pytestmark = pytest.mark.anyio

DAY = 86_400.0
TTL = 1000  # the emulator's access-token lifetime in these tests


@pytest.fixture
async def h(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    async with harness(sqlite_url(tmp_path), config=EmulatorConfig(access_token_ttl=TTL)) as h:
        yield h


async def row_of(h: Harness, connection_id: str) -> ConnectionRow:
    row = await h.store.get_connection(connection_id)
    assert row is not None
    return row


async def event_types(h: Harness) -> list[str]:
    return [e.type for e in await h.store.list_events(limit=1000)]


class CountingStore(AsyncStore):
    """An AsyncStore on the same database that counts every database call (to prove the
    cache hit is DB-free): each of its coroutines goes through ``_thread``."""

    def __init__(self, inner: AsyncStore) -> None:
        super().__init__(inner.store)
        self.calls = 0

    async def _thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.calls += 1
        return await super()._thread(fn, *args, **kwargs)


# -- the refresh-ahead rule -------------------------------------------------------------------


def test_refresh_ahead_is_proportional_to_the_lifetime() -> None:
    # Scoped: 1-day tokens are refreshed 2.4 h before they end, not on every call.
    assert refresh_at(DAY, DAY, nominal_lifetime=DAY) == pytest.approx(DAY * REFRESH_FRACTION)
    assert DAY - refresh_at(DAY, DAY, nominal_lifetime=DAY) == pytest.approx(2.4 * 3600)
    # Classic: 30-day tokens are refreshed 3 days before they end.
    month = 30 * DAY
    assert month - refresh_at(month, month, nominal_lifetime=month) == pytest.approx(3 * DAY)
    # Short test lifetimes scale down; a lifetime above the documented one is capped.
    assert refresh_at(10.0, 10, nominal_lifetime=DAY) == pytest.approx(9.0)
    assert refresh_at(100 * DAY, 100 * DAY, nominal_lifetime=DAY) == pytest.approx(
        100 * DAY - 0.1 * DAY
    )
    # Unknown lifetime: the documented one; no expiry at all: never refreshed by time.
    assert refresh_at(DAY, None, nominal_lifetime=DAY) == pytest.approx(0.9 * DAY)
    assert refresh_at(None, None, nominal_lifetime=DAY) == float("inf")


# -- cache and refresh -------------------------------------------------------------------------


async def test_a_cache_hit_touches_neither_the_database_nor_the_network(h: Harness) -> None:
    conn = await h.connect()
    counting = CountingStore(h.store)
    manager = TokenManager(
        h.settings, counting, h.connector.identity, h.settings.key_ring(), clock=h.clock
    )
    first = await manager.access_token(conn.id)
    calls, requests = counting.calls, sum(h.transport.paths.values())
    for _ in range(100):
        assert await manager.access_token(conn.id) == first
    assert counting.calls == calls
    assert sum(h.transport.paths.values()) == requests


async def test_the_token_is_refreshed_after_ninety_percent_of_its_life(h: Harness) -> None:
    conn = await h.connect()
    first = await h.connector.access_token(conn.id)
    h.advance(TTL * 0.85)
    assert await h.connector.access_token(conn.id) == first
    assert h.refreshes() == 0
    h.advance(TTL * 0.1)  # 95 % of the lifetime: refresh ahead of expiry
    second = await h.connector.access_token(conn.id)
    assert second != first
    assert h.token_count("refresh_token") == 1
    row = await row_of(h, conn.id)
    assert row.token_version == 2
    assert row.last_refreshed_at == h.clock.now()
    assert row.lease_owner is None
    assert "connection.refreshed" in await event_types(h)
    # The new token works at PagerDuty.
    response = await h.control.get(
        "/users/me",
        headers={"Authorization": f"Bearer {second}", "Accept": "application/json"},
    )
    assert response.status_code == 200


async def test_concurrent_callers_in_one_process_share_one_refresh(h: Harness) -> None:
    conn = await h.connect()
    h.advance(TTL + 1)
    results: list[str] = []

    async def call() -> None:
        results.append(await h.connector.access_token(conn.id))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(call)
    assert len(set(results)) == 1
    assert h.token_count("refresh_token") == 1


async def test_another_process_sees_the_refresh_and_does_not_refresh_again(h: Harness) -> None:
    conn = await h.connect()
    other = h.another_connector()
    h.advance(TTL + 1)
    token = await h.connector.access_token(conn.id)
    assert await other.access_token(conn.id) == token
    assert h.token_count("refresh_token") == 1


async def test_the_cache_is_revalidated_so_a_disconnect_elsewhere_is_seen(h: Harness) -> None:
    conn = await h.connect()
    await h.connector.access_token(conn.id)
    await h.another_connector().disconnect(conn.id)
    h.advance(31)  # past the cache ttl, far before the token's refresh time
    with pytest.raises(NeedsReauthError, match="disconnected"):
        await h.connector.access_token(conn.id)


async def test_unknown_connection(h: Harness) -> None:
    with pytest.raises(ConnectionNotFoundError):
        await h.connector.access_token("pdc_nope")


# -- after a 401 --------------------------------------------------------------------------------


async def test_a_rejected_token_is_refreshed_once_unless_it_already_changed(h: Harness) -> None:
    conn = await h.connect()
    source: TokenSource = h.connector.tokens.token_source(conn.id)  # the REST client's port
    assert isinstance(source, ConnectionTokenSource)
    assert source.pacing_key == conn.id
    header = await source.authorization()
    assert header.startswith("Bearer pdus+_0")
    renewed = await source.refresh(header)
    assert renewed != header
    assert h.token_count("refresh_token") == 1
    # A second task presenting the old (rejected) token gets the new one, no second refresh.
    assert await source.refresh(header) == renewed
    assert h.token_count("refresh_token") == 1
    assert await source.authorization() == renewed


# -- invalid_grant --------------------------------------------------------------------------


async def test_a_real_revocation_is_marked_once_and_then_fails_fast(h: Harness) -> None:
    conn = await h.connect()
    await h.revoke_all()
    h.advance(TTL + 1)
    with pytest.raises(NeedsReauthError):
        await h.connector.access_token(conn.id)
    other = h.another_connector()
    for i in range(50):
        with pytest.raises(NeedsReauthError):
            await (h.connector if i % 2 else other).access_token(conn.id)
    assert h.refreshes() == 1  # exactly one refresh attempt, then no more token requests
    row = await row_of(h, conn.id)
    assert row.status == "needs_reauth"
    assert row.access_token_ct is None
    assert row.refresh_token_ct is None
    assert row.last_error_code == "invalid_grant"
    assert (await event_types(h)).count("connection.needs_reauth") == 1


async def test_invalid_grant_from_a_lost_race_is_not_a_dead_connection(
    tmp_path: os.PathLike[str],
) -> None:
    """A's refresh outlives its lease; B takes over and rotates the refresh token; A's late
    request is then refused (reuse). A must re-read and use B's token, not kill the row."""
    gate = anyio.Event()
    held = anyio.Event()

    async def hold_first_refresh(request: httpx.Request) -> None:
        is_refresh = request.url.path == "/oauth/token" and b"refresh_token" in request.content
        if is_refresh and not held.is_set():
            held.set()
            await gate.wait()

    config = EmulatorConfig(access_token_ttl=TTL, refresh_reuse="lenient")
    async with harness(
        sqlite_url(tmp_path),
        config=config,
        before=hold_first_refresh,
        http_timeout=20.0,
        lease_seconds=25.0,
    ) as h:
        conn = await h.connect()
        h.advance(TTL + 1)
        b_side = h.another_connector(transport=httpx.ASGITransport(app=h.app))
        a_result: list[str] = []

        async def a_refresh() -> None:
            a_result.append(await h.connector.access_token(conn.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(a_refresh)
            await held.wait()  # A holds the lease, its request is parked before the emulator
            h.advance(26)  # A's lease expires
            b_token = await b_side.access_token(conn.id)
            gate.set()
        assert a_result == [b_token]
        stats = h.stats()
        assert stats["refresh_reuse_detections"] == 1
        row = await row_of(h, conn.id)
        assert row.status == "active"
        assert row.token_version == 2
        assert "connection.needs_reauth" not in await event_types(h)


# -- transient failures ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "timeout"])
async def test_a_transient_failure_is_retried_to_a_usable_connection(
    tmp_path: os.PathLike[str], kind: str
) -> None:
    async with harness(
        sqlite_url(tmp_path),
        config=EmulatorConfig(access_token_ttl=TTL),
        http_timeout=0.3,
        lease_seconds=5.0,
    ) as h:
        conn = await h.connect()
        h.advance(TTL + 1)
        await h.fault(kind, count=1, delay=2.0)
        token = await h.connector.access_token(conn.id)
        assert h.token_count("refresh_token") == 1
        assert h.stats()["faults_served"]["token"][kind] == 1
        row = await row_of(h, conn.id)
        assert row.status == "active"
        assert row.token_version == 2
        response = await h.control.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


async def test_a_processed_then_dropped_refresh_ends_in_a_clean_needs_reauth(h: Harness) -> None:
    conn = await h.connect()
    h.advance(TTL + 1)
    await h.fault("drop")
    with pytest.raises(NeedsReauthError):
        await h.connector.access_token(conn.id)
    row = await row_of(h, conn.id)
    assert row.status == "needs_reauth"  # not a silent loss: the user is asked to reconnect
    assert (await event_types(h)).count("connection.needs_reauth") == 1
    assert h.stats()["refresh_reuse_detections"] == 1


async def test_an_outage_keeps_the_connection_and_serves_the_old_token(h: Harness) -> None:
    conn = await h.connect()
    old = await h.connector.access_token(conn.id)
    h.advance(TTL * 0.95)  # due for refresh, still valid
    await h.fault("500", count=3)  # every retry of this refresh fails
    assert await h.connector.access_token(conn.id) == old
    row = await row_of(h, conn.id)
    assert row.status == "active"
    assert row.last_error_code == "server_error"
    assert row.lease_owner is None
    # Expired and PagerDuty still down: a typed error, and the connection survives.
    h.advance(TTL * 0.1)
    await h.fault("503", count=3)
    with pytest.raises(OAuthError) as caught:
        await h.connector.access_token(conn.id)
    assert caught.value.error == "temporarily_unavailable"
    assert (await row_of(h, conn.id)).status == "active"
    # PagerDuty is back: the next call refreshes with the same refresh token.
    new = await h.connector.access_token(conn.id)
    assert new != old
    assert h.token_count("refresh_token") == 1
    assert (await row_of(h, conn.id)).last_error_code is None


async def test_retries_are_bounded(h: Harness) -> None:
    conn = await h.connect()
    h.advance(TTL + 1)
    await h.fault("503", count=50)
    with pytest.raises(OAuthError):
        await h.connector.access_token(conn.id)
    assert h.stats()["faults_served"]["token"]["503"] == 3
    assert (await row_of(h, conn.id)).status == "active"


async def test_invalid_client_is_raised_and_touches_no_connection(h: Harness) -> None:
    conn = await h.connect()
    before = await row_of(h, conn.id)
    broken = h.another_connector(
        settings=make_settings(database_url=h.settings.database_url, client_secret="rotated-away")
    )
    h.advance(TTL + 1)
    with pytest.raises(InvalidClientError):
        await broken.access_token(conn.id)
    after = await row_of(h, conn.id)
    assert after.status == "active"
    assert after.token_version == before.token_version
    assert after.last_error_code is None
    assert after.lease_owner is None
    assert "connection.needs_reauth" not in await event_types(h)


# -- app tokens -------------------------------------------------------------------------------


async def test_app_tokens_are_reminted_on_expiry_under_single_flight(h: Harness) -> None:
    response = await h.control.post(
        "/_emulator/apps",
        json={
            "client_id": "scoped-app",
            "client_secret": "scoped-secret",
            "name": "scoped",
            "kind": "scoped",
            "redirect_uris": ["http://127.0.0.1:8000/callback"],
            "scopes": ["users.read", "incidents.read"],
            "account": "acme",
        },
    )
    assert response.status_code == 201, response.text
    settings = make_settings(
        database_url=h.settings.database_url,
        client_id="scoped-app",
        client_secret="scoped-secret",
        app_kind="scoped",
        scopes=("users.read",),
    )
    app = h.another_connector(settings=settings)
    conn = await app.connect_app("tenant-1", region="us", subdomain="acme")
    assert conn.kind == "app"
    assert conn.user_id is None
    assert conn.account_id == "as_account-us.acme"
    first = await app.access_token(conn.id)
    h.advance(TTL + 1)
    results: list[str] = []

    async def call() -> None:
        results.append(await app.access_token(conn.id))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(call)
    assert len(set(results)) == 1
    assert results[0] != first
    assert h.token_count("client_credentials") == 2
    response = await h.control.get("/users", headers={"Authorization": f"Bearer {results[0]}"})
    assert response.status_code == 200


# -- idle refresh tokens ----------------------------------------------------------------------


async def test_refresh_due_keeps_idle_refresh_tokens_alive(h: Harness) -> None:
    live = await h.connect("owner-a")
    dead = await h.connect("owner-b", user="admin@eurocorp.example")
    # Revoke only the EU user's grant (their delegation) at PagerDuty.
    eu_user = h.state.directory.find_user("admin@eurocorp.example")
    assert eu_user is not None
    revoked = await h.control.post("/_emulator/revoke", json={"user": eu_user.id})
    assert revoked.json()["revoked"] == 1
    # Nothing is due yet...
    report = await h.connector.refresh_due()
    assert report.examined == 0
    # ...but 200 days idle (Classic refresh tokens die after 210) both are.
    h.advance(200 * DAY)
    report = await h.connector.refresh_due()
    assert (report.examined, report.refreshed, report.needs_reauth) == (2, 1, 1)
    assert (await row_of(h, live.id)).refresh_expires_at == pytest.approx(h.clock.now() + 210 * DAY)
    assert (await row_of(h, dead.id)).status == "needs_reauth"
    assert (await h.connector.refresh_due()).examined == 0


async def parked_refresh(
    tmp_path: os.PathLike[str],
) -> tuple[anyio.Event, anyio.Event, Any]:
    """A harness whose first refresh request is parked (holding the lease) until released."""
    gate = anyio.Event()
    held = anyio.Event()

    async def park(request: httpx.Request) -> None:
        is_refresh = request.url.path == "/oauth/token" and b"refresh_token" in request.content
        if is_refresh and not held.is_set():
            held.set()
            await gate.wait()

    ctx = harness(sqlite_url(tmp_path), config=EmulatorConfig(access_token_ttl=TTL), before=park)
    return gate, held, ctx


async def test_waiters_get_the_lease_holders_token(tmp_path: os.PathLike[str]) -> None:
    gate, held, ctx = await parked_refresh(tmp_path)
    async with ctx as h:
        conn = await h.connect()
        h.advance(TTL + 1)
        other = h.another_connector(transport=httpx.ASGITransport(app=h.app))
        polling = anyio.Event()

        async def waiter_sleep(seconds: float) -> None:
            # The TokenManager's sleep port: it sleeps only to wait for another worker's result.
            polling.set()
            await anyio.sleep(seconds)

        waiter = TokenManager(
            h.settings, h.store, other.identity, h.settings.key_ring(), clock=h.clock,
            sleep=waiter_sleep,
        )  # fmt: skip
        got: dict[str, str] = {}

        async def call(name: str, manager: TokenManager) -> None:
            got[name] = await manager.access_token(conn.id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "holder", h.connector.tokens)
            await held.wait()  # the holder has the lease; its request is parked
            tg.start_soon(call, "waiter", waiter)
            with anyio.fail_after(10):
                await polling.wait()  # the waiter found the lease taken and is polling
            assert "waiter" not in got
            gate.set()
        assert got["holder"] == got["waiter"]
        assert h.token_count("refresh_token") == 1


async def test_a_still_valid_token_is_served_while_another_refreshes(
    tmp_path: os.PathLike[str],
) -> None:
    gate, held, ctx = await parked_refresh(tmp_path)
    async with ctx as h:
        conn = await h.connect()
        old = await h.connector.access_token(conn.id)
        h.advance(TTL * 0.95)  # due, not expired
        other = h.another_connector(transport=httpx.ASGITransport(app=h.app))
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.connector.access_token, conn.id)
            await held.wait()
            with anyio.fail_after(5):  # it must not wait for the parked refresh
                assert await other.access_token(conn.id) == old
            gate.set()
        assert h.token_count("refresh_token") == 1
