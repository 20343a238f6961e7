"""Webhook signing and delivery: verify_signature round trips and refuses tampered bodies, old
or future timestamps, wrong secrets and malformed headers; the body drops ciphertext; one
delivery attempt reports the receiver's answer, a timeout or an unreachable receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.store import EventRow
from pdauth.webhooks import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
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
    assert verify_signature(SECRET, header, body, NOW)
    assert verify_signature(SECRET.encode(), header, body, NOW + 299)
    assert verify_signature(SecretStr(SECRET), header, body, NOW - 299)


def test_the_signature_is_documented_hmac_sha256_over_t_dot_body() -> None:
    body = b'{"hello":"world"}'
    expected = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, NOW) == f"t=1800000000,v1={expected}"


def test_a_tampered_body_does_not_verify() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    tampered = body.replace(b"needs_reauth", b"created")
    assert tampered != body
    assert not verify_signature(SECRET, header, tampered, NOW)
    assert not verify_signature(SECRET, header, body + b" ", NOW)


def test_an_old_or_future_timestamp_does_not_verify() -> None:
    body = event_body(event())
    header = sign(SECRET, body, NOW)
    assert not verify_signature(SECRET, header, body, NOW + 301)  # a replayed delivery
    assert not verify_signature(SECRET, header, body, NOW - 301)  # clock far behind
    assert verify_signature(SECRET, header, body, NOW + 3000, tolerance=3600)


def test_another_secret_does_not_verify() -> None:
    body = event_body(event())
    assert not verify_signature("another-secret", sign(SECRET, body, NOW), body, NOW)


def test_several_v1_values_verify_if_one_matches() -> None:
    body = b"{}"
    good = sign(SECRET, body, NOW)
    stale = sign("the-old-secret", body, NOW).split(",")[1]
    assert verify_signature(SECRET, f"{good},{stale}", body, NOW)
    assert verify_signature(SECRET, f"{stale}, {good}", body, NOW)


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
    assert not verify_signature(SECRET, header, b"{}", NOW)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=256), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_flipping_any_bit_of_the_body_breaks_the_signature(
    body: bytes, position: int, bit: int
) -> None:
    header = sign(SECRET, body, NOW)
    assert verify_signature(SECRET, header, body, NOW)
    if body:
        i = position % len(body)
        flipped = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
        assert not verify_signature(SECRET, header, flipped, NOW)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        sign("", b"{}", NOW)


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
