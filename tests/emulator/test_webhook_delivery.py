"""Delivery of signed v3 webhook events by the emulator into an in-process receiver: exactly
once to a healthy receiver, signatures checked with hmac/hashlib from PagerDuty's documented
algorithm, retries on 5xx/429 moved forward by the emulator clock, no retry on other 4xx,
temporary disablement after repeated failures and re-enabling, secret rotation (two signatures,
then one), the bad-signature knob, filters, ping, and the delivery stats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState

from .test_rest_support import BASE, make_state
from .webhook_kit import RECEIVER, Receiver, subscription_body, until, verifies

pytestmark = pytest.mark.anyio

ACME = "PACME01"
ADMIN = "admin@acme.example"


@dataclass
class Rig:
    state: EmulatorState
    client: httpx.AsyncClient
    receiver: Receiver

    @property
    def headers(self) -> dict[str, str]:
        token = self.state.directory.api_keys[ACME].token
        return {
            "Authorization": f"Token token={token}",
            "Accept": "application/vnd.pagerduty+json;version=2",
        }

    async def subscribe(self, **kw: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/webhook_subscriptions", headers=self.headers, json=subscription_body(**kw)
        )
        assert response.status_code == 200, response.text
        sub: dict[str, Any] = response.json()["webhook_subscription"]
        return sub

    async def trigger(self, **kw: Any) -> dict[str, Any]:
        response = await self.client.post("/_emulator/incidents", json={"account": ACME, **kw})
        assert response.status_code == 201, response.text
        incident: dict[str, Any] = response.json()["incident"]
        return incident

    async def advance(self, seconds: float) -> None:
        moved = await self.client.post("/_emulator/clock", json={"advance": seconds})
        assert moved.status_code == 200

    async def stats(self) -> dict[str, int]:
        webhooks: dict[str, int] = (await self.client.get("/_emulator/stats")).json()["webhooks"]
        return webhooks

    def settled(self) -> bool:
        """Nothing in flight (every attempt made so far has been accounted for)."""
        counts = self.state.webhooks.stats()
        return counts["attempts"] == counts["delivered"] + counts["failed"] + counts["retries"]


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig()


@pytest.fixture
async def rig(config: EmulatorConfig) -> AsyncIterator[Rig]:
    state = make_state(config)
    receiver = Receiver()
    state.webhooks.transport = httpx.ASGITransport(app=receiver)
    app = create_app(state=state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Rig(state, client, receiver)
    await state.webhooks.aclose()


async def test_an_incident_is_delivered_once_signed_with_the_subscription_secret(rig) -> None:
    sub = await rig.subscribe()
    secret = sub["delivery_method"]["secret"]
    incident = await rig.trigger(title="Disk full", user=ADMIN)

    (got,) = await rig.receiver.wait_for(1)
    assert verifies(secret, got)
    assert not verifies("another-secret", got)  # negative control of the check itself
    assert got.headers["x-webhook-subscription"] == sub["id"]
    assert got.headers["x-webhook-id"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "PagerDuty-Webhook/V3.0"
    event = got.event
    assert event["event_type"] == "incident.triggered"
    assert event["resource_type"] == "incident"
    assert event["occurred_at"].endswith("Z")
    assert event["agent"]["type"] == "user_reference"
    assert event["data"]["id"] == incident["id"]
    assert event["data"]["type"] == "incident"
    assert event["data"]["status"] == "triggered"
    assert event["data"]["title"] == "Disk full"
    assert event["data"]["number"] == incident["incident_number"]

    await until(rig.settled)
    await rig.advance(3600)  # nothing is due again: delivered means never retried
    await until(rig.settled)
    assert len(rig.receiver.received) == 1
    stats = await rig.stats()
    assert stats["delivered"] == stats["attempts"] == stats["events"] == 1
    assert stats["retries"] == stats["failed"] == stats["pending"] == 0


async def test_rest_api_changes_emit_triggered_acknowledged_resolved(rig) -> None:
    await rig.subscribe()
    service = rig.state.directory.services_of(ACME)[0]
    headers = {**rig.headers, "From": ADMIN}
    created = await rig.client.post(
        "/incidents",
        headers=headers,
        json={
            "incident": {
                "type": "incident",
                "title": "API",
                "service": {"id": service.id, "type": "service_reference"},
            }
        },
    )
    assert created.status_code == 201, created.text
    incident_id = created.json()["incident"]["id"]
    ack = await rig.client.put(
        f"/incidents/{incident_id}",
        headers=headers,
        json={"incident": {"type": "incident_reference", "status": "acknowledged"}},
    )
    assert ack.status_code == 200, ack.text
    assert ack.json()["incident"]["status"] == "acknowledged"
    again = await rig.client.put(
        f"/incidents/{incident_id}",
        headers=headers,
        json={"incident": {"type": "incident_reference", "status": "acknowledged"}},
    )
    assert again.status_code == 200  # no change, no event
    resolved = await rig.client.post(
        f"/_emulator/incidents/{incident_id}", json={"status": "resolved"}
    )
    assert resolved.status_code == 200, resolved.text
    got = await rig.receiver.wait_for(3)
    assert [r.event["event_type"] for r in got] == [
        "incident.triggered",
        "incident.acknowledged",
        "incident.resolved",
    ]
    assert got[2].event["data"]["status"] == "resolved"
    reopen = await rig.client.put(
        f"/incidents/{incident_id}",
        headers=headers,
        json={"incident": {"type": "incident_reference", "status": "acknowledged"}},
    )
    assert reopen.status_code == 400
    await until(rig.settled)
    assert len(rig.receiver.received) == 3


async def test_filters_and_event_lists_decide_who_gets_what(rig) -> None:
    services = rig.state.directory.services_of(ACME)
    mine, other = services[0], services[1]
    by_service = await rig.subscribe(filter_={"type": "service_reference", "id": mine.id})
    by_team = await rig.subscribe(
        filter_={"type": "team_reference", "id": other.team_ids[0]}, url=RECEIVER + "/team"
    )
    resolved_only = await rig.subscribe(events=["incident.resolved"])
    await rig.trigger(service=other.id)  # only the team subscription matches
    (got,) = await rig.receiver.wait_for(1)
    assert got.headers["x-webhook-subscription"] == by_team["id"]
    await rig.trigger(service=mine.id)
    got = await rig.receiver.wait_for(2)
    assert got[1].headers["x-webhook-subscription"] == by_service["id"]
    await until(rig.settled)
    assert resolved_only["id"] not in {r.headers["x-webhook-subscription"] for r in got}
    assert len(rig.receiver.received) == 2


async def test_inactive_subscription_gets_nothing(rig) -> None:
    sub = await rig.subscribe(active=False)
    await rig.trigger()
    await until(rig.settled)
    assert rig.receiver.received == []
    assert (await rig.stats())["attempts"] == 0
    assert sub["active"] is False


async def test_5xx_and_429_are_retried_on_the_emulator_clock_then_delivered_once(rig) -> None:
    sub = await rig.subscribe()
    rig.receiver.script.extend([500, 429, 503])
    await rig.trigger()
    first = await rig.receiver.wait_for(1)
    await until(rig.settled)
    assert (await rig.stats())["retries"] == 1
    await rig.advance(29)  # the first retry is due 30 s later: not yet
    await until(rig.settled)
    assert len(first) == 1
    for delay, seen in ((1, 2), (60, 3), (120, 4)):
        await rig.advance(delay)
        await rig.receiver.wait_for(seen)
    await until(rig.settled)
    got = rig.receiver.received
    assert len({r.headers["x-webhook-id"] for r in got}) == 1  # one webhook, four attempts
    assert len({r.body for r in got}) == 1
    assert all(verifies(sub["delivery_method"]["secret"], r) for r in got)
    stats = await rig.stats()
    assert (stats["attempts"], stats["retries"], stats["delivered"], stats["failed"]) == (
        4,
        3,
        1,
        0,
    )


async def test_a_retrying_webhook_holds_back_its_incident_only(rig) -> None:
    await rig.subscribe()
    rig.receiver.script.append(500)
    first = await rig.trigger(title="first")
    await rig.receiver.wait_for(1)
    await until(rig.settled)
    acked = await rig.client.post(
        f"/_emulator/incidents/{first['id']}", json={"status": "acknowledged"}
    )
    assert acked.status_code == 200
    second = await rig.trigger(title="second")
    got = await rig.receiver.wait_for(2)  # the other incident is not held back
    assert got[1].event["data"]["id"] == second["id"]
    await until(rig.settled)
    assert len(rig.receiver.received) == 2  # the acknowledgement waits for the retry
    await rig.advance(30)
    got = await rig.receiver.wait_for(4)
    assert [(r.event["data"]["id"], r.event["event_type"]) for r in got[2:]] == [
        (first["id"], "incident.triggered"),
        (first["id"], "incident.acknowledged"),
    ]


async def test_other_4xx_is_dropped_without_retry(rig) -> None:
    await rig.subscribe()
    rig.receiver.script.append(400)
    await rig.trigger()
    await rig.receiver.wait_for(1)
    await until(rig.settled)
    await rig.advance(3600)
    await until(rig.settled)
    assert len(rig.receiver.received) == 1
    stats = await rig.stats()
    assert (stats["failed"], stats["retries"], stats["disabled"]) == (1, 0, 0)


@pytest.mark.parametrize(
    ("config", "steps"),
    [
        # 30 s delays, a 100 s window: attempts at 0, 30, 60, 90 s; one at 120 s is refused.
        (EmulatorConfig(webhook_retry_delays=(30.0,), webhook_retry_window=100.0), (30, 30, 30)),
        # The default schedule (30, 60, 120 s …) capped at 4 attempts.
        (EmulatorConfig(webhook_max_attempts=4), (30, 60, 120)),
    ],
)
async def test_retries_end_with_the_window_or_the_attempt_cap(rig, steps) -> None:
    rig.receiver.default = 503
    await rig.subscribe()
    await rig.trigger()
    await rig.receiver.wait_for(1)
    for seen, delay in enumerate(steps, start=2):
        await until(rig.settled)
        await rig.advance(delay)
        await rig.receiver.wait_for(seen)
    await until(rig.settled)
    await rig.advance(48 * 3600)
    await until(rig.settled)
    assert len(rig.receiver.received) == 4
    stats = await rig.stats()
    assert (stats["failed"], stats["retries"], stats["pending"]) == (1, 3, 0)


async def test_three_dropped_webhooks_disable_the_subscription_until_enabled(rig) -> None:
    sub = await rig.subscribe()
    rig.receiver.default = 410
    for n in range(1, 4):
        await rig.trigger()
        await rig.receiver.wait_for(n)
        await until(rig.settled)
    path = f"/webhook_subscriptions/{sub['id']}"
    shown = (await rig.client.get(path, headers=rig.headers)).json()["webhook_subscription"]
    assert shown["delivery_method"]["temporarily_disabled"] is True
    await rig.trigger()  # not even enqueued while disabled
    await until(rig.settled)
    assert len(rig.receiver.received) == 3
    stats = await rig.stats()
    assert (stats["failed"], stats["disabled"], stats["dropped"]) == (3, 1, 1)

    rig.receiver.default = 202
    enabled = await rig.client.post(path + "/enable", headers=rig.headers)
    assert (
        enabled.json()["webhook_subscription"]["delivery_method"]["temporarily_disabled"] is False
    )
    await rig.trigger()
    got = await rig.receiver.wait_for(4)
    assert verifies(sub["delivery_method"]["secret"], got[3])


@pytest.mark.parametrize("config", [EmulatorConfig(webhook_disable_after=1)])
async def test_disablement_lapses_after_24_hours_of_emulator_time(rig) -> None:
    await rig.subscribe()
    rig.receiver.script.append(404)
    await rig.trigger()
    await rig.receiver.wait_for(1)
    await until(rig.settled)
    await rig.trigger()
    await until(rig.settled)
    assert len(rig.receiver.received) == 1
    await rig.advance(86_400)
    await rig.trigger()
    await rig.receiver.wait_for(2)


async def test_rotation_signs_with_both_secrets_then_only_the_new_one(rig) -> None:
    sub = await rig.subscribe()
    old = sub["delivery_method"]["secret"]
    rotated = await rig.client.post(f"/_emulator/webhook_subscriptions/{sub['id']}/rotate_secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["secrets_active"] == 2
    await rig.trigger()
    (during,) = await rig.receiver.wait_for(1)
    assert len(during.signatures) == 2
    assert verifies(new, during)
    assert verifies(old, during)

    retired = await rig.client.post(f"/_emulator/webhook_subscriptions/{sub['id']}/retire_secret")
    assert retired.json() == {"secrets_active": 1}
    await rig.trigger()
    after = (await rig.receiver.wait_for(2))[1]
    assert len(after.signatures) == 1
    assert verifies(new, after)
    assert not verifies(old, after)
    listed = (await rig.client.get("/_emulator/webhook_subscriptions")).json()
    assert new not in str(listed)
    assert old not in str(listed)


async def test_bad_signature_knob_signs_the_next_deliveries_wrongly(rig) -> None:
    sub = await rig.subscribe()
    secret = sub["delivery_method"]["secret"]
    knob = await rig.client.post("/_emulator/webhooks/bad_signatures", json={"count": 1})
    assert knob.json() == {"pending": 1}
    await rig.trigger()
    await rig.trigger()
    bad, good = await rig.receiver.wait_for(2)
    assert bad.signatures[0].startswith("v1=")
    assert not verifies(secret, bad)
    assert verifies(secret, good)
    refused = await rig.client.post("/_emulator/webhooks/bad_signatures", json={"count": -1})
    assert refused.status_code == 400


@pytest.mark.parametrize("config", [EmulatorConfig(webhook_bad_signatures=True)])
async def test_bad_signature_config_signs_every_delivery_wrongly(rig) -> None:
    sub = await rig.subscribe()
    await rig.trigger()
    (got,) = await rig.receiver.wait_for(1)
    assert not verifies(sub["delivery_method"]["secret"], got)


async def test_ping_delivers_pagey_ping_with_custom_headers(rig) -> None:
    sub = await rig.subscribe(
        delivery_method={
            "type": "http_delivery_method",
            "url": RECEIVER,
            "custom_headers": [{"name": "X-Tenant", "value": "t-42"}],
        },
        events=["incident.resolved"],
    )
    pinged = await rig.client.post(f"/webhook_subscriptions/{sub['id']}/ping", headers=rig.headers)
    assert pinged.status_code == 202
    (got,) = await rig.receiver.wait_for(1)
    assert got.event["event_type"] == "pagey.ping"
    assert got.headers["x-tenant"] == "t-42"
    assert verifies(sub["delivery_method"]["secret"], got)


async def test_deleting_a_subscription_drops_its_queue(rig) -> None:
    sub = await rig.subscribe()
    rig.receiver.script.append(500)
    await rig.trigger()
    await rig.receiver.wait_for(1)
    await until(rig.settled)
    deleted = await rig.client.delete(f"/webhook_subscriptions/{sub['id']}", headers=rig.headers)
    assert deleted.status_code == 204
    await rig.advance(30)
    await until(rig.settled)
    assert len(rig.receiver.received) == 1
    assert (await rig.stats())["pending"] == 0


async def test_control_incident_routes_refuse_bad_input(rig) -> None:
    bad_account = await rig.client.post("/_emulator/incidents", json={"account": "nope"})
    assert bad_account.status_code == 400
    bad_service = await rig.client.post(
        "/_emulator/incidents", json={"account": ACME, "service": "PNOPE00"}
    )
    assert bad_service.status_code == 400
    missing = await rig.client.post("/_emulator/incidents/PNOPE00", json={"status": "resolved"})
    assert missing.status_code == 404
    incident = await rig.trigger()
    bad_status = await rig.client.post(
        f"/_emulator/incidents/{incident['id']}", json={"status": "triggered"}
    )
    assert bad_status.status_code == 400
    rotate_missing = await rig.client.post("/_emulator/webhook_subscriptions/PX/rotate_secret")
    assert rotate_missing.status_code == 404


async def test_reset_forgets_subscriptions_and_counters(rig) -> None:
    await rig.subscribe()
    await rig.trigger()
    await rig.receiver.wait_for(1)
    await until(rig.settled)
    assert (await rig.client.post("/_emulator/reset")).status_code == 200
    stats = await rig.stats()
    assert stats["subscriptions"] == stats["delivered"] == 0


@pytest.mark.parametrize(
    "knob",
    [
        {"webhook_timeout": 0},
        {"webhook_max_attempts": 0},
        {"webhook_retry_window": -1.0},
        {"webhook_retry_delays": ()},
        {"webhook_retry_delays": (30.0, -1.0)},
        {"webhook_retry_scale": float("nan")},
        {"webhook_disable_after": 0},
        {"webhook_disable_for": -1.0},
        {"webhook_queue_limit": 0},
    ],
)
def test_webhook_knobs_are_validated(knob: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="webhook_"):
        EmulatorConfig(**knob)
