"""The X-PagerDuty-Signature check, against signatures computed here independently from
PagerDuty's 04-Signatures.md (HMAC-SHA256 of the raw body, hex, ``v1=`` entries separated by
commas), and the v3 event body parser."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from pdauth.pagerduty_webhooks import (
    MAX_BODY,
    parse_event,
    receiver_verdict,
    sign,
    valid_webhook_id,
    verify,
)

BODY = json.dumps(
    {
        "event": {
            "id": "01DEN4HPBQAAAG05V5QQYBRZMF",
            "event_type": "incident.triggered",
            "resource_type": "incident",
            "occurred_at": "2027-01-15T08:00:00.000Z",
            "agent": None,
            "client": None,
            "data": {"id": "PGR0VU2", "type": "incident", "title": "Disk full"},
        }
    }
).encode()
OLD, NEW = "old-secret-0123456789", "new-secret-9876543210"


def expected(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signature_computed_as_documented_verifies() -> None:
    assert sign([NEW], BODY) == expected(NEW, BODY)
    assert verify([NEW], expected(NEW, BODY), BODY)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        expected(OLD, BODY),  # another secret
        expected(NEW, BODY + b" "),  # another body
        expected(NEW, BODY).upper(),
        expected(NEW, BODY).replace("v1=", "v0="),
        expected(NEW, BODY)[:-1],
        "v1=" + "0" * 64,
        "garbage",
        "v1=" + "a" * 10_000,
    ],
)
def test_anything_else_does_not_verify(header: str | None) -> None:
    assert not verify([NEW], header, BODY)


def test_a_tampered_body_does_not_verify() -> None:
    header = expected(NEW, BODY)
    assert not verify([NEW], header, BODY.replace(b"Disk full", b"Disk fine"))


def test_rotation_two_entries_either_secret_verifies_and_order_does_not_matter() -> None:
    both = f"{expected(NEW, BODY)},{expected(OLD, BODY)}"
    assert verify([OLD], both, BODY)
    assert verify([NEW], both, BODY)
    assert verify([OLD], f"{expected(OLD, BODY)}, {expected(NEW, BODY)}", BODY)
    # After the overlap only the new secret signs: the old one alone no longer verifies.
    assert not verify([OLD], expected(NEW, BODY), BODY)
    # A receiver that holds both secrets accepts either.
    assert verify([OLD, NEW], expected(NEW, BODY), BODY)


def test_unknown_versions_are_ignored_but_do_not_verify_alone() -> None:
    assert verify([NEW], f"v2=abc,{expected(NEW, BODY)}", BODY)
    assert not verify([NEW], "v2=" + expected(NEW, BODY)[3:], BODY)


def test_no_secret_never_verifies() -> None:
    assert not verify([], expected(NEW, BODY), BODY)
    assert not verify([""], expected("", BODY), BODY)


def test_the_event_is_parsed() -> None:
    event = parse_event(BODY)
    assert event is not None
    assert event.id == "01DEN4HPBQAAAG05V5QQYBRZMF"
    assert event.pdauth_type == "pagerduty.incident.triggered"
    assert event.data["title"] == "Disk full"
    assert event.agent is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"event": []}',
        b'{"event": {"id": "x"}}',
        b'{"event": {"id": "x", "event_type": "Incident Triggered"}}',
        b'{"event": {"id": "", "event_type": "incident.triggered"}}',
        b'{"event": {"id": "x", "event_type": "incident.triggered"}' + b" " * MAX_BODY + b"}",
        # Not JSON (RFC 8259) and not storable: a signed one used to end in a 500.
        b'{"event": {"id": "x", "event_type": "incident.triggered", "data": {"n": NaN}}}',
        b'{"event": {"id": "x", "event_type": "incident.triggered", "data": Infinity}}',
    ],
)
def test_bodies_that_are_no_v3_event_are_refused(body: bytes) -> None:
    assert parse_event(body) is None


def test_webhook_ids() -> None:
    assert valid_webhook_id("5ac64822-e1b6-4b0b-a6d3-e6a1f1d7d4f2")
    for bad in (None, "", "a" * 129, "a b", "a\nb", 7):
        assert not valid_webhook_id(bad)


@pytest.mark.parametrize(
    ("url", "verdict"),
    [
        ("https://pd.example.com/pagerduty/webhooks/k", "OK"),
        ("https://203.0.113.9.nip.io/pagerduty/webhooks/k", "OK"),
        ("http://pd.example.com/pagerduty/webhooks/k", "FAIL"),
        ("http://127.0.0.1:8000/pagerduty/webhooks/k", "WARN"),
        ("https://localhost/pagerduty/webhooks/k", "WARN"),
        ("https://192.168.1.4/pagerduty/webhooks/k", "WARN"),
        ("https://[::1]/pagerduty/webhooks/k", "WARN"),
        ("https://pdauth/pagerduty/webhooks/k", "WARN"),
        ("https://pdauth.svc.internal/pagerduty/webhooks/k", "WARN"),
    ],
)
def test_the_receiver_url_verdict(url: str, verdict: str) -> None:
    assert receiver_verdict(url)[0] == verdict
