"""The browser-facing routes: home, connect, callback, connection pages, connect-session links,
the admin view, static CSS and health.

Every state change is a POST carrying the session's CSRF token (SECURITY-CHECKLIST.md item 39);
GETs only read. ``POST /connect`` starts a flow through ``Connector.begin`` and files the flow's
browser binding in an HttpOnly, SameSite=Lax cookie tagged with the owner it was made for; the
cookie keeps the bindings of up to ten pending flows, so several tabs can connect at once
(items 2, 5). The callback refuses, *before* the Connector consumes anything or calls
PagerDuty, a browser that holds no binding for the callback's state or is signed in as another
owner; then ``Connector.complete_with_return_to`` consumes the state once, checks binding and
owner, and exchanges the code. The answer is a 303 to a clean URL (the ``return_to`` stored
with the pending authorization, or the home page) with ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store`` (item 12), and every failure is a friendly page with no secret and
no attacker-chosen text in it (item 13). ``/connect`` and the callback are rate-limited per
client (item 42).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pdauth.connections import Connection
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    CallbackError,
    ConnectionNotFoundError,
    FlowExpiredError,
    IdTokenError,
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    NeedsReauthError,
    OAuthError,
    PagerDutyAPIError,
    PdauthError,
    ScopeError,
    StoreError,
    TransportError,
    UnknownStateError,
)
from pdauth.service.app import Service
from pdauth.service.connect_sessions import ConnectSession
from pdauth.service.cookies import BindingCookie, BrowserSession, FlowBinding, new_session
from pdauth.service.returnto import safe_return_to
from pdauth.service.views import connection_view

__all__ = ["routes"]

_CSS = files("pdauth.service").joinpath("static/pdauth.css").read_bytes()
_UNAVAILABLE_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


class Page:
    """Per-request browser state: the signed session (created when missing) and the owner."""

    def __init__(self, service: Service, request: Request) -> None:
        self.service = service
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
            self.service.cookies.write_session(response, self.session)
        return response

    async def render(self, template: str, context: dict[str, Any], status: int = 200) -> Response:
        full = {"owner": await self.owner(), "csrf": self.session.csrf, **context}
        return self.finish(
            self.service.renderer.render(self.request, template, full, status_code=status)
        )

    async def failure(self, kind: str) -> Response:
        context = {"owner": await self.owner(), "csrf": self.session.csrf}
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


def _too_many(service: Service, request: Request, wait: float) -> Response:
    response = service.renderer.error(request.scope, 429)
    response.headers["retry-after"] = str(int(wait))
    return response


def routes(service: Service) -> list[Route]:
    """The page routes, closed over ``service``."""

    async def home(request: Request) -> Response:
        page = Page(service, request)
        owner = await page.owner()
        connections: list[dict[str, Any]] = []
        if owner is not None:
            connector = await service.connector()
            connections = [connection_view(c) for c in await connector.connections(owner)]
        return await page.render("home.html", {"title": "Connections", "connections": connections})

    async def connect(request: Request) -> Response:
        wait = service.rate_limited(request, "connect")
        if wait:
            return _too_many(service, request, wait)
        page = Page(service, request)
        form = await page.checked_form()
        return_to = safe_return_to(form.get("return_to"))
        if form.get("connect_session") == "1" and service.owner_resolver is None:
            link = page.session.pending_link
            if link is None or not await service.connect_sessions.redeem(link):
                page.replace_session(_without_link(page.session))
                return await page.failure("link_used")
            # Opening a connect link is this browser's sign-in: new session id and CSRF token.
            page.replace_session(
                page.session.rotated(
                    page.now,
                    owner=link.owner,
                    owner_until=page.now + service.options.owner_session_seconds,
                    pending_link=None,
                )
            )
            return_to = link.return_to
        owner = await page.owner()
        if owner is None:
            return await page.failure("not_signed_in")
        return await _begin(service, page, owner, return_to)

    async def callback(request: Request) -> Response:
        wait = service.rate_limited(request, "callback")
        if wait:
            return _too_many(service, request, wait)
        page = Page(service, request)
        owner = await page.owner()
        if owner is None and service.owner_resolver is not None:
            # Embedded: the host says nobody is signed in; the flow stays bound to its owner.
            return await page.failure("not_signed_in")
        query = request.scope.get("query_string", b"").decode("latin-1")
        state = _single_state(query)
        binding: str | None = None
        if state is not None:
            cookie = service.cookies.read_binding(request, page.now)
            flow = cookie.find(service.cookies.state_tag(state)) if cookie is not None else None
            if cookie is None or flow is None:
                # This browser did not start that flow (or its cookie expired): refuse before
                # anything is consumed or PagerDuty is called.
                return await page.failure("other_browser")
            if owner is not None and not service.cookies.binding_matches_owner(cookie, owner):
                return await page.failure("other_browser")
            binding = flow.binding
        # A missing or repeated state is left to the Connector, which refuses the malformed
        # callback (CallbackError) before consuming anything.
        connector = await service.connector()
        try:
            completed, return_to = await connector.complete_with_return_to(
                query, binding, owner=owner
            )
        except PdauthError as exc:
            return await page.failure(_failure_kind(exc))
        if owner is None and service.owner_resolver is None:
            # The binding proved this browser started the flow for this owner.
            page.replace_session(
                page.session.rotated(
                    page.now,
                    owner=completed.owner,
                    owner_until=page.now + service.options.owner_session_seconds,
                )
            )
        target = safe_return_to(return_to) or service.renderer.path(request.scope, "home")
        return page.finish(RedirectResponse(target, status_code=303))

    async def connection_page(request: Request) -> Response:
        page = Page(service, request)
        connection = await _owned_connection(service, page)
        context: dict[str, Any] = {
            "title": connection_view(connection)["subdomain"] or "Connection",
            "c": connection_view(connection),
            "tried": False,
        }
        if request.query_params.get("try") == "1" and context["c"]["status"] == "active":
            context.update(await _try_it(service, connection))
        return await page.render("connection.html", context)

    async def disconnect_confirm(request: Request) -> Response:
        page = Page(service, request)
        connection = await _owned_connection(service, page)
        return await page.render(
            "disconnect.html",
            {
                "title": "Disconnect",
                "c": connection_view(connection),
                "revocation_supported": service.settings.revocation_endpoint is not None,
                "action": "disconnect",
            },
        )

    async def disconnect(request: Request) -> Response:
        page = Page(service, request)
        await page.checked_form()
        connection = await _owned_connection(service, page)
        connector = await service.connector()
        await connector.disconnect(connection.id, owner=connection.owner)
        return page.finish(
            RedirectResponse(service.renderer.path(request.scope, "home"), status_code=303)
        )

    async def connect_session(request: Request) -> Response:
        wait = service.rate_limited(request, "connect")
        if wait:
            return _too_many(service, request, wait)
        page = Page(service, request)
        # The token rides in the query as ``token=`` so that pdauth's log redaction (which
        # masks ``token=…`` in access-log lines) keeps it out of the logs.
        link = service.connect_sessions.open(request.query_params.get("token", ""))
        if link is None or service.owner_resolver is not None:
            return await page.failure("link_used")
        # Only remembered here; the link is used up when the user presses the button, so mail
        # scanners and link previews that fetch the URL do not spend it.
        page.replace_session(_without_link(page.session, link))
        return await page.render(
            "connect_session.html",
            {
                "title": "Connect PagerDuty",
                "session_owner": link.owner,
                "expires_at": link.expires_at,
            },
        )

    async def admin(request: Request) -> Response:
        page = Page(service, request)
        if not page.session.is_admin(page.now):
            return await page.render(
                "admin_login.html",
                {
                    "title": "Admin sign-in",
                    "enabled": service.options.admin_password is not None,
                    "failed": False,
                },
            )
        connector = await service.connector()
        every = await connector.connections(None)
        counts: dict[str, int] = {}
        for c in every:
            counts[c.status] = counts.get(c.status, 0) + 1
        return await page.render(
            "admin.html",
            {
                "title": "All connections",
                "connections": [connection_view(c) for c in every[:1000]],
                "counts": counts,
                "next_after": None,
            },
        )

    async def admin_login(request: Request) -> Response:
        wait = service.rate_limited(request, "admin")
        if wait:
            return _too_many(service, request, wait)
        page = Page(service, request)
        form = await page.checked_form()
        expected = service.options.admin_password
        password = form.get("password")
        if expected is None or not isinstance(password, str) or not _same(password, expected):
            return await page.render(
                "admin_login.html",
                {"title": "Admin sign-in", "enabled": expected is not None, "failed": True},
                status=403 if expected is not None else 404,
            )
        page.replace_session(
            page.session.rotated(
                page.now, admin_until=page.now + service.options.admin_session_seconds
            )
        )
        return page.finish(
            RedirectResponse(service.renderer.path(request.scope, "admin"), status_code=303)
        )

    async def admin_logout(request: Request) -> Response:
        page = Page(service, request)
        await page.checked_form()
        page.replace_session(page.session.rotated(page.now, admin_until=None))
        return page.finish(
            RedirectResponse(service.renderer.path(request.scope, "home"), status_code=303)
        )

    async def admin_disconnect(request: Request) -> Response:
        page = Page(service, request)
        await page.checked_form()
        if not page.session.is_admin(page.now):
            raise HTTPException(403)
        connector = await service.connector()
        try:
            await connector.disconnect(request.path_params["connection_id"])
        except ConnectionNotFoundError:
            raise HTTPException(404) from None
        return page.finish(
            RedirectResponse(service.renderer.path(request.scope, "admin"), status_code=303)
        )

    async def static_css(request: Request) -> Response:
        return Response(
            _CSS,
            media_type="text/css",
            headers={"cache-control": "public, max-age=3600"},
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def robots(request: Request) -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    return [
        Route("/", home, methods=["GET"], name="home"),
        Route("/connect", connect, methods=["POST"], name="connect"),
        Route("/callback", callback, methods=["GET"], name="callback"),
        Route(
            "/connections/{connection_id}",
            connection_page,
            methods=["GET"],
            name="connection",
        ),
        Route(
            "/connections/{connection_id}/disconnect",
            disconnect_confirm,
            methods=["GET"],
            name="disconnect_confirm",
        ),
        Route(
            "/connections/{connection_id}/disconnect",
            disconnect,
            methods=["POST"],
            name="disconnect",
        ),
        Route("/connect-session", connect_session, methods=["GET"], name="connect_session"),
        Route("/admin", admin, methods=["GET"], name="admin"),
        Route("/admin/login", admin_login, methods=["POST"], name="admin_login"),
        Route("/admin/logout", admin_logout, methods=["POST"], name="admin_logout"),
        Route(
            "/admin/connections/{connection_id}/disconnect",
            admin_disconnect,
            methods=["POST"],
            name="admin_disconnect",
        ),
        Route("/static/pdauth.css", static_css, methods=["GET"], name="static_css"),
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/robots.txt", robots, methods=["GET"], name="robots"),
    ]


def _without_link(session: BrowserSession, link: ConnectSession | None = None) -> BrowserSession:
    return replace(session, pending_link=link)


def _same(presented: str, expected: str) -> bool:
    # Hash both sides first so compare_digest sees equal lengths and learns nothing of either.
    a = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


async def _begin(service: Service, page: Page, owner: str, return_to: str | None) -> Response:
    cookies = service.cookies
    connector = await service.connector()
    try:
        start = await connector.begin(owner, return_to=return_to)
    except StoreError:
        return await page.failure("storage")
    existing = cookies.read_binding(page.request, page.now)
    owner_tag = cookies.owner_tag(owner)
    if existing is None or not cookies.binding_matches_owner(existing, owner):
        # Another owner's flows in this browser end here; this owner's tabs keep theirs.
        existing = BindingCookie(owner_tag)
    flow = FlowBinding(cookies.state_tag(start.state), start.binding, page.now)
    response = RedirectResponse(start.url, status_code=303)
    cookies.write_binding(response, existing.with_flow(flow))
    return page.finish(response)


def _single_state(query: str) -> str | None:
    """The callback's ``state`` when it appears exactly once, else ``None``."""
    try:
        values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "state"]
    except ValueError:
        return None
    return values[0] if len(values) == 1 and values[0] else None


