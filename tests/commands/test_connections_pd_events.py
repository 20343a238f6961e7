"""``pdauth connections show`` says where the connection's PagerDuty webhook subscription
stands: off, missing until the keeper's pass, active (with PagerDuty's id, looked up live),
no scope when the grant cannot create it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from starlette.applications import Starlette

from pdauth.cli import run
from tests.commands.conftest import connect_user, control

pytestmark = pytest.mark.usefixtures("env", "runtime")

Capture = pytest.CaptureFixture[str]
EVENTS = "incident.triggered,incident.resolved"


def shown(capsys: Capture, connection_id: str) -> dict[str, Any]:
    assert run(["connections", "show", connection_id, "--json"]) == 0
    found: dict[str, Any] = json.loads(capsys.readouterr().out)["pagerduty_subscription"]
    return found


def test_off_when_events_are_not_configured(app: Starlette, capsys: Capture) -> None:
    conn = connect_user(app)
    assert shown(capsys, conn.id)["state"] == "off"


def test_missing_until_the_keeper_pass_then_active(
    app: Starlette, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDAUTH_PAGERDUTY_EVENTS", EVENTS)
    conn = connect_user(app)
    assert shown(capsys, conn.id)["state"] == "missing"
    run(["keeper", "--once"])
    capsys.readouterr()
    state = shown(capsys, conn.id)
    subs = control(app, "/_emulator/webhook_subscriptions").json()["webhook_subscriptions"]
    assert len(subs) == 1
    assert (state["state"], state["pd_subscription_id"]) == ("active", subs[0]["id"])
    assert state["events"] == EVENTS.split(",")
    assert run(["connections", "show", conn.id]) == 0
    assert re.search(rf"pagerduty_events: +active \[{subs[0]['id']}\]", capsys.readouterr().out)


def test_no_scope_is_said_clearly(
    app: Starlette, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDAUTH_PAGERDUTY_EVENTS", EVENTS)
    monkeypatch.setenv("PDAUTH_SCOPES", "read")
    conn = connect_user(app)
    run(["keeper", "--once"])
    capsys.readouterr()
    assert shown(capsys, conn.id)["state"] == "no_scope"
    assert run(["connections", "show", conn.id]) == 0
    assert re.search(r"pagerduty_events: +no scope \(the grant lacks", capsys.readouterr().out)
