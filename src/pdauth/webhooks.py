"""Webhooks: pdauth's outbox events POSTed to the host application, signed with HMAC-SHA256.

The keeper (:mod:`pdauth.keeper`) delivers every outbox event — ``connection.created``,
``.reconnected``, ``.revoked``, ``.needs_reauth`` … — to ``PDAUTH_WEBHOOK_URL`` at least once,
retrying with backoff, so a host app learns at once that a customer's connection needs
re-authorization. A delivery is ``POST`` with a JSON body::

    {"id": 42, "type": "connection.needs_reauth", "connection_id": "…", "owner": "…",
     "created_at": "2027-01-15T08:00:00.000Z", "data": {…}}

and three headers: ``X-Pdauth-Event-Id`` (the event id again: a retried delivery carries the
same one, so keep the ids you processed and ignore repeats), ``X-Pdauth-Event-Type``, and
``X-Pdauth-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, the MAC computed with
``PDAUTH_WEBHOOK_SECRET`` over the bytes ``"<t>." + body``. ``data`` never holds a secret
(ciphertext members, ``*_ct``, are dropped). Any 2xx answer is success; anything else, a
redirect or no answer within ``PDAUTH_WEBHOOK_TIMEOUT`` is retried later.

To verify in the host app, read the raw body bytes (before any JSON parsing) and call
:func:`verify_signature` — or, without pdauth: split the header on ``,`` into ``t`` and
``v1`` values; refuse if ``|now - t| > 300`` (a replayed old delivery); compute
``hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()`` and compare it with
each ``v1`` using ``hmac.compare_digest`` (constant time). Then de-duplicate on the event id.
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
from typing import Any, Final

import anyio
import httpx
from pydantic import SecretStr

from pdauth.store import EventRow

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryResult",
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


def sign(secret: Secret, body: bytes, timestamp: float) -> str:
    """The ``X-Pdauth-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    t = int(timestamp)
    return f"t={t},v1={_mac(_key(secret), t, body)}"


def verify_signature(
    secret: Secret,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True if ``header`` is a valid ``X-Pdauth-Signature`` for ``body`` signed with
    ``secret`` no more than ``tolerance`` seconds from ``now`` (either way).

    ``body`` must be the raw request bytes. Several ``v1`` entries are accepted (any may
    match). Never raises on a malformed header: it simply does not verify.
    """
    if not isinstance(header, str) or not header or len(header) > MAX_HEADER_LENGTH:
        return False
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return False
            if len(value) > 15:  # far beyond any plausible time; would overflow a float
                return False
            timestamp = int(value)
        elif name == "v1" and _HEX_MAC.fullmatch(value):
            macs.append(value)
        # Other schemes (a future v2) are ignored, as are malformed v1 values.
    if timestamp is None or not macs:
        return False
    if not abs(float(now) - timestamp) <= tolerance:
        return False
    expected = _mac(_key(secret), timestamp, bytes(body))
    # Compare with every candidate (no early exit), in constant time each.
    matches = [hmac.compare_digest(expected, candidate) for candidate in macs]
    return any(matches)


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
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
        )
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
        return {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            EVENT_ID_HEADER: str(event.id),
            EVENT_TYPE_HEADER: event.type,
            SIGNATURE_HEADER: f"t={t},v1={_mac(self._key, t, body)}",
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