def _failure_kind(exc: PdauthError) -> str:
    """Which friendly page a failed callback gets (checked most specific first)."""
    if isinstance(exc, AuthorizationDeniedError):
        if exc.error == "access_denied":
            return "denied"
        if exc.error in _UNAVAILABLE_ERRORS:
            return "unavailable"
        if exc.error == "invalid_scope":
            return "scopes"
        return "pagerduty_error"
    if isinstance(exc, CallbackError):
        return "invalid"
    if isinstance(exc, UnknownStateError):
        return "replayed"
    if isinstance(exc, FlowExpiredError):
        return "expired"
    if isinstance(exc, BindingMismatchError):
        return "other_browser"
    if isinstance(exc, InsufficientScopeError):
        return "scopes"
    if isinstance(exc, InvalidClientError):
        return "misconfigured"
    if isinstance(exc, InvalidGrantError):
        return "code_rejected"
    if isinstance(exc, IdTokenError):
        return "identity"
    if isinstance(exc, TransportError):
        return "unavailable"
    if isinstance(exc, StoreError):
        return "storage"
    if isinstance(exc, OAuthError):
        return "unavailable" if exc.error in _UNAVAILABLE_ERRORS else "pagerduty_error"
    return "pagerduty_error"


async def _owned_connection(service: Service, page: Page) -> Connection:
    """The connection named in the path if it belongs to the current owner; else 404."""
    owner = await page.owner()
    connection_id = page.request.path_params["connection_id"]
    if owner is None or len(connection_id) > 64:
        raise HTTPException(404)
    connector = await service.connector()
    try:
        # Another owner's connection id is indistinguishable from an unknown one (item 17).
        return await connector.get(connection_id, owner=owner)
    except ConnectionNotFoundError:
        raise HTTPException(404) from None


