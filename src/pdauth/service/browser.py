"""Per-request browser state for the page endpoints: the signed session and who the owner is.

A :class:`Page` reads the signed session cookie (creating a session when there is none), knows
the owner (the embedding host's ``owner_resolver``, else the owner a connect-session link signed
the browser in as), checks POSTed forms against the session's CSRF token (docs/SECURITY.md item
39) and writes the session back when it changed.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pdauth.connections import Connection
from pdauth.service.cookies import BrowserSession, new_session
from pdauth.service.core import service_of

__all__ = ["Page", "limited", "owned_connection", "too_many"]

Endpoint = Callable[[Request], Awaitable[Response]]


class Page:
    """Per-request browser state: the signed session (created when missing) and the owner."""

    def __init__(self, request: Request) -> None:
        self.service = service = service_of(request)
        self.request = request
        self.now = service.clock.now()
        existing = service.cookies.read_session(request, self.now)
        self.had_session = existing is not None
        self.session: BrowserSession = existing or new_session(self.now)
        self.dirty = existing is None
        self._owner: str | None = None
        self._owner_known = False

    async def owner(self) -> str | None:
        if not self._owner_known:
            if self.service.owner_resolver is not None:
                self._owner = await self.service.resolved_owner(self.request)
            else:
                self._owner = self.session.owner_at(self.now)
            self._owner_known = True
        return self._owner

    def replace_session(self, session: BrowserSession) -> None:
        self.session = session
        self.dirty = True
        self._owner_known = False

    def finish(self, response: Response) -> Response:
        if self.dirty:
            self.service.cookies.write_session(response, self.session, now=self.now)
        return response

    def path(self, name: str, **params: Any) -> str:
        return self.service.path(self.request.scope, name, **params)

    async def render(self, template: str, context: dict[str, Any], status: int = 200) -> Response:
        full = {"owner": await self.owner(), "csrf": self.session.csrf, **context}
        return self.finish(
            self.service.renderer.render(self.request, template, full, status_code=status)
        )

    async def failure(self, kind: str, *, message: str | None = None) -> Response:
        """The friendly page for ``kind``; ``message`` replaces its text (no secret in it)."""
        context: dict[str, Any] = {"owner": await self.owner(), "csrf": self.session.csrf}
        if message is not None:
            context["message"] = message
        return self.finish(self.service.renderer.flow_failure(self.request, kind, context))

    async def checked_form(self, *, max_fields: int = 8) -> FormData:
        """The POSTed form when its CSRF token matches this session's; else 403/415."""
        content_type = self.request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise HTTPException(415)
        try:
            form = await self.request.form(max_files=0, max_fields=max_fields, max_part_size=4096)
        except HTTPException:
            raise
        except Exception:
            # Malformed or oversized forms are the client's fault, never a 500.
            raise HTTPException(400) from None
        token = form.get("csrf_token")
        if (
            not self.had_session
            or not isinstance(token, str)
            or not hmac.compare_digest(
                token.encode("utf-8", "replace"), self.session.csrf.encode("ascii")
            )
        ):
            raise HTTPException(403)
        return form


def too_many(request: Request, wait: float) -> Response:
    """The 429 page (or JSON body) with its ``Retry-After``."""
    response = service_of(request).renderer.error(request.scope, 429)
    response.headers["retry-after"] = str(int(wait))
    return response


def limited(action: str) -> Callable[[Endpoint], Endpoint]:
    """An endpoint behind the service's rate limit for ``action``: over it, the 429 page."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            wait = await service_of(request).rate_limited(request, action)
            if wait:
                return too_many(request, wait)
            return await endpoint(request)

        return guarded

    return wrap


async def owned_connection(page: Page) -> Connection:
    """The connection named in the path if it belongs to the current owner; else 404."""
    owner = await page.owner()
    connection_id = page.request.path_params["connection_id"]
    if owner is None or len(connection_id) > 64:
        raise HTTPException(404)
    connector = await page.service.connector()
    # Another owner's connection id is indistinguishable from an unknown one (docs/SECURITY.md
    # item 17): ConnectionNotFoundError becomes the same 404 at the app's edge.
    return await connector.get(connection_id, owner=owner)
