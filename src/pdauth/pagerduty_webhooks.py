"""PagerDuty's v3 webhook deliveries: the ``X-PagerDuty-Signature`` check and the event body.

PagerDuty signs every v3 webhook with each live secret of its subscription: the header is a
comma-separated list of ``v1=<hex>`` entries, each the HMAC-SHA256 of the raw request body
under one secret, and during a secret rotation it carries several (PagerDuty/developer-docs
``docs/webhooks/04-Signatures.md``). A delivery verifies when *any* entry equals the HMAC under
*any* secret we hold; every comparison runs in constant time and none exits early. Entries of
other versions are ignored, so a future scheme does not break receivers. The body is
``{"event": {...}}`` with ``id``, ``event_type``, ``resource_type``, ``occurred_at``, ``agent``,
``client`` and ``data`` (``01-Overview.md``); bodies are at most 256 KB.

This module is pure: no I/O, no clock, no logging; :func:`verify` never raises on bad input.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from pdauth.store.records import EVENT_TYPE, MAX_EVENT_TYPE

__all__ = [
    "MAX_BODY",
    "SIGNATURE_HEADER",
    "SUBSCRIPTION_HEADER",
    "WEBHOOK_ID_HEADER",
    "PagerDutyEvent",
    "parse_event",
    "receiver_verdict",
    "sign",
    "valid_webhook_id",
    "verify",
]

SIGNATURE_HEADER: Final = "X-PagerDuty-Signature"
WEBHOOK_ID_HEADER: Final = "X-Webhook-Id"
SUBSCRIPTION_HEADER: Final = "X-Webhook-Subscription"
MAX_BODY: Final = 256 * 1024
MAX_SIGNATURE_HEADER: Final = 8192
_HEX_MAC = re.compile(r"[0-9a-f]{64}")
# A PagerDuty event type becomes the pdauth event type "pagerduty.<type>".
_PDAUTH_PREFIX: Final = "pagerduty."
_WEBHOOK_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Names PagerDuty's senders on the internet cannot resolve to this service.
_PRIVATE_SUFFIXES = (".local", ".localhost", ".internal", ".lan", ".home", ".test", ".invalid")


def _mac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def sign(secrets: Iterable[str], body: bytes) -> str:
    """The header PagerDuty sends for ``body``: one ``v1=`` entry per secret."""
    return ",".join(f"v1={_mac(s, body)}" for s in secrets)


def _entries(header: object) -> list[str] | None:
    if not isinstance(header, str) or not header or len(header) > MAX_SIGNATURE_HEADER:
        return None
    found: list[str] = []
    for part in header.split(","):
        version, sep, value = part.strip().partition("=")
        if sep and version == "v1" and _HEX_MAC.fullmatch(value):
            found.append(value)
    return found or None


def verify(secrets: Iterable[str], header: str | None, body: bytes) -> bool:
    """True if ``header`` carries a ``v1`` entry equal to HMAC-SHA256(secret, ``body``) for
    some secret in ``secrets`` (constant-time comparisons, all of them made)."""
    entries = _entries(header)
    keys = [s for s in secrets if isinstance(s, str) and s]
    if entries is None or not keys:
        return False
    raw = bytes(body)
    matches = [hmac.compare_digest(_mac(k, raw), e) for k in keys for e in entries]
    return any(matches)


def valid_webhook_id(value: object) -> bool:
    """Whether ``value`` can be an ``X-Webhook-Id`` (what de-duplication keys on)."""
    return isinstance(value, str) and _WEBHOOK_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class PagerDutyEvent:
    """One verified v3 event. ``data`` is the resource (the incident …) as PagerDuty sent it."""

    id: str
    event_type: str
    resource_type: str
    occurred_at: str
    agent: Mapping[str, Any] | None = field(default=None, repr=False)
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @property
    def pdauth_type(self) -> str:
        """The pdauth event type it becomes: ``pagerduty.`` + PagerDuty's event type."""
        return _PDAUTH_PREFIX + self.event_type


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_event(body: bytes) -> PagerDutyEvent | None:
    """The event in a delivery body, or None when it is not a v3 event body."""
    if len(body) > MAX_BODY:
        return None
    try:
        # NaN / Infinity are not JSON (RFC 8259): refused here, they could not be stored.
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    event = payload.get("event") if isinstance(payload, dict) else None
    if not isinstance(event, dict):
        return None
    event_id, event_type = event.get("id"), event.get("event_type")
    resource, occurred = event.get("resource_type"), event.get("occurred_at")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 128):
        return None
    if not (isinstance(event_type, str) and EVENT_TYPE.fullmatch(event_type)):
        return None
    if len(_PDAUTH_PREFIX + event_type) > MAX_EVENT_TYPE:  # must fit a pdauth event type
        return None
    agent, data = event.get("agent"), event.get("data")
    return PagerDutyEvent(
        id=event_id,
        event_type=event_type,
        resource_type=resource if isinstance(resource, str) else "",
        occurred_at=occurred if isinstance(occurred, str) else "",
        agent=MappingProxyType(agent) if isinstance(agent, dict) else None,
        data=MappingProxyType(data if isinstance(data, dict) else {}),
    )


def receiver_verdict(url: str) -> tuple[str, str]:
    """``("OK" | "WARN" | "FAIL", why)`` for a receiver URL PagerDuty must reach: https on a
    public-looking host is OK; a loopback, private or single-label host is a WARN (fine with
    the emulator, unreachable for PagerDuty); plain http elsewhere is a FAIL (the events and
    their signatures would cross the network in the clear)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        private = not address.is_global
    else:
        private = host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES)
    loopback = host == "localhost" or (address is not None and address.is_loopback)
    if parts.scheme != "https" and not loopback:
        return "FAIL", f"the receiver URL {url} is not https"
    if private or parts.scheme != "https":
        return "WARN", f"the receiver URL {url} is not reachable from PagerDuty (not public)"
    return "OK", f"PagerDuty delivers to {url}"
