"""Webhook signing and delivery: verify_signature round trips and refuses tampered bodies, old
or future timestamps, wrong secrets and malformed headers; the body drops ciphertext; one
delivery attempt reports the receiver's answer, a timeout or an unreachable receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings, strategies as st
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.clock import FrozenClock
from pdauth.store import EventRow
from pdauth.webhooks import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    VerifiedEvent,
    WebhookSender,
    event_body,
    sign,
    verify_signature,
)

SECRET = "whsec-test-0123456789abcdefghijklmnopqrstuv"
NOW = 1_800_000_000.0
URL = "http://127.0.0.1:9/hooks"


def event(**changes: Any) -> EventRow:
    values: dict[str, Any] = {
        "id": 7,
        "type": "connection.needs_reauth",
        "connection_id": "c_123",
        "owner": "tenant-1",
        "data": {"reason": "invalid_grant", "token_version": 3},
        "created_at": NOW - 5,
        "delivered_at": None,
        "attempts": 0,
        "next_attempt_at": NOW,
        "last_error": None,
    }
    values.update(changes)
    return EventRow(**values)


# -- signing --------------------------------------------------------------------------------


def test_a_signature_round_trips() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    assert header.startswith(f"t={int(NOW)},v1=")
    assert verify_signature(SECRET, header, body, NOW, allow_v1=True)
    assert verify_signature(SECRET.encode(), header, body, NOW + 299, allow_v1=True)
    assert verify_signature(SecretStr(SECRET), header, body, NOW - 299, allow_v1=True)


def test_the_signature_is_documented_hmac_sha256_over_t_dot_body() -> None:
    body = b'{"hello":"world"}'
    expected = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, NOW) == f"t=1800000000,v1={expected}"


def test_a_tampered_body_does_not_verify() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    tampered = body.replace(b"needs_reauth", b"created")
    assert tampered != body
    assert not verify_signature(SECRET, header, tampered, NOW, allow_v1=True)
    assert not verify_signature(SECRET, header, body + b" ", NOW, allow_v1=True)


def test_an_old_or_future_timestamp_does_not_verify() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    assert not verify_signature(
        SECRET, header, body, NOW + 301, allow_v1=True
    )  # a replayed delivery
    assert not verify_signature(SECRET, header, body, NOW - 301, allow_v1=True)  # clock far behind
    assert verify_signature(SECRET, header, body, NOW + 3000, tolerance=3600, allow_v1=True)


def test_another_secret_does_not_verify() -> None:
    body = event_body(event())
    assert not verify_signature("another-secret", sign(SECRET, body, NOW), body, NOW, allow_v1=True)


def test_several_v1_values_verify_if_one_matches() -> None:
    body = b"{}"
    good = sign(SECRET, body, NOW)
    stale = sign("the-old-secret", body, NOW).split(",")[1]
    assert verify_signature(SECRET, f"{good},{stale}", body, NOW, allow_v1=True)
    assert verify_signature(SECRET, f"{stale}, {good}", body, NOW, allow_v1=True)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "t=1800000000",
        "v1=" + "0" * 64,
        "t=abc,v1=" + "0" * 64,
        "t=-1800000000,v1=" + "0" * 64,
        "t=1800000000,t=1800000000,v1=" + "0" * 64,
        "t=1800000000,v1=" + "0" * 63,
        "t=1800000000,v1=" + "G" * 64,
        "t=1800000000;v1=" + "0" * 64,
        "t=" + "9" * 400 + ",v1=" + "0" * 64,
        "t=1800000000,v1=" + "0" * 64 + "," * 5000,
        "garbage",
    ],
)
def test_malformed_headers_do_not_verify(header: str | None) -> None:
    assert not verify_signature(SECRET, header, b"{}", NOW, allow_v1=True)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=256), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_flipping_any_bit_of_the_body_breaks_the_signature(
    body: bytes, position: int, bit: int
) -> None:
    header = sign(SECRET, body, NOW)
    assert verify_signature(SECRET, header, body, NOW, allow_v1=True)
    if body:
        i = position % len(body)
        flipped = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
        assert not verify_signature(SECRET, header, flipped, NOW, allow_v1=True)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        sign("", b"{}", NOW)


# -- signature version 2: the event id is signed too ---------------------------------------


def test_a_v1_only_signature_needs_the_callers_consent() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    assert verify_signature(SECRET, header, body, NOW) is None
    verified = verify_signature(SECRET, header, body, NOW, allow_v1=True)
    assert verified is not None
    assert verified.version == "v1"


def test_v2_is_documented_hmac_sha256_over_t_dot_id_dot_body() -> None:
    body = b'{"hello":"world"}'
    v1 = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    v2 = hmac.new(SECRET.encode(), b"1800000000.42." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, NOW, event_id=42) == f"t=1800000000,v1={v1},v2={v2}"
    assert sign(SECRET, body, NOW, event_id="42") == f"t=1800000000,v1={v1},v2={v2}"


def test_v2_returns_the_verified_event() -> None:
    body = event_body(event(id=42))
    header = sign(SECRET, body, NOW, event_id=42)
    verified = verify_signature(SECRET, header, body, NOW, event_id="42")
    assert verified == VerifiedEvent("v2", int(NOW), "42", json.loads(body))
    assert verified.type == "connection.needs_reauth"
    # Without the header's id, the body's (signed) id is the one checked.
    assert verify_signature(SECRET, header, body, NOW) == verified


@pytest.mark.parametrize("allow_v1", [False, True])
def test_a_forged_event_id_header_does_not_verify(allow_v1: bool) -> None:
    body = event_body(event(id=42))
    header = sign(SECRET, body, NOW, event_id=42)
    for forged in ("43", "420", "4", "42 ", "", "x" * 65, "42\n"):
        assert (
            verify_signature(SECRET, header, body, NOW, event_id=forged, allow_v1=allow_v1) is None
        )


def test_a_header_with_v2_is_judged_by_v2_alone() -> None:
    body = event_body(event(id=42))
    genuine = sign(SECRET, body, NOW, event_id=42)
    t, v1, _ = genuine.split(",")
    bad_v2 = "v2=" + "0" * 64
    assert verify_signature(SECRET, f"{t},{v1},{bad_v2}", body, NOW, allow_v1=True) is None


def test_stripping_v2_leaves_only_the_bodys_id_trusted() -> None:
    # A downgrade: v2 removed and the id header changed. Only a caller who allows v1 accepts
    # it, and then the id it gets is the one inside the signed body, not the forged header.
    body = event_body(event(id=42))
    t, v1, _ = sign(SECRET, body, NOW, event_id=42).split(",")
    assert verify_signature(SECRET, f"{t},{v1}", body, NOW, event_id="43") is None
    verified = verify_signature(SECRET, f"{t},{v1}", body, NOW, event_id="43", allow_v1=True)
    assert verified is not None
    assert verified.id == "42"


def test_the_id_header_must_be_the_bodys_id() -> None:
    # Signed consistently with a wrong id (a sender bug or a replayed body): refused.
    body = event_body(event(id=42))
    header = sign(SECRET, body, NOW, event_id=43)
    assert verify_signature(SECRET, header, body, NOW, event_id="43") is None
    assert verify_signature(SECRET, header, body, NOW) is None


def test_v2_over_a_body_that_is_not_an_event() -> None:
    body = b"\x00not json"
    header = sign(SECRET, body, NOW, event_id="evt_1")
    verified = verify_signature(SECRET, header, body, NOW, event_id="evt_1")
    assert verified == VerifiedEvent("v2", int(NOW), "evt_1", None)
    assert verified.type is None
    # With no id in the header argument and none in the body there is nothing to check.
    assert verify_signature(SECRET, header, body, NOW) is None
    assert verify_signature(SECRET, sign(SECRET, b"{}", NOW, event_id=1), b"{}", NOW) is None


@pytest.mark.parametrize("event_id", ["", "a b", "x" * 65, "id\n", "é", -1, True])
def test_malformed_event_ids_cannot_be_signed(event_id: Any) -> None:
    with pytest.raises(ValueError, match="event_id"):
        sign(SECRET, b"{}", NOW, event_id=event_id)


def test_now_defaults_to_the_injected_clock() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW, event_id=7)
    assert verify_signature(SECRET, header, body, clock=FrozenClock(current=NOW + 299))
    assert verify_signature(SECRET, header, body, clock=FrozenClock(current=NOW + 301)) is None
    # An explicit now wins over the clock.
    assert verify_signature(SECRET, header, body, NOW, clock=FrozenClock(current=0.0))


def test_now_defaults_to_the_system_clock() -> None:
    body = event_body(event())
    assert verify_signature(SECRET, sign(SECRET, body, time.time(), event_id=7), body)
    assert verify_signature(SECRET, sign(SECRET, body, NOW, event_id=7), body) is None


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=256), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_flipping_any_bit_of_the_body_breaks_v2(body: bytes, position: int, bit: int) -> None:
    header = sign(SECRET, body, NOW, event_id="e1")
    assert verify_signature(SECRET, header, body, NOW, event_id="e1")
    if body:
        i = position % len(body)
        flipped = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
        assert not verify_signature(SECRET, header, flipped, NOW, event_id="e1")


# -- the body -------------------------------------------------------------------------------


def test_the_body_has_the_documented_fields_and_no_ciphertext() -> None:
    ev = event(
        id=42,
        type="revocation.pending",
        data={
            "token_type_hint": "refresh_token",
            "token_ct": "v1.k1.secret-ciphertext",
            "nested": [{"other_ct": "x", "kept": 1}],
        },
    )
    body = event_body(ev)
    decoded = json.loads(body)
    assert decoded == {
        "id": 42,
        "type": "revocation.pending",
        "connection_id": "c_123",
        "owner": "tenant-1",
        "created_at": "2027-01-15T07:59:55.000Z",
        "data": {"token_type_hint": "refresh_token", "nested": [{"kept": 1}]},
    }
    assert b"secret-ciphertext" not in body
    assert b"_ct" not in body


# -- one delivery attempt -------------------------------------------------------------------


Handler = Callable[[Request], Awaitable[Response]]


def receiver(handler: Handler) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=Starlette(routes=[Route("/hooks", handler, methods=["POST"])]))


@pytest.mark.anyio
async def test_a_delivery_is_signed_and_identified() -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: Request) -> Response:
        seen.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    sender = WebhookSender(URL, SecretStr(SECRET), transport=receiver(handler))
    try:
        result = await sender.deliver(event(), NOW)
    finally:
        await sender.aclose()
    assert result.delivered
    assert result.status == 204
    [(headers, body)] = seen
    assert headers[EVENT_ID_HEADER.lower()] == "7"
    assert headers[EVENT_TYPE_HEADER.lower()] == "connection.needs_reauth"
    assert headers["content-type"] == "application/json"
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body, NOW + 1)
    assert body == event_body(event())
    # Signature version 2 covers the event id header; v1 stays during the transition.
    signature = headers[SIGNATURE_HEADER.lower()]
    assert [part.split("=")[0] for part in signature.split(",")] == ["t", "v1", "v2"]
    verified = verify_signature(SECRET, signature, body, NOW + 1, event_id="7")
    assert verified is not None
    assert (verified.version, verified.id, verified.type) == ("v2", "7", "connection.needs_reauth")
    assert verify_signature(SECRET, signature, body, NOW + 1, event_id="8") is None
    assert SECRET not in repr(sender)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 400, 410, 500, 503])
async def test_anything_but_2xx_is_not_delivered(status: int) -> None:
    async def handler(request: Request) -> Response:
        return Response(status_code=status, headers={"Location": "https://elsewhere.example/"})

    async with httpx.AsyncClient(transport=receiver(handler)) as http:
        sender = WebhookSender(URL, SECRET, http=http)
        result = await sender.deliver(event(), NOW)
        await sender.aclose()  # not ours: the client stays open
        assert not http.is_closed
    assert not result.delivered
    assert result.status == status
    assert result.error == f"the receiver answered HTTP {status}"


@pytest.mark.anyio
async def test_a_slow_receiver_times_out() -> None:
    async def handler(request: Request) -> Response:
        await anyio.sleep(5)
        return Response(status_code=204)

    sender = WebhookSender(URL, SECRET, timeout=0.05, transport=receiver(handler))
    try:
        result = await sender.deliver(event(), NOW)
    finally:
        await sender.aclose()
    assert not result.delivered
    assert result.status is None
    assert result.error == "the receiver did not answer in time"


class Unreachable(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused: {request.url}", request=request)


@pytest.mark.anyio
async def test_an_unreachable_receiver_is_reported_without_the_url() -> None:
    sender = WebhookSender(URL + "?token=canary-url-secret", SECRET, transport=Unreachable())
    try:
        result = await sender.deliver(event(), NOW)
    finally:
        await sender.aclose()
    assert not result.delivered
    assert result.error == "could not reach the receiver (ConnectError)"


@pytest.mark.anyio
async def test_bad_arguments_are_refused() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError, match="not both"):
            WebhookSender(URL, SECRET, http=http, transport=Unreachable())
    with pytest.raises(ValueError, match="positive"):
        WebhookSender(URL, SECRET, timeout=0)
