"""The keeper against the in-process emulator and a webhook receiver (a tiny Starlette app).

Covered: webhook retry with backoff (fails twice, delivered once at the third attempt, same
event id and a valid signature each time), de-duplication ids, what is never delivered, giving
up; the revocation outbox retried across a restart and given up on a refusal; a user revoking
pdauth inside PagerDuty (one needs_reauth, one event, one webhook); two keepers sharing one
database (each due refresh done once, each event delivered once); the background loop.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.client import PagerDutyClient
from pdauth.client.pacer import LocalPacer
from pdauth.clock import FrozenClock
from pdauth.connections import Connector
from pdauth.emulator import EmulatorConfig
from pdauth.errors import NeedsReauthError
from pdauth.keeper import RETRY_CAP, WEBHOOK_MAX_AGE, Keeper
from pdauth.metrics import metrics_registry
from pdauth.store import AsyncStore, EventRow, Store
from pdauth.webhooks import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, verify_signature
from tests.workers.harness import BASE, US_ADMIN, Harness, harness, make_settings, sqlite_url

pytestmark = pytest.mark.anyio

SECRET = "whsec-keeper-test-0123456789abcdefghijklmnop"
HOOK_URL = "http://127.0.0.1:9/hooks"
DAY = 86_400.0


@dataclass(frozen=True)
class Delivery:
    event_id: str
    type: str
    body: dict[str, Any]
    raw: bytes
    verified: bool


class Receiver:
    """A host app's webhook endpoint: records every delivery; the first ``fail_first``
    answer 500 (after recording: the host may have processed it and lost the answer)."""

    def __init__(self, clock: FrozenClock, *, fail_first: int = 0) -> None:
        self.clock = clock
        self.fail_first = fail_first
        self.deliveries: list[Delivery] = []
        self.delivered = anyio.Event()  # set by the first delivery
        self.app = Starlette(routes=[Route("/hooks", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        self.deliveries.append(
            Delivery(
                event_id=request.headers[EVENT_ID_HEADER],
                type=request.headers[EVENT_TYPE_HEADER],
                body=json.loads(raw),
                raw=raw,
                verified=verify_signature(
                    SECRET,
                    request.headers.get(SIGNATURE_HEADER),
                    raw,
                    self.clock.now(),
                    event_id=request.headers[EVENT_ID_HEADER],
                )
                is not None,
            )
        )
        self.delivered.set()
        if len(self.deliveries) <= self.fail_first:
            return Response(status_code=500)
        return Response(status_code=204)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.type == event_type]


@pytest.fixture
async def hw(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    """A harness whose settings name a webhook."""
    url = sqlite_url(tmp_path, "k.db")
    async with harness(url, webhook_url=HOOK_URL, webhook_secret=SECRET) as h:
        yield h


def keeper_for(h: Harness, receiver: Receiver | None = None, **kwargs: Any) -> Keeper:
    return Keeper(
        kwargs.pop("connector", h.connector),
        clock=h.clock,
        transport=receiver.transport() if receiver is not None else None,
        rng=random.Random(7),
        **kwargs,
    )


async def events_of(h: Harness, event_type: str) -> list[EventRow]:
    return [e for e in await h.store.list_events(limit=1000) if e.type == event_type]


# -- webhooks -------------------------------------------------------------------------------


async def test_a_failing_receiver_gets_the_event_again_until_it_accepts(hw: Harness) -> None:
    receiver = Receiver(hw.clock, fail_first=2)
    registry = metrics_registry()

    def outbox(outcome: str) -> float:
        labels = {"kind": "webhook", "outcome": outcome}
        return registry.get_sample_value("pdauth_outbox_deliveries_total", labels) or 0.0

    retried, delivered = outbox("retry"), outbox("delivered")
    async with keeper_for(hw, receiver) as keeper:
        conn = await hw.connect("tenant-1")

        first = await keeper.run_once()
        assert first.webhooks_retrying == 1
        assert len(receiver.deliveries) == 1
        assert (await keeper.run_once()).webhooks_retrying == 0  # not due yet: backoff
        assert len(receiver.deliveries) == 1

        hw.advance(10)  # first backoff: 5-10 s
        assert (await keeper.run_once()).webhooks_retrying == 1
        hw.advance(20)  # second backoff: 10-20 s
        third = await keeper.run_once()
        assert third.webhooks_delivered == 1
        hw.advance(RETRY_CAP)
        assert (await keeper.run_once()).webhooks_delivered == 0  # delivered once, for good

    assert len(receiver.deliveries) == 3
    assert (outbox("retry"), outbox("delivered")) == (retried + 2, delivered + 1)
    assert all(d.verified for d in receiver.deliveries)
    assert {d.event_id for d in receiver.deliveries} == {receiver.deliveries[0].event_id}
    [created] = await events_of(hw, "connection.created")
    assert receiver.deliveries[0].event_id == str(created.id)
    assert created.delivered_at == hw.clock.now() - RETRY_CAP
    assert created.attempts == 2
    body = receiver.deliveries[-1].body
    assert body["id"] == created.id
    assert body["type"] == "connection.created"
    assert body["connection_id"] == conn.id
    assert body["owner"] == "tenant-1"
    assert body["data"]["account_id"] == conn.account_id


async def test_each_event_has_its_own_id_and_a_redelivery_repeats_it(hw: Harness) -> None:
    # The receiver processes the first delivery but its answer is lost (500): the keeper
    # sends it again with the same id, which is how the host app recognises the repeat.
    receiver = Receiver(hw.clock, fail_first=1)
    async with keeper_for(hw, receiver) as keeper:
        await hw.connect("tenant-1")
        await hw.connect("tenant-2")
        await keeper.run_once()
        hw.advance(RETRY_CAP)
        await keeper.run_once()
    ids = [d.event_id for d in receiver.deliveries]
    assert len(ids) == 3
    assert len(set(ids)) == 2  # two events, one of them delivered twice
    processed = {d.event_id: d.body for d in receiver.deliveries}  # de-duplicated by id
    assert sorted(b["owner"] for b in processed.values()) == ["tenant-1", "tenant-2"]


async def test_a_receiver_down_for_days_is_given_up(hw: Harness) -> None:
    receiver = Receiver(hw.clock, fail_first=10_000)
    async with keeper_for(hw, receiver) as keeper:
        await hw.connect("tenant-1")
        assert (await keeper.run_once()).webhooks_retrying == 1
        hw.advance(WEBHOOK_MAX_AGE)
        assert (await keeper.run_once()).webhooks_abandoned == 1
        hw.advance(WEBHOOK_MAX_AGE)
        await keeper.run_once()
    assert len(receiver.deliveries) == 2
    [created] = await events_of(hw, "connection.created")
    assert created.delivered_at is None
    assert created.next_attempt_at is None
    assert created.last_error == "gave up: the receiver answered HTTP 500"


async def test_without_a_webhook_events_are_closed_as_skipped(tmp_path: os.PathLike[str]) -> None:
    async with harness(sqlite_url(tmp_path, "k.db")) as h, keeper_for(h) as keeper:
        await h.connect("tenant-1")
        report = await keeper.run_once()
        assert report.skipped == 1
        assert (await keeper.run_once()).skipped == 0
        [created] = await events_of(h, "connection.created")
        assert created.next_attempt_at is None
        assert created.last_error == "not delivered: no webhook is configured"


async def test_events_not_meant_for_delivery_are_never_sent(hw: Harness) -> None:
    receiver = Receiver(hw.clock)
    async with keeper_for(hw, receiver) as keeper:
        conn = await hw.connect("tenant-1")
        await hw.connector.tokens.force_refresh(conn.id)  # connection.refreshed: outbox=False
        start = await hw.connector.begin("tenant-1")
        denied = await hw.authorize(start, decision="deny")
        with pytest.raises(Exception, match="access_denied"):
            await hw.connector.complete(denied, start.binding)  # connect.failed: outbox=False
        await keeper.run_once()
    assert [d.type for d in receiver.deliveries] == ["connection.created"]
    assert await events_of(hw, "connection.refreshed")
    assert await events_of(hw, "connect.failed")


# -- a user revokes pdauth inside PagerDuty ------------------------------------------------


async def test_access_revoked_in_pagerduty_is_noticed_once_with_one_webhook(hw: Harness) -> None:
    receiver = Receiver(hw.clock)
    other = hw.another_connector()  # a second process using the same connection
    async with keeper_for(hw, receiver) as keeper:
        conn = await hw.connect("tenant-1")
        token = await hw.connector.access_token(conn.id)
        assert await other.access_token(conn.id) == token
        await keeper.run_once()
        assert [d.type for d in receiver.deliveries] == ["connection.created"]

        # The user removes the app from their authorized apps at PagerDuty.
        revoked = await hw.control.post("/_emulator/revoke", json={"user": US_ADMIN})
        assert revoked.json() == {"revoked": 1}

        async def use(connector: Connector) -> None:
            client = PagerDutyClient(
                BASE,
                connector.tokens.token_source(conn.id),
                transport=hw.transport,
                clock=hw.clock,
                pacer=LocalPacer(clock=hw.clock),
            )
            async with client:
                with pytest.raises(NeedsReauthError):
                    await client.get("/users/me")  # 401 → refresh → invalid_grant

        async with anyio.create_task_group() as tg:  # both processes notice at once
            tg.start_soon(use, hw.connector)
            tg.start_soon(use, other)
        await use(hw.connector)  # and later uses only see the dead connection

        row = await hw.store.get_connection(conn.id)
        assert row is not None
        assert row.status == "needs_reauth"
        assert row.access_token_ct is None
        assert len(await events_of(hw, "connection.needs_reauth")) == 1

        await keeper.run_once()
        await keeper.run_once()
        hw.advance(RETRY_CAP)
        await keeper.run_once()

    [notice] = receiver.of_type("connection.needs_reauth")
    assert notice.verified
    assert notice.body["connection_id"] == conn.id
    assert notice.body["owner"] == "tenant-1"
    assert notice.body["data"]["reason"] == "invalid_grant"
    assert len(receiver.deliveries) == 2
    for delivery in receiver.deliveries:
        assert token.encode() not in delivery.raw
        assert b"_ct" not in delivery.raw


# -- the revocation outbox ------------------------------------------------------------------


async def test_a_queued_revocation_is_retried_across_a_restart(db_url: str) -> None:
    async with harness(
        db_url,
        config=EmulatorConfig(revocation_endpoint=True),
        revoke_url=BASE + "/oauth/revoke",
    ) as h:
        refused = 0

        async def unavailable_three_times(request: httpx.Request) -> httpx.Response | None:
            nonlocal refused
            if request.url.path == "/oauth/revoke" and refused < 3:
                refused += 1
                return httpx.Response(503)
            return None

        h.transport.intercept = unavailable_three_times
        conn = await h.connect("tenant-1")
        gone = await h.connector.disconnect(conn.id)  # the synchronous try: 503
        assert gone.status == "revoked"
        assert h.stats()["tokens_revoked"]["grant"] == 0
        [pending] = await events_of(h, "revocation.pending")

        async with keeper_for(h) as keeper:
            assert (await keeper.run_once()).revocations_retrying == 1  # 503
            assert (await keeper.run_once()).revocations_retrying == 0  # backoff: not due
            h.advance(RETRY_CAP)
            assert (await keeper.run_once()).revocations_retrying == 1  # 503
        assert refused == 3
        assert h.stats()["tokens_revoked"]["grant"] == 0

        # A restart: a new Store, Connector and Keeper on the same database.
        h.advance(RETRY_CAP)
        store = Store(db_url)
        connector = Connector(
            h.settings, clock=h.clock, transport=h.transport, store=AsyncStore(store)
        )
        try:
            async with keeper_for(h, connector=connector) as keeper:
                report = await keeper.run_once()
                assert report.revoked == 1
                h.advance(RETRY_CAP)
                assert (await keeper.run_once()).revoked == 0
        finally:
            await connector.aclose()
            store.dispose()

        assert h.stats()["tokens_revoked"]["grant"] == 1
        assert h.transport.paths["/oauth/revoke"] == 4
        [done] = await events_of(h, "revocation.pending")
        assert done.id == pending.id
        assert done.delivered_at is not None
        assert done.attempts == 2
        assert all(g.revoked for g in h.state.grants.values())


async def test_a_refused_revocation_is_given_up_and_recorded(tmp_path: os.PathLike[str]) -> None:
    async with harness(
        sqlite_url(tmp_path, "k.db"),
        config=EmulatorConfig(revocation_endpoint=True),
        revoke_url=BASE + "/oauth/revoke",
    ) as h:

        async def refuse(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/oauth/revoke":
                return httpx.Response(400, json={"error": "invalid_request"})
            return None

        h.transport.intercept = refuse
        conn = await h.connect("tenant-1")
        await h.connector.disconnect(conn.id)
        async with keeper_for(h) as keeper:
            assert (await keeper.run_once()).revocations_abandoned == 1
            h.advance(RETRY_CAP)
            assert (await keeper.run_once()).revocations_abandoned == 0
        assert h.transport.paths["/oauth/revoke"] == 2  # disconnect's try, the keeper's one
        [pending] = await events_of(h, "revocation.pending")
        assert pending.delivered_at is None
        assert pending.next_attempt_at is None
        assert pending.last_error == "refused: invalid_request"


async def test_a_revocation_waits_while_no_endpoint_is_configured(
    tmp_path: os.PathLike[str],
) -> None:
    async with harness(
        sqlite_url(tmp_path, "k.db"),
        config=EmulatorConfig(revocation_endpoint=True),
        revoke_url=BASE + "/oauth/revoke",
    ) as h:

        async def unavailable(request: httpx.Request) -> httpx.Response | None:
            return httpx.Response(503) if request.url.path == "/oauth/revoke" else None

        h.transport.intercept = unavailable
        conn = await h.connect("tenant-1")
        await h.connector.disconnect(conn.id)
        without = h.settings.model_copy(update={"revoke_url": None})
        async with keeper_for(h, settings=without) as keeper:
            assert (await keeper.run_once()).revocations_retrying == 1
        assert h.transport.paths["/oauth/revoke"] == 1  # only disconnect's own try
        [pending] = await events_of(h, "revocation.pending")
        assert pending.next_attempt_at == h.clock.now() + RETRY_CAP
        assert pending.last_error == "no revocation endpoint is configured"


# -- several keepers ------------------------------------------------------------------------


async def test_two_keepers_on_one_database_refresh_and_deliver_each_thing_once(
    db_url: str,
) -> None:
    owners = [f"tenant-{i}" for i in range(4)]
    async with harness(db_url, webhook_url=HOOK_URL, webhook_secret=SECRET) as h:
        receiver = Receiver(h.clock)
        for owner in owners:
            await h.connect(owner)
        h.advance(170 * DAY)  # every refresh token now nears its idle expiry (210 days)

        store = Store(db_url)  # the second instance: its own pool, connector and keeper
        connector = Connector(
            h.settings, clock=h.clock, transport=h.transport, store=AsyncStore(store)
        )
        try:
            async with (
                keeper_for(h, receiver) as one,
                keeper_for(h, receiver, connector=connector) as two,
            ):
                reports = []

                async def run(keeper: Keeper) -> None:
                    reports.append(await keeper.run_once())

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, one)
                    tg.start_soon(run, two)
                again = await one.run_once()  # nothing is due any more
                assert again.refresh is not None
                assert again.refresh.examined == 0
        finally:
            await connector.aclose()
            store.dispose()

        assert h.token_count("refresh_token") == len(owners)  # each due refresh done once
        assert h.refreshes() == len(owners)
        assert h.stats()["refresh_reuse_detections"] == 0
        rows = await h.store.list_connections(limit=100)
        assert [r.status for r in rows] == ["active"] * len(owners)
        assert [r.token_version for r in rows] == [2] * len(owners)
    assert all(r.problems == () for r in reports)
    assert sum(r.refresh.refreshed for r in reports if r.refresh is not None) >= len(owners)
    delivered = Counter(d.event_id for d in receiver.deliveries)
    assert len(delivered) == len(owners)  # one connection.created per owner
    assert set(delivered.values()) == {1}  # each delivered by exactly one keeper


# -- the loop -------------------------------------------------------------------------------


async def test_running_in_the_background_delivers_and_stops(
    hw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(hw.clock)
    await hw.connect("tenant-1")
    async with keeper_for(hw, receiver) as keeper:
        with caplog.at_level(logging.INFO, logger="pdauth.keeper"):
            async with keeper.running(interval=0.01):
                with anyio.fail_after(10):
                    await receiver.delivered.wait()
                assert "keeper loop stopped" not in caplog.messages
            # The loop itself says it has ended, before running() returns: nothing can
            # deliver any more, so no waiting is needed to see that nothing does.
            assert "keeper loop stopped" in caplog.messages
        stopped_at = len(receiver.deliveries)
        await hw.connect("tenant-2")
        assert len(receiver.deliveries) == stopped_at  # the loop is gone
        await keeper.run_once()  # negative control: the new event was there to deliver
        assert len(receiver.deliveries) == stopped_at + 1


async def test_run_forever_returns_when_stopped_and_refuses_a_bad_interval(hw: Harness) -> None:
    async with keeper_for(hw) as keeper:
        stop = anyio.Event()
        stop.set()
        with anyio.fail_after(5):
            await keeper.run_forever(0.01, stop)
        with pytest.raises(ValueError, match="positive"):
            await keeper.run_forever(0, stop)


async def test_a_configuration_error_is_reported_and_the_outbox_still_drains(
    hw: Harness,
) -> None:
    receiver = Receiver(hw.clock)
    await hw.connect("tenant-1")
    hw.advance(170 * DAY)
    wrong = make_settings(
        database_url=hw.settings.database_url,
        client_secret="not-the-secret",
        webhook_url=HOOK_URL,
        webhook_secret=SECRET,
    )
    connector = hw.another_connector(settings=wrong)
    async with keeper_for(hw, receiver, connector=connector) as keeper:
        report = await keeper.run_once()
    assert report.refresh is None
    assert report.problems == ("refresh: invalid_client",)
    assert report.webhooks_delivered == 1
    [row] = await hw.store.list_connections(limit=10)
    assert row.status == "active"  # a configuration error never kills a connection


def test_bad_keeper_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Keeper(object(), make_settings(), batch_size=0)  # type: ignore[arg-type]
