"""The service's outermost layer: security headers, input size limits and the generic 500.

One pure ASGI middleware wraps every request of the app (docs/SECURITY.md items 35, 38,
43): it refuses oversized paths and query strings (414) and bodies (413, by Content-Length
up front and by counting as the body streams) before any routing, adds the security
headers to every response — pages, JSON, 404s, 413s, 429s and errors alike — unless a handler
set its own value, and turns any exception that escapes a handler into a generic 500 page or
JSON body with no stack trace, token, secret or SQL in it (the exception is logged server-side;
pdauth's messages never carry secrets). The Content-Security-Policy allows only same-origin
scripts, styles and images, no framing (``frame-ancestors 'none'``), and form submissions to
this origin plus the PagerDuty authorization endpoint's origin (Chromium applies
``form-action`` to the redirect that follows a form POST, and ``POST /connect`` answers 303 to
PagerDuty). HSTS is sent only when the service's public URL is https — decided from settings,
never from a request header a client could forge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ROOT_PATH_KEY", "BodyTooLargeError", "SecurityMiddleware", "SecurityPolicy"]

log = logging.getLogger("pdauth.service")

ROOT_PATH_KEY = "pdauth.root_path"

ErrorRenderer = Callable[[Scope, int], Response]


@dataclass(frozen=True)
class SecurityPolicy:
    """What the middleware enforces; built once from settings."""

    https: bool
    form_action_origins: tuple[str, ...] = ()
    max_path_length: int = 2048
    max_query_length: int = 4096
    max_body_size: int = 64 * 1024
    hsts_max_age: int = 31_536_000
    #: Routes whose bodies may be larger (path prefixes within the app, e.g. PagerDuty's
    #: webhook deliveries, up to 256 KB) and their limit.
    large_body_prefixes: tuple[str, ...] = ()
    large_body_size: int = 256 * 1024

    def body_limit(self, scope: Scope) -> int:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if any(path.startswith(prefix) for prefix in self.large_body_prefixes):
            return self.large_body_size
        return self.max_body_size

    def headers(self) -> list[tuple[str, str]]:
        form_action = " ".join(("'self'", *self.form_action_origins))
        csp = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; "
            "base-uri 'none'; object-src 'none'"
        )
        headers = [
            ("content-security-policy", csp),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
            ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()"),
            ("cache-control", "no-store"),
        ]
        if self.https:
            headers.append(
                ("strict-transport-security", f"max-age={self.hsts_max_age}; includeSubDomains")
            )
        return headers


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; rendered as a 413."""

    def __init__(self) -> None:
        super().__init__(413)


class SecurityMiddleware:
    """Security headers, size limits and the generic 500 around an ASGI app."""

    def __init__(self, app: ASGIApp, policy: SecurityPolicy, render_error: ErrorRenderer) -> None:
        self.app = app
        self.policy = policy
        self.render_error = render_error
        self._headers = policy.headers()

    def _add_headers(self, headers: MutableHeaders, extra: Iterable[tuple[str, str]]) -> None:
        for name, value in extra:
            if name not in headers:
                headers[name] = value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ROOT_PATH_KEY] = scope.get("root_path", "")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._add_headers(MutableHeaders(scope=message), self._headers)
            await send(message)

        path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
        if (
            len(path) > self.policy.max_path_length
            or len(scope.get("query_string", b"")) > self.policy.max_query_length
        ):
            await self.render_error(scope, 414)(scope, receive, send_with_headers)
            return
        limit = self.policy.body_limit(scope)
        declared = Headers(scope=scope).get("content-length", "0")
        if not declared.isdigit() or int(declared) > limit:
            status = 413 if declared.isdigit() else 400
            await self.render_error(scope, status)(scope, receive, send_with_headers)
            return
        received = 0

        async def receive_with_limit() -> Message:
            # A body sent without (or beyond) its Content-Length is counted as it streams.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError
            return message

        try:
            await self.app(scope, receive_with_limit, send_with_headers)
        except Exception:
            # The traceback goes to the server log; the browser sees a generic page. pdauth's
            # exception messages never contain secrets; the path is left out because a
            # connect-session path carries a link token.
            log.exception("unhandled error in a %s request", scope.get("method"))
            if not started:
                await self.render_error(scope, 500)(scope, receive, send_with_headers)
