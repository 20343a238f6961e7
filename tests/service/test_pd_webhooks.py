"""The receiver ``POST /pagerduty/webhooks/{key}`` of the service app, fed by the emulator's real
deliveries (and by hand-made requests for what the emulator never sends): signatures (tampered,
wrong secret, missing, rotation overlap and after), replays de-duplicated by X-Webhook-Id, a
receiver down for a while (PagerDuty-style retries land once), answers lost after recording,
unknown keys and oversized bodies. A refused delivery is never processed: no event, no hook."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import httpx
import pytest

from pdauth.connections import Connection
from pdauth.emulator import EmulatorConfig
from pdauth.pagerduty_webhooks import MAX_BODY, sign
from pdauth.service import create_app
from tests.subscriptions_kit import Rig, rig

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"


async def subscribed(r: Rig) -> tuple[Connection, dict[str, Any]]:
    connection = await r.h.connect()
    await r.keeper.run_once()
    subs = await r.subscriptions()
    assert len(subs) == 1
    return connection, subs[0]


async def pd_events(r: Rig) -> list[str]:
    return [
        e.type for e in await r.h.store.list_events(limit=1000) if e.type.startswith("pagerduty.")
    ]


def delivery(event_id: str = "01EVENT", title: str = "Disk full") -> bytes:
    event = {
        "id": event_id,
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2027-01-15T08:00:00.000Z",
        "agent": None,
        "client": None,
        "data": {"id": "PINC1", "type": "incident", "title": title},
    }
    return json.dumps({"event": event}).encode()


async def post(r: Rig, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=r.app), base_url=BASE) as c:
        return await c.post(url.removeprefix(BASE), content=body, headers=headers)


async def connection_page(r: Rig, connection: Connection) -> httpx.Response:
    """The connection's page, as its owner sees it, from a service on the rig's Connector."""
    page_app = create_app(r.h.settings, lambda request: connection.owner, connector=r.h.connector)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=page_app), base_url=BASE
        ) as browser:
            return await browser.get(f"/connections/{connection.id}")
    finally:
        await page_app.state.pdauth.aclose()


async def test_hand_made_deliveries_bad_signatures_are_refused_and_replays_count_once(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        _, sub = await subscribed(r)
        secret = r.emulator_secret(sub["id"])
        body = delivery()
        good = {"X-PagerDuty-Signature": sign([secret], body), "X-Webhook-Id": "wh-1"}
        refused = [
            ({**good}, body.replace(b"Disk full", b"Disk fine")),  # tampered body
            ({**good, "X-PagerDuty-Signature": sign(["wrong-secret"], body)}, body),
            ({"X-Webhook-Id": "wh-1"}, body),  # no signature at all
        ]
        for headers, sent in refused:
            response = await post(r, sub["url"], sent, headers)
            assert response.status_code == 401, response.text
        assert await pd_events(r) == []
        assert r.notices == []

        first = await post(r, sub["url"], body, good)
        assert first.status_code == 202
        again = await post(r, sub["url"], body, good)  # replayed delivery id
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
        assert await pd_events(r) == ["pagerduty.incident.triggered"]
        await r.wait_notices(1)
        assert len(r.notices) == 1

        no_id = await post(
            r, sub["url"], body, {"X-PagerDuty-Signature": good["X-PagerDuty-Signature"]}
        )
        assert no_id.status_code == 400
        unknown = await post(r, BASE + "/pagerduty/webhooks/" + "x" * 43, body, good)
        assert unknown.status_code == 404
        big = b"{" + b" " * MAX_BODY + b"}"
        too_big = await post(r, sub["url"], big, {**good, "X-Webhook-Id": "wh-big"})
        assert too_big.status_code == 413
        # Signed but not JSON (a NaN): refused as not an event, not a 500 PagerDuty retries.
        nan = body.replace(b'"incident.triggered",', b'"incident.triggered", "x": NaN,', 1)
        assert nan != body
        signed_nan = {"X-PagerDuty-Signature": sign([secret], nan), "X-Webhook-Id": "wh-nan"}
        not_json = await post(r, sub["url"], nan, signed_nan)
        assert 400 <= not_json.status_code < 500, not_json.text
        assert await pd_events(r) == ["pagerduty.incident.triggered"]


async def test_the_bad_signature_knob_is_refused_and_dropped_by_the_emulator(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection, _ = await subscribed(r)
        response = await r.h.control.post("/_emulator/webhooks/bad_signatures", json={"count": 1})
        assert response.status_code == 200
        await r.incident(connection, title="forged")
        await r.gate.wait_statuses(1)
        await r.settle()
        assert r.gate.statuses == [401]
        stats = r.h.state.webhooks.stats()
        assert (stats["failed"], stats["retries"]) == (1, 0)  # a 4xx is not retried
        assert await pd_events(r) == []
        await r.incident(connection, title="real")
        notices = await r.wait_notices(1)
        assert notices[0].event.data["title"] == "real"


async def test_secret_rotation_overlap_then_old_secret_alone(tmp_path: os.PathLike[str]) -> None:
    async with rig(tmp_path) as r:
        connection, sub = await subscribed(r)
        rotate = f"/_emulator/webhook_subscriptions/{sub['id']}/rotate_secret"
        response = await r.h.control.post(rotate, json={"keep_old": True})
        assert response.status_code == 200
        await r.incident(connection, title="during overlap")
        await r.wait_notices(1)  # two v1 entries; pdauth's (old) secret verifies one

        retire = f"/_emulator/webhook_subscriptions/{sub['id']}/retire_secret"
        assert (await r.h.control.post(retire)).status_code == 200
        await r.incident(connection, title="after overlap")
        await r.gate.wait_statuses(2)
        await r.settle()
        assert r.gate.statuses == [202, 401]
        assert len(r.notices) == 1
        assert await pd_events(r) == ["pagerduty.incident.triggered"]


async def test_a_receiver_down_for_a_while_gets_the_retries_once(
    tmp_path: os.PathLike[str],
) -> None:
    config = EmulatorConfig(webhook_retry_scale=0.0)  # PagerDuty's backoff, compressed
    async with rig(tmp_path, config=config) as r:
        connection, _ = await subscribed(r)
        r.gate.down = 3
        await r.incident(connection)
        await r.gate.wait_statuses(4)
        await r.settle()
        assert r.gate.statuses == [503, 503, 503, 202]
        assert len(await r.wait_notices(1)) == 1
        assert await pd_events(r) == ["pagerduty.incident.triggered"]


async def test_an_answer_lost_after_recording_is_not_a_second_event(
    tmp_path: os.PathLike[str],
) -> None:
    config = EmulatorConfig(webhook_retry_scale=0.0)
    async with rig(tmp_path, config=config) as r:
        connection, _ = await subscribed(r)
        r.gate.lose_answers = 2
        await r.incident(connection)
        await r.gate.wait_statuses(3)
        await r.settle()
        assert r.gate.statuses == [503, 503, 200]  # the retries are recognised as repeats
        assert await pd_events(r) == ["pagerduty.incident.triggered"]
        await r.keeper.run_once()
        assert len(r.host.of_type("pagerduty.")) == 1
        assert len(r.notices) == 1


async def test_each_event_is_tied_to_its_own_connection_and_owner(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        first = await r.h.connect("owner-a")
        second = await r.h.connect("owner-b")
        await r.keeper.run_once()
        assert len(await r.subscriptions()) == 2
        await r.incident(first, title=str(uuid.uuid4()))
        notices = await r.wait_notices(2)  # one account: both subscriptions are told
        assert {(n.connection_id, n.owner) for n in notices} == {
            (first.id, "owner-a"),
            (second.id, "owner-b"),
        }


async def test_a_body_of_200_kb_is_accepted(tmp_path: os.PathLike[str]) -> None:
    async with rig(tmp_path) as r:
        _, sub = await subscribed(r)
        secret = r.emulator_secret(sub["id"])
        body = delivery(title="x" * 200_000)
        headers = {"X-PagerDuty-Signature": sign([secret], body), "X-Webhook-Id": "wh-large"}
        response = await post(r, sub["url"], body, headers)
        assert response.status_code == 202


async def test_the_json_api_events_feed_carries_pagerduty_events(
    tmp_path: os.PathLike[str],
) -> None:
    api_key = "test-api-key-0123456789abcdef"
    async with rig(tmp_path, api_keys=api_key) as r:
        connection, _ = await subscribed(r)
        await r.incident(connection, title="Feed me")
        await r.wait_notices(1)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=r.app), base_url=BASE
        ) as client:
            response = await client.get(
                "/api/v1/events",
                params={"type": "pagerduty.incident.triggered"},
                headers={"Authorization": f"Bearer {api_key}"},
            )
        assert response.status_code == 200, response.text
        listed = response.json()["events"]
        assert len(listed) == 1
        assert listed[0]["connection_id"] == connection.id
        assert listed[0]["data"]["resource"]["title"] == "Feed me"


async def test_the_connection_page_shows_the_subscription_and_incidents_as_they_arrive(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path) as r:
        connection, sub = await subscribed(r)
        await r.incident(connection, title="Disk full on db-1")
        await r.wait_notices(1)
        page = await connection_page(r, connection)
    assert page.status_code == 200
    assert f'<dd id="pd-events">active · {sub["id"]}</dd>' in page.text
    assert "incident.triggered · Disk full on db-1" in page.text
    assert '<meta http-equiv="refresh" content="5">' in page.text  # live, without a script
    assert sub["url"].rsplit("/", 1)[1] not in page.text  # the receiver key is not shown


async def test_without_pagerduty_events_the_page_does_not_reload_itself(
    tmp_path: os.PathLike[str],
) -> None:
    async with rig(tmp_path, pagerduty_events=()) as r:
        connection = await r.h.connect()
        page = await connection_page(r, connection)
    assert page.status_code == 200
    assert "pd-events" not in page.text
    assert "http-equiv" not in page.text
