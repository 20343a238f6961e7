"""``pdauth doctor`` with ``PDAUTH_PAGERDUTY_EVENTS``: the receiver URL PagerDuty delivers to
must be https on a public-looking host (a loopback or private one warns; plain http off
loopback is refused by the settings already, and by the verdict: test_pagerduty_webhooks.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pdauth.cli import run

pytestmark = pytest.mark.usefixtures("env", "runtime")

Capture = pytest.CaptureFixture[str]
EVENTS = "incident.triggered,incident.resolved"


def receiver_check(capsys: Capture) -> dict[str, Any] | None:
    run(["doctor", "--json", "--offline"])
    report = json.loads(capsys.readouterr().out)
    found = [c for c in report["checks"] if c["name"] == "PagerDuty events"]
    return found[0] if found else None


def test_events_off_add_no_check(capsys: Capture) -> None:
    assert receiver_check(capsys) is None


def test_a_loopback_receiver_warns(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("PDAUTH_PAGERDUTY_EVENTS", EVENTS)
    check = receiver_check(capsys)
    assert check is not None
    assert check["status"] == "WARN"
    assert "/pagerduty/webhooks/" in check["detail"]
    assert "PDAUTH_PUBLIC_URL" in check["fix"]


@pytest.mark.parametrize(
    ("public_url", "status"),
    [
        ("https://pd.example.com", "OK"),
        ("https://pdauth.internal", "WARN"),
        ("https://10.1.2.3", "WARN"),
    ],
)
def test_the_public_url_decides(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, public_url: str, status: str
) -> None:
    monkeypatch.setenv("PDAUTH_PAGERDUTY_EVENTS", EVENTS)
    monkeypatch.setenv("PDAUTH_PUBLIC_URL", public_url)
    check = receiver_check(capsys)
    assert check is not None
    assert check["status"] == status, check
    assert check["detail"].startswith("the receiver URL" if status != "OK" else "PagerDuty")