async def _try_it(service: Service, connection: Connection) -> dict[str, Any]:
    """First users and open incidents through PagerDutyClient, for the "try it" panel."""
    try:
        async with await service.pd_client(connection) as client:
            users = await client.get("/users", params={"limit": 5})
            incidents = await client.get(
                "/incidents",
                params={"statuses[]": ["triggered", "acknowledged"], "limit": 5},
            )
    except PdauthError as exc:
        return {"tried": True, "try_error": _try_error(exc)}
    return {
        "tried": True,
        "try_error": None,
        "users": [_pick(u, "name", "email") for u in _entities(users, "users")][:5],
        "incidents": [
            _pick(i, "incident_number", "title", "status", "urgency")
            for i in _entities(incidents, "incidents")
        ][:5],
    }


def _entities(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else body
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _pick(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    picked = {key: item.get(key) for key in keys}
    if "incident_number" in picked:
        picked["number"] = picked.pop("incident_number")
    return picked


def _try_error(exc: PdauthError) -> str:
    if isinstance(exc, NeedsReauthError):
        return "PagerDuty no longer accepts this connection. Reconnect to restore it."
    if isinstance(exc, ScopeError):
        return "This connection lacks the PagerDuty permission for that call."
    if isinstance(exc, TransportError):
        return "PagerDuty could not be reached. Try again in a moment."
    if isinstance(exc, PagerDutyAPIError):
        return f"PagerDuty answered with status {exc.status}."
    return "The call to PagerDuty failed."
