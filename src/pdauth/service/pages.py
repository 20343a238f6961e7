"""The owner's pages: home (their connections), one connection with its "try it" panel,
disconnect and remove, plus the static CSS, ``/healthz`` and ``robots.txt``.

Every state change is a POST carrying the session's CSRF token (docs/SECURITY.md item 39); GETs
only read. A connection is shown only to its owner: another owner's id is a 404 like an unknown
one (item 17). Each endpoint is a module-level function; the app's
:class:`~pdauth.service.core.Service` comes from the request.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pdauth.connections import Connection
from pdauth.errors import (
    NeedsReauthError,
    PagerDutyAPIError,
    PdauthError,
    ScopeError,
    TransportError,
)
from pdauth.service.browser import Page, owned_connection, too_many
from pdauth.service.views import connection_view
from pdauth.subscriptions import events_of

__all__ = ["ROUTES"]

_CSS = files("pdauth.service").joinpath("static/pdauth.css").read_bytes()
_REMOVABLE = ("revoked",)


async def home(request: Request) -> Response:
    page = Page(request)
    owner = await page.owner()
    connections: list[dict[str, Any]] = []
    if owner is not None:
        connector = await page.service.connector()
        connections = [connection_view(c) for c in await connector.connections(owner)]
    return await page.render(
        "home.html",
        {"title": "Connections", "connections": connections, "flash": _take_flash(page)},
    )


def _take_flash(page: Page) -> str | None:
    """The one-time message a previous step left (e.g. "connected"), cleared once shown."""
    flash = page.session.flash
    if flash is not None:
        page.replace_session(page.session.without_flash())
    return flash


async def connection_page(request: Request) -> Response:
    page = Page(request)
    connection = await owned_connection(page)
    context: dict[str, Any] = {"tried": False, "flash": _take_flash(page)}
    if request.query_params.get("try") == "1" and connection.status == "active":
        wait = await page.service.try_limiter.hit(f"try|{connection.owner}")
        if wait:
            return too_many(request, wait)
        context.update(await _try_it(page, connection))
        if context.get("dead") or context.get("needs_scopes"):
            # Found dead (or short of scopes) on use: show what PagerDuty's answer left.
            connection = await owned_connection(page)
    view = connection_view(connection)
    context.update({"title": view["subdomain"] or "Connection", "c": view})
    if not context["tried"]:  # a page that called PagerDuty is not reloaded by itself
        context.update(await _pagerduty_events(page, connection))
    return await page.render("connection.html", context)


async def _pagerduty_events(page: Page, connection: Connection) -> dict[str, Any]:
    """The connection's PagerDuty webhook subscription and its latest incident events, when
    ``PDAUTH_PAGERDUTY_EVENTS`` is on (the page then reloads itself to show them live)."""
    connector = await page.service.connector()
    events = events_of(connector)
    if not events.enabled:
        return {}
    status = await events.status(connection.id)
    recent = await connector.store.recent_connection_events(
        connection.id, type_prefix="pagerduty.incident.", limit=10
    )
    return {"pd_events": status.to_json(), "pd_incidents": recent, "refresh_seconds": 5}


async def disconnect_confirm(request: Request) -> Response:
    page = Page(request)
    connection = await owned_connection(page)
    return await page.render(
        "disconnect.html",
        {
            "title": "Disconnect",
            "c": connection_view(connection),
            "revocation_supported": page.service.settings.revocation_endpoint is not None,
            "action": "disconnect",
        },
    )


async def disconnect(request: Request) -> Response:
    page = Page(request)
    await page.checked_form()
    connection = await owned_connection(page)
    connector = await page.service.connector()
    await connector.disconnect(connection.id, owner=connection.owner)
    return page.finish(RedirectResponse(page.path("home"), status_code=303))


async def remove(request: Request) -> Response:
    """Forget a revoked connection for good (its events stay as the audit trail)."""
    page = Page(request)
    await page.checked_form()
    connection = await owned_connection(page)
    if connection.status not in _REMOVABLE:
        raise HTTPException(409)
    connector = await page.service.connector()
    await connector.store.delete_connection(connection.id)
    return page.finish(RedirectResponse(page.path("home"), status_code=303))


async def _try_it(page: Page, connection: Connection) -> dict[str, Any]:
    """First users and open incidents through PagerDutyClient, for the "try it" panel."""
    try:
        async with await page.service.pd_client(connection) as client:
            users = await client.get("/users", params={"limit": 5})
            incidents = await client.get(
                "/incidents",
                params={"statuses[]": ["triggered", "acknowledged"], "limit": 5},
            )
    except PdauthError as exc:
        dead = isinstance(exc, NeedsReauthError)
        needs_scopes = isinstance(exc, ScopeError)
        return {
            "tried": True,
            "try_error": _try_error(exc),
            "dead": dead,
            "needs_scopes": needs_scopes,
        }
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
        return (
            "This connection lacks the PagerDuty permission for that call. Grant more access "
            "to add it."
        )
    if isinstance(exc, TransportError):
        return "PagerDuty could not be reached. Try again in a moment."
    if isinstance(exc, PagerDutyAPIError):
        return f"PagerDuty answered with status {exc.status}."
    return "The call to PagerDuty failed."


async def static_css(request: Request) -> Response:
    return Response(_CSS, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def robots(request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")


_ONE = "/connections/{connection_id}"

ROUTES: list[Route] = [
    Route("/", home, methods=["GET"], name="home"),
    Route(_ONE, connection_page, methods=["GET"], name="connection"),
    Route(_ONE + "/disconnect", disconnect_confirm, methods=["GET"], name="disconnect_confirm"),
    Route(_ONE + "/disconnect", disconnect, methods=["POST"], name="disconnect"),
    Route(_ONE + "/remove", remove, methods=["POST"], name="remove"),
    Route("/static/pdauth.css", static_css, methods=["GET"], name="static_css"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/robots.txt", robots, methods=["GET"], name="robots"),
]
