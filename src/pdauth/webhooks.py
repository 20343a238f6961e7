"""Webhooks: pdauth's outbox events POSTed to the host application, signed with HMAC-SHA256.

The keeper (:mod:`pdauth.keeper`) delivers every outbox event — ``connection.created``,
``.reconnected``, ``.revoked``, ``.needs_reauth`` … — to ``PDAUTH_WEBHOOK_URL`` at least once,
retrying with backoff, so a host app learns at once that a customer's connection needs
re-authorization. A delivery is ``POST`` with a JSON body::

    {"id": 42, "type": "connection.needs_reauth", "connection_id": "…", "owner": "…",
     "created_at": "2027-01-15T08:00:00.000Z", "data": {…}}

and three headers: ``X-Pdauth-Event-Id`` (the event id again: a retried delivery carries the
same one, so keep the ids you processed and ignore repeats), ``X-Pdauth-Event-Type``, and
``X-Pdauth-Signature: t=<unix seconds>,v1=<hex>,v2=<hex>``, each an HMAC-SHA256 with
``PDAUTH_WEBHOOK_SECRET``: ``v2`` over ``"<t>.<event id>." + body`` (the timestamp, the event
id header and the body), ``v1`` over ``"<t>." + body`` (the body only: the event id header is
not covered). ``data`` never holds a secret (ciphertext members, ``*_ct``, are dropped). Any
2xx answer is success; anything else, a redirect or no answer within
``PDAUTH_WEBHOOK_TIMEOUT`` is retried later.

To verify in the host app, read the raw body bytes (before any JSON parsing) and call
:func:`verify_signature` with the event id header; it returns the verified event (or None) —
or, without pdauth: split the header on ``,`` into ``t`` and ``v2`` values; refuse if
``|now - t| > 300`` (a replayed old delivery); compute
``hmac.new(secret, f"{t}.{event_id}.".encode() + body, hashlib.sha256).hexdigest()`` and
compare it with each ``v2`` using ``hmac.compare_digest`` (constant time); check that the
event id is the body's ``id``. Then de-duplicate on the event id.

Transition from v1: senders before signature version 2 (pdauth before this release) sent only
``v1``. Every delivery now carries both; a receiver checks ``v2`` and, while it may still
receive deliveries from an older pdauth, accepts a ``v1``-only signature by passing
``allow_v1=True`` — and then takes the event id from the verified body (what
:class:`VerifiedEvent` ``.id`` holds), never from the unsigned header. ``v1`` will be dropped
from deliveries in a later release; a header that carries ``v2`` is judged by ``v2`` alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Literal

import anyio
import httpx
from pydantic import SecretStr

from pdauth.client.http import http_client
from pdauth.clock import Clock, SystemClock
from pdauth.store import EventRow

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryResult",
    "VerifiedEvent",
    "WebhookSender",
    "event_body",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Pdauth-Signature"
EVENT_ID_HEADER: Final = "X-Pdauth-Event-Id"
EVENT_TYPE_HEADER: Final = "X-Pdauth-Event-Type"
DEFAULT_TOLERANCE = 300.0
MAX_HEADER_LENGTH = 4096
_MAX_RESPONSE_READ = 4096  # the answer's body is not used; read a little, then stop
_HEX_MAC = re.compile(r"[0-9a-f]{64}")
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Secret = str | bytes | SecretStr


def _key(secret: Secret) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ValueError("the webhook secret must not be empty")
    return secret


def _mac(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def _mac_v2(key: bytes, timestamp: int, event_id: str, body: bytes) -> str:
    signed = f"{timestamp}.{event_id}.".encode("ascii") + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def _event_id(value: object) -> str | None:
    """``value`` as the event id a v2 signature covers, or None if it cannot be one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        value = str(value)
    if isinstance(value, str) and _EVENT_ID.fullmatch(value):
        return value
    return None


def sign(
    secret: Secret, body: bytes, timestamp: float, *, event_id: str | int | None = None
) -> str:
    """The ``X-Pdauth-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds).

    With ``event_id`` (the ``X-Pdauth-Event-Id`` value) it carries ``v1`` and ``v2``, as
    deliveries do; without, ``v1`` alone (what senders before version 2 sent).
    """
    key = _key(secret)
    t = int(timestamp)
    header = f"t={t},v1={_mac(key, t, body)}"
    if event_id is not None:
        checked = _event_id(event_id)
        if checked is None:
            raise ValueError("event_id must be 1-64 letters, digits, '_' or '-'")
        header += f",v2={_mac_v2(key, t, checked, body)}"
    return header


@dataclass(frozen=True)
class VerifiedEvent:
    """A delivery whose signature verified.

    ``version``: the signature that verified (``"v2"``, or ``"v1"`` when the caller allowed
    it). ``id``: the event id the signature covers — for v2 the signed id, for v1 the body's
    ``id`` — never the unsigned header; None if a v1 body names none. ``payload``: the parsed
    JSON body (None if the body is not JSON). ``timestamp``: the signed ``t``.
    """

    version: Literal["v1", "v2"]
    timestamp: int
    id: str | None
    payload: Any

    @property
    def type(self) -> str | None:
        """The event type from the signed body (``connection.needs_reauth`` …)."""
        value = self.payload.get("type") if isinstance(self.payload, dict) else None
        return value if isinstance(value, str) else None


@dataclass
class _Parsed:
    timestamp: int
    v1: list[str]
    v2: list[str]


