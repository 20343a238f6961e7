"""Helpers of the webhook tests: a schema checker that knows the webhook operations, an
in-process receiver that records deliveries (and answers what a test scripts), a bounded wait,
and signature verification written from PagerDuty's 04-Signatures.md (no emulator code)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .test_rest_support import OPERATIONS, SchemaChecker

WEBHOOK_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("GET", "/webhook_subscriptions"),
    ("POST", "/webhook_subscriptions"),
    ("GET", "/webhook_subscriptions/{id}"),
    ("PUT", "/webhook_subscriptions/{id}"),
    ("DELETE", "/webhook_subscriptions/{id}"),
    ("POST", "/webhook_subscriptions/{id}/enable"),
    ("POST", "/webhook_subscriptions/{id}/ping"),
    ("GET", "/incidents/{id}"),
    ("PUT", "/incidents/{id}"),
)
RECEIVER = "http://receiver.test/pagerduty/webhooks"


class WebhookChecker(SchemaChecker):
    """The REST checker with the webhook operations added. PagerDuty's webhook error responses
    declare no body schema, so errors there are held to the generic error envelope; the ping's
    202 has no body."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self._patterns = [
            (m, t, re.compile(re.escape(t).replace(r"\{id\}", "[^/]+") + "/?"))
            for m, t in (*WEBHOOK_OPERATIONS, *OPERATIONS)
        ]

    def response_ref(self, method: str, template: str | None, status: int) -> str:
        if template is not None:
            response = self.document["paths"][template][method.lower()]["responses"]
            declared = response.get(str(status), {})
            ref = declared.get("$ref", "")
            target = (
                self.document["components"]["responses"].get(ref.rsplit("/", 1)[-1], {})
                if ref
                else declared
            )
            if "content" not in target:
                return self.GENERIC_ERROR
        return super().response_ref(method, template, status)

    def check(self, method: str, path: str, status: int, body: bytes, content_type: str) -> None:
        if status == 202:
            assert body == b""
            self.checked[(method, self.template(method, path) or "(unmatched)", status)] += 1
            return
        super().check(method, path, status, body, content_type)


@dataclass(frozen=True)
class Received:
    headers: httpx.Headers
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)["event"]
        return event

    @property
    def signatures(self) -> list[str]:
        return self.headers["x-pagerduty-signature"].split(",")


class Receiver:
    """An ASGI webhook receiver: records every request, answers the scripted statuses in
    order (then ``default``); ``changed`` fires on each request."""

    def __init__(self, default: int = 202) -> None:
        self.default = default
        self.script: deque[int] = deque()
        self.received: list[Received] = []
        self._changed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = Request(scope, receive)
        body = await request.body()
        self.received.append(Received(httpx.Headers(dict(request.headers)), body))
        status = self.script.popleft() if self.script else self.default
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with anyio.fail_after(timeout):
            while len(self.received) < count:
                await self._changed.wait()
        return self.received


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (between scheduler turns) until it holds, at most ``timeout`` s."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


def verifies(secret: str, received: Received) -> bool:
    """PagerDuty's documented check: any ``v1=`` entry equal to HMAC-SHA256(secret, body)."""
    expected = "v1=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s.strip()) for s in received.signatures)


def subscription_body(
    url: str = RECEIVER,
    events: list[str] | None = None,
    filter_: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "webhook_subscription",
        "delivery_method": {"type": "http_delivery_method", "url": url},
        "events": events or ["incident.triggered", "incident.acknowledged", "incident.resolved"],
        "filter": filter_ or {"type": "account_reference"},
        "description": "pdauth test",
    }
    spec.update(extra)
    return {"webhook_subscription": spec}
