"""PagerDuty's events per connection, end to end against the emulator: the keeper subscribes
each active connection (one subscription however often it reconnects or a create answer is
lost), an incident created at the emulator reaches the Python hook and the host's signed
webhook exactly once, a missing scope is said clearly, needs_reauth keeps the subscription, and
a disconnect deletes it (at once, or through a queued job the keeper retries)."""

from __future__ import annotations

import os

import httpx
import pytest

from pdauth.store import Store
from pdauth.subscriptions import UNSUBSCRIBE_EVENT, events_of, receiver_url
from tests.subscriptions_kit import EVENTS, rig

pytestmark = pytest.mark.anyio


async def test_an_incident_reaches_the_hook_and_the_host_webhook_exactly_once(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        assert await r.subscriptions() == []
        report = await r.keeper.run_once()
        assert report.subscriptions_checked == 1
        subs = await r.subscriptions()
        assert len(subs) == 1
        sub = subs[0]
        assert sub["events"] == list(EVENTS)
        assert sub["filter"] == {"type": "account_reference", "id": connection.account_id}
        assert sub["url"].startswith("http://127.0.0.1:8000/pagerduty/webhooks/")
        status = await r.h.connector.ensure_subscription(connection.id)
        assert (status.state, status.pd_subscription_id) == ("active", sub["id"])

        created = await r.incident(connection, title="Disk full")
        notices = await r.wait_notices(1)
        await r.settle()
        notice = notices[0]
        assert notice.connection_id == connection.id
        assert notice.owner == "user-1"
        assert notice.event.event_type == "incident.triggered"
        assert notice.event.data["id"] == created["incident"]["id"]

        await r.keeper.run_once()
        await r.keeper.run_once()
        delivered = r.host.of_type("pagerduty.")
        assert [d.type for d in delivered] == ["pagerduty.incident.triggered"]
        assert delivered[0].verified
        body = delivered[0].body
        assert (body["connection_id"], body["owner"]) == (connection.id, "user-1")
        assert body["data"]["resource"]["title"] == "Disk full"
        assert len(r.notices) == 1
        assert r.h.state.webhooks.stats()["delivered"] == 1


async def test_reconnecting_twice_keeps_one_subscription(tmp_path: os.PathLike[str]) -> None:
    async with rig(tmp_path) as r:
        first = await r.h.connect()
        await r.keeper.run_once()
        for _ in range(2):
            again = await r.h.connect()
            assert again.id == first.id
            await r.keeper.run_once()
            await r.h.connector.ensure_subscription(first.id)
        assert len(await r.subscriptions()) == 1


async def test_a_lost_create_answer_is_made_good_without_a_second_subscription(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        lost = 0

        async def lose_create(request: httpx.Request, response: httpx.Response) -> httpx.Response:
            nonlocal lost
            if (
                request.method == "POST"
                and request.url.path == "/webhook_subscriptions"
                and not lost
            ):
                lost += 1
                return httpx.Response(502)  # PagerDuty made it; we never saw the secret
            return response

        r.h.transport.rewrite = lose_create
        connection = await r.h.connect()
        await r.keeper.run_once()
        status = await events_of(r.h.connector).status(connection.id)
        assert status.state == "failed"
        assert status.last_error
        assert len(await r.subscriptions()) == 1  # the orphan PagerDuty made

        r.h.advance(3600)
        await r.keeper.run_once()
        subs = await r.subscriptions()
        assert len(subs) == 1  # the orphan was replaced, never doubled
        status = await events_of(r.h.connector).status(connection.id)
        assert (status.state, status.pd_subscription_id) == ("active", subs[0]["id"])
        await r.incident(connection)
        await r.wait_notices(1)  # the new secret is the one pdauth holds


async def test_a_grant_without_the_scope_is_marked_and_nothing_is_created(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path, scopes=("read",)) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        status = await r.h.connector.ensure_subscription(connection.id)
        assert status.state == "no_scope"
        assert await r.subscriptions() == []
        assert r.h.transport.paths["/webhook_subscriptions"] == 0


async def test_disconnect_deletes_the_subscription(tmp_path: os.PathLike[str]) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        key_url = (await r.subscriptions())[0]["url"]
        await r.h.connector.disconnect(connection.id)
        assert await r.subscriptions() == []
        status = await events_of(r.h.connector).status(connection.id)
        assert status.state == "deleted"
        # A late delivery to the old URL is refused for good (4xx: PagerDuty drops it).
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=r.app), base_url="http://127.0.0.1:8000"
        ) as client:
            response = await client.post(
                key_url.removeprefix("http://127.0.0.1:8000"), content=b"{}"
            )
        assert 400 <= response.status_code < 500


async def test_a_failed_delete_is_queued_and_retried_by_the_keeper(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        refuse = True

        async def refuse_delete(request: httpx.Request) -> httpx.Response | None:
            if (
                refuse
                and request.method == "DELETE"
                and "/webhook_subscriptions/" in request.url.path
            ):
                return httpx.Response(403, json={"error": {"message": "Forbidden", "code": 2010}})
            return None

        r.h.transport.intercept = refuse_delete
        await r.h.connector.disconnect(connection.id)
        assert len(await r.subscriptions()) == 1
        assert (await events_of(r.h.connector).status(connection.id)).state == "deleting"
        jobs = [e for e in await r.h.store.list_events(limit=100) if e.type == UNSUBSCRIBE_EVENT]
        assert len(jobs) == 1
        assert "token_ct" in jobs[0].data  # sealed, never the token itself

        refuse = False
        report = await r.keeper.run_once()
        assert report.unsubscribed == 1
        assert await r.subscriptions() == []
        assert (await events_of(r.h.connector).status(connection.id)).state == "deleted"
        assert not r.host.of_type(UNSUBSCRIBE_EVENT)  # a job, never sent to the host


async def test_needs_reauth_keeps_the_subscription_and_marks_it(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        sync: Store = r.h.store.store
        assert sync.mark_needs_reauth(
            connection.id, code="invalid_grant", message="revoked", now=r.h.clock.now()
        )
        await r.keeper.run_once()
        assert (await events_of(r.h.connector).status(connection.id)).state == "needs_reauth"
        assert len(await r.subscriptions()) == 1
        await r.incident(connection)
        await r.wait_notices(1)  # still received while the user re-consents
        await r.h.connect()
        await r.keeper.run_once()
        assert (await events_of(r.h.connector).status(connection.id)).state == "active"
        assert len(await r.subscriptions()) == 1


async def test_events_off_by_default_subscribe_nothing(tmp_path: os.PathLike[str]) -> None:
    async with rig(tmp_path, pagerduty_events=()) as r:
        connection = await r.h.connect()
        report = await r.keeper.run_once()
        assert report.subscriptions_checked == 0
        assert (await r.h.connector.ensure_subscription(connection.id)).state == "off"
        assert await r.subscriptions() == []


def test_the_receiver_url_lies_under_the_public_base() -> None:
    from tests.workers.harness import make_settings

    s = make_settings(public_url="https://pd.example.com/auth")
    assert receiver_url(s, "k") == "https://pd.example.com/auth/pagerduty/webhooks/k"
    s = make_settings(redirect_uri="https://app.example.com/pd/callback")
    assert receiver_url(s, "k") == "https://app.example.com/pd/pagerduty/webhooks/k"
