"""PagerDuty's events per connection, end to end against the emulator: the keeper subscribes
each active connection (one subscription however often it reconnects or a create answer is
lost), an incident created at the emulator reaches the Python hook and the host's signed
webhook exactly once, a missing scope is said clearly, needs_reauth keeps the subscription, and
a disconnect deletes it (at once, or through a queued job the keeper retries)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import anyio
import httpx
import pagerduty
import pytest
import trustme

from pdauth.emulator import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.store import Store
from pdauth.subscriptions import UNSUBSCRIBE_EVENT, SubscriptionStatus, events_of, receiver_url
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


async def test_one_failing_connection_does_not_hold_up_the_rest_of_a_pass(
    tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture
) -> None:
    from pdauth.errors import StoreError
    from pdauth.subscriptions import events_of

    async with rig(tmp_path) as r:
        first = await r.h.connect("owner-a")
        second = await r.h.connect("owner-b")
        events = events_of(r.h.connector)
        ensure = events.ensure
        failing = min(first.id, second.id)  # passes go in id order: the first one fails

        async def flaky(connection_id: str) -> SubscriptionStatus:
            if connection_id == failing:
                raise StoreError("database error during get_connection: locked")
            return await ensure(connection_id)

        events.ensure = flaky  # type: ignore[method-assign]
        assert await events.reconcile() == 2
        other = max(first.id, second.id)
        assert (await events.status(other)).state == "active"
        assert (await events.status(failing)).state == "missing"
        assert "subscription not checked (StoreError)" in caplog.text


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
    # A callback path not ending in /callback: the service lives at the origin, and so does
    # the receiver (it used to be put under the callback's parent folder, which nobody served).
    s = make_settings(redirect_uri="https://app.example.com/oauth/pd")
    assert receiver_url(s, "k") == "https://app.example.com/pagerduty/webhooks/k"


@pytest.mark.parametrize(
    ("redirect_uri", "public_url"),
    [
        ("https://app.example.com/callback", None),
        ("https://app.example.com/pd/callback", None),
        ("https://app.example.com/oauth/pd", None),
        ("https://app.example.com/oauth/pd", "https://app.example.com/"),
        ("https://app.example.com/x/oauth/pd", "https://app.example.com/x"),
    ],
)
def test_the_receiver_lies_where_the_service_is_served(
    redirect_uri: str, public_url: str | None
) -> None:
    from pdauth.service.core import ServiceOptions
    from tests.workers.harness import make_settings

    s = make_settings(redirect_uri=redirect_uri, public_url=public_url)
    served = ServiceOptions.from_settings(s).public_url
    assert receiver_url(s, "k") == served + "/pagerduty/webhooks/k"


async def test_live_status_sees_pagerduty_disable_it_and_a_deleted_one_is_made_again(
    tmp_path: os.PathLike[str],
) -> None:
    config = EmulatorConfig(webhook_disable_after=2)
    async with rig(tmp_path, config=config) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        events = events_of(r.h.connector)
        assert (await events.status(connection.id, live=True)).state == "active"
        # Two deliveries refused (bad signatures: pdauth answers 401) -> PagerDuty disables it.
        await r.h.control.post("/_emulator/webhooks/bad_signatures", json={"count": 2})
        for _ in range(2):
            await r.incident(connection)
        await r.gate.wait_statuses(2)
        await r.settle()
        assert r.gate.statuses == [401, 401]
        assert (await events.status(connection.id, live=True)).state == "disabled"
        assert r.notices == []

        # Deleted in PagerDuty behind pdauth's back: live status says so; the keeper remakes it.
        pd_id = (await r.subscriptions())[0]["id"]
        async with await r.h.connector.client(connection) as client:
            await client.delete(f"/webhook_subscriptions/{pd_id}")
        assert (await events.status(connection.id, live=True)).state == "missing"
        await r.keeper.run_once()
        subs = await r.subscriptions()
        assert len(subs) == 1
        assert subs[0]["id"] != pd_id
        assert (await events.status(connection.id, live=True)).state == "active"


async def test_the_official_pagerduty_client_lists_the_subscription(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        ours = (await r.subscriptions())[0]
        api_key = r.h.state.directory.api_keys[connection.account_id].token

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        certfile, keyfile = Path(tmp_path) / "server.crt", Path(tmp_path) / "server.key"
        certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(keyfile))
        context = ssl.create_default_context()
        ca.configure_trust(context)

        def official_list(url: str) -> list[dict[str, object]]:
            with pagerduty.RestApiV2Client(api_key, base_url=url, verify=context) as api:
                return list(api.iter_all("webhook_subscriptions"))

        # A real TLS socket for the synchronous official client, over the same emulator state.
        with EmulatorServer(state=r.h.state, certfile=certfile, keyfile=keyfile) as server:
            listed = await anyio.to_thread.run_sync(official_list, server.url)
        assert [s["id"] for s in listed] == [ours["id"]]
        method = listed[0]["delivery_method"]
        assert isinstance(method, dict)
        assert method["url"] == ours["url"]
        assert method["secret"] is None  # PagerDuty shows the secret only once


async def test_a_failing_hook_does_not_stop_the_others_or_the_event(
    tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        seen: list[str] = []

        def broken(notice: object) -> None:
            raise RuntimeError("host bug")

        async def async_hook(notice: object) -> None:
            seen.append("async")

        remove_broken = r.h.connector.on_pagerduty_event(broken)
        r.h.connector.on_pagerduty_event(async_hook)
        with caplog.at_level("ERROR", logger="pdauth.subscriptions"):
            await r.incident(connection)
            await r.wait_notices(1)
            await r.settle()
        assert seen == ["async"]
        assert "PagerDuty event hook failed (RuntimeError)" in caplog.text
        remove_broken()
        remove_broken()  # removing twice is harmless
        await r.keeper.run_once()
        assert len(r.host.of_type("pagerduty.")) == 1


async def test_reconnecting_after_a_disconnect_subscribes_anew_under_a_new_url(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        await r.keeper.run_once()
        old = (await r.subscriptions())[0]
        refuse = True

        async def refuse_delete(request: httpx.Request) -> httpx.Response | None:
            if refuse and request.method == "DELETE":
                return httpx.Response(403, json={"error": {"message": "Forbidden", "code": 2010}})
            return None

        r.h.transport.intercept = refuse_delete
        await r.h.connector.disconnect(connection.id)  # the deletion is queued
        again = await r.h.connect()
        assert again.id == connection.id
        await r.h.connector.ensure_subscription(connection.id)
        refuse = False
        await r.keeper.run_once()  # the queued job deletes the old one, not the new one
        subs = await r.subscriptions()
        assert len(subs) == 1
        assert subs[0]["id"] != old["id"]
        assert subs[0]["url"] != old["url"]
        status = await events_of(r.h.connector).status(connection.id)
        assert (status.state, status.pd_subscription_id) == ("active", subs[0]["id"])
        await r.incident(connection)
        await r.wait_notices(1)


async def test_a_closed_connector_is_freed_after_using_pagerduty_events(
    tmp_path: os.PathLike[str],
) -> None:
    """events_of() caches per Connector in a WeakKeyDictionary; its value must not keep the
    Connector (and its store and HTTP pool) alive."""
    import gc
    import weakref

    from pdauth.connections import Connector
    from pdauth.subscriptions import events_of
    from tests.workers.harness import make_settings, sqlite_url

    connector = Connector(make_settings(database_url=sqlite_url(tmp_path)), migrate=True)
    async with connector:
        events_of(connector)
    gone = weakref.ref(connector)
    del connector
    gc.collect()
    assert gone() is None


async def test_two_keepers_checking_one_connection_at_once_make_one_subscription(
    tmp_path: os.PathLike[str],
) -> None:
    """Several keepers (instances) may run at once: the one that claims the row creates the
    subscription, the others leave it; PagerDuty ends with one, and it is the stored one."""
    async with rig(tmp_path) as r:
        connection = await r.h.connect()
        events = events_of(r.h.connector)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(events.ensure, connection.id)
        made = await r.subscriptions()
        assert len(made) == 1
        stored = await events.store.get_subscription(connection.id)
        assert stored is not None
        assert stored.state == "active"
        assert made[0]["id"] == stored.pd_subscription_id
        assert made[0]["url"].endswith("/" + stored.key)
