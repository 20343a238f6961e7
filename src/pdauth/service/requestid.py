"""Request ids: one per request, carried in pdauth's log context and echoed to the client.

A pure ASGI middleware (outermost in ``create_app``) accepts an inbound ``X-Request-ID`` only
when it is short and made of ``[A-Za-z0-9._-]`` — anything else (a header a client controls
could carry log-injection text or a secret) is replaced by a fresh random id — then runs the
request inside :func:`pdauth.logs.log_context` so every log line of that request carries
``request_id``, and sets ``X-Request-ID`` on the response so a user can quote it in a report.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdauth.logs import log_context

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_from"]

REQUEST_ID_HEADER: Final = "x-request-id"
_VALID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCOPE_KEY: Final = "pdauth.request_id"


def request_id_from(value: str | None) -> str:
    """The inbound id when it is sane, else a new random one (16 hex digits)."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return secrets.token_hex(8)


class RequestIdMiddleware:
    """Assigns a request id, logs under it, and echoes it in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope[SCOPE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)