def _parse_header(header: object) -> _Parsed | None:
    if not isinstance(header, str) or not header or len(header) > MAX_HEADER_LENGTH:
        return None
    timestamp: int | None = None
    v1: list[str] = []
    v2: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if name == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return None
            if len(value) > 15:  # far beyond any plausible time; would overflow a float
                return None
            timestamp = int(value)
        elif name in ("v1", "v2") and _HEX_MAC.fullmatch(value):
            (v1 if name == "v1" else v2).append(value)
        # Other schemes (a future v3) are ignored, as are malformed values.
    if timestamp is None or not (v1 or v2):
        return None
    return _Parsed(timestamp, v1, v2)


def _any_matches(expected: str, candidates: list[str]) -> bool:
    # Compare with every candidate (no early exit), in constant time each.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    return any(matches)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def verify_signature(
    secret: Secret,
    header: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    event_id: str | None = None,
    allow_v1: bool = False,
    clock: Clock | None = None,
) -> VerifiedEvent | None:
    """The verified event if ``header`` is a valid ``X-Pdauth-Signature`` for ``body``, else
    None; signed with ``secret`` no more than ``tolerance`` seconds from ``now`` (either way;
    default: ``clock``'s time, the system clock unless given).

    ``body`` must be the raw request bytes; ``event_id`` the ``X-Pdauth-Event-Id`` header (when
    omitted, the body's ``id`` is the id checked). A header with ``v2`` entries is judged by
    them alone, and the event id must also be the body's. A ``v1``-only header verifies only
    with ``allow_v1=True`` (deliveries from a pdauth before signature version 2). Several
    entries of a version are accepted (any may match). Never raises on a malformed header or
    body: it simply does not verify.
    """
    parsed = _parse_header(header)
    if parsed is None:
        return None
    moment = (clock or SystemClock()).now() if now is None else float(now)
    if not abs(moment - parsed.timestamp) <= tolerance:
        return None
    key = _key(secret)
    raw = bytes(body)
    if parsed.v2:
        return _verify_v2(key, parsed, raw, event_id)
    if not allow_v1 or not _any_matches(_mac(key, parsed.timestamp, raw), parsed.v1):
        return None
    payload = _json(raw)
    body_id = _event_id(payload.get("id")) if isinstance(payload, dict) else None
    return VerifiedEvent("v1", parsed.timestamp, body_id, payload)


def _verify_v2(
    key: bytes, parsed: _Parsed, body: bytes, event_id: str | None
) -> VerifiedEvent | None:
    payload = _json(body)
    body_id = _event_id(payload.get("id")) if isinstance(payload, dict) else None
    signed_id = body_id if event_id is None else _event_id(event_id)
    if signed_id is None or (body_id is not None and body_id != signed_id):
        return None
    if not _any_matches(_mac_v2(key, parsed.timestamp, signed_id, body), parsed.v2):
        return None
    return VerifiedEvent("v2", parsed.timestamp, signed_id, payload)


def _without_ciphertext(value: Any) -> Any:
    """``value`` with every mapping member named ``*_ct`` removed, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): _without_ciphertext(v)
            for k, v in value.items()
            if not str(k).lower().endswith("_ct")
        }
    if isinstance(value, list | tuple):
        return [_without_ciphertext(item) for item in value]
    return value


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(event: EventRow) -> bytes:
    """The JSON body delivered for ``event`` (compact, keys sorted, no ciphertext)."""
    payload = {
        "id": event.id,
        "type": event.type,
        "connection_id": event.connection_id,
        "owner": event.owner,
        "created_at": _iso(event.created_at),
        "data": _without_ciphertext(event.data),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class DeliveryResult:
    """How one delivery attempt went. ``error`` is a short description without secrets."""

    delivered: bool
    status: int | None = None
    error: str | None = None


def _user_agent() -> str:
    try:
        return f"pdauth-webhook/{version('pdauth')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "pdauth-webhook"


class WebhookSender:
    """Signs and POSTs events to one URL; holds an ``httpx.AsyncClient`` (closes it if it
    made it). ``timeout`` bounds a whole attempt, whatever the transport."""

    def __init__(
        self,
        url: str,
        secret: Secret,
        *,
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("give either an httpx.AsyncClient or a transport, not both")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._url = url
        self._key = _key(secret)
        self._timeout = float(timeout)
        self._http, self._owns_http = http_client(http, transport, self._timeout)
        self._user_agent = _user_agent()

    def __repr__(self) -> str:
        return f"WebhookSender(url={self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def headers(self, event: EventRow, body: bytes, now: float) -> dict[str, str]:
        """The headers of a delivery of ``event`` with ``body`` signed at ``now``."""
        t = int(now)
        event_id = str(event.id)
        # v1 stays during the transition to v2 (see the module docstring).
        v1, v2 = _mac(self._key, t, body), _mac_v2(self._key, t, event_id, body)
        return {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event.type,
            SIGNATURE_HEADER: f"t={t},v1={v1},v2={v2}",
        }

    async def deliver(self, event: EventRow, now: float) -> DeliveryResult:
        """One attempt to deliver ``event``, signed at ``now``; never raises for the network
        or the receiver's answer."""
        body = event_body(event)
        headers = self.headers(event, body, now)
        try:
            # httpx's timeout does not bound an in-process transport; this bounds both.
            with anyio.fail_after(self._timeout):
                async with self._http.stream(
                    "POST", self._url, content=body, headers=headers
                ) as response:
                    read = 0
                    async for chunk in response.aiter_bytes():
                        read += len(chunk)
                        if read >= _MAX_RESPONSE_READ:
                            break
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return DeliveryResult(False, None, "the receiver did not answer in time")
        except httpx.HTTPError as exc:
            return DeliveryResult(
                False, None, f"could not reach the receiver ({type(exc).__name__})"
            )
        if 200 <= status < 300:
            return DeliveryResult(True, status)
        return DeliveryResult(False, status, f"the receiver answered HTTP {status}")
