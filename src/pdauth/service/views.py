"""Rendering: the Jinja2 environment, prefix-aware URLs, and the friendly error pages.

Templates live in ``service/templates`` and are rendered with autoescaping on for every file,
so nothing a user or PagerDuty sends can become markup. URLs are built from the app's own
router plus the prefix the app is mounted under (captured by the security middleware), never
hard-coded, so the service works at ``/`` and at ``/integrations/pagerduty`` alike; Starlette's
``request.url_for`` is not used because, when the app is mounted in a host app, it resolves
names against the host's router. :data:`FLOW_FAILURES` maps every way the callback can fail to a
page that says what happened and what to do, and holds no secret and no attacker-chosen text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Router
from starlette.types import Scope

from pdauth.connection_types import Connection, iso_time
from pdauth.service.security import ROOT_PATH_KEY
from pdauth.store import EventRow

__all__ = [
    "FLOW_FAILURES",
    "STATUS_LABELS",
    "ApiError",
    "FlowFailure",
    "Renderer",
    "connection_view",
    "event_json",
    "iso_time",
    "public_data",
]

TEMPLATES = Path(__file__).parent / "templates"

STATUS_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The request was not understood."),
    403: ("Not allowed", "Your session expired or the form is out of date. Reload the page."),
    404: ("Not found", "There is nothing here."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "The request is too large."),
    414: ("Address too long", "The address of this request is too long."),
    415: ("Unsupported content", "The request body has a type this address does not accept."),
    429: ("Slow down", "Too many attempts from your address. Wait a minute and try again."),
    500: ("Something went wrong", "An unexpected error occurred. Please try again later."),
    502: ("PagerDuty unavailable", "PagerDuty could not be reached. Please try again later."),
    503: ("Temporarily unavailable", "The service is busy. Please try again shortly."),
}

JSON_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    502: "pagerduty_unavailable",
    503: "unavailable",
}


class ApiError(HTTPException):
    """A JSON API error: a machine-readable ``code`` and a message with no secret in it."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FlowFailure:
    """One way the connect flow can fail, as the user sees it."""

    status: int
    heading: str
    message: str
    can_retry: bool = True


FLOW_FAILURES: dict[str, FlowFailure] = {
    "denied": FlowFailure(
        400,
        "Access was not granted",
        "PagerDuty reports that access was declined, so nothing was connected. If that was "
        "a mistake, start again and choose Approve.",
    ),
    "expired": FlowFailure(
        400,
        "This link has expired",
        "Connecting must be finished within 10 minutes of starting. Nothing was connected; "
        "please start again.",
    ),
    "replayed": FlowFailure(
        400,
        "This link was already used",
        "This sign-in response was already used or is unknown. If you reloaded the page or "
        "went back, check your connections; otherwise start again.",
    ),
    "other_browser": FlowFailure(
        400,
        "Finish in the browser where you started",
        "This response from PagerDuty belongs to a flow started in another browser, or by "
        "another user. For your safety nothing was connected. Start again from this browser.",
    ),
    "unavailable": FlowFailure(
        502,
        "PagerDuty is unavailable",
        "PagerDuty could not be reached or is having trouble. Nothing was connected; please "
        "try again in a few minutes.",
    ),
    "scopes": FlowFailure(
        400,
        "Permissions not granted",
        "PagerDuty did not grant the permissions this application needs, so nothing was "
        "connected. Start again and approve the requested access (an account administrator "
        "may need to allow the app).",
    ),
    "pagerduty_error": FlowFailure(
        400,
        "PagerDuty reported a problem",
        "PagerDuty could not complete the request. Nothing was connected; please start again.",
    ),
    "invalid": FlowFailure(
        400,
        "This response is not valid",
        "The response from PagerDuty was malformed or incomplete. Nothing was connected; "
        "please start again.",
    ),
    "code_rejected": FlowFailure(
        400,
        "PagerDuty did not accept the sign-in",
        "The sign-in took too long or was already used. Nothing was connected; please start again.",
    ),
    "identity": FlowFailure(
        400,
        "Could not verify the PagerDuty account",
        "PagerDuty's answer could not be verified, so nothing was connected. Please start "
        "again; if this keeps happening, contact the administrator.",
    ),
    "misconfigured": FlowFailure(
        502,
        "This application is misconfigured",
        "PagerDuty refused this application's credentials. Nothing was connected; the "
        "administrator has to fix the configuration.",
        can_retry=False,
    ),
    "storage": FlowFailure(
        503,
        "Could not save the connection",
        "The connection could not be saved. Nothing was kept; please try again shortly.",
    ),
    # A connect link meant for someone else (docs/SECURITY.md item 47). The page names who
    # it was meant for (the host named that value with its API key; never a secret).
    "unexpected_account": FlowFailure(
        403,
        "This link is for another PagerDuty account",
        "This link was meant for another PagerDuty account. Nothing was connected and the "
        "access just granted was withdrawn.",
        can_retry=False,
    ),
    "unexpected_user": FlowFailure(
        403,
        "This link is for another PagerDuty user",
        "This link was meant for another PagerDuty user. Nothing was connected and the "
        "access just granted was withdrawn.",
        can_retry=False,
    ),
    "connection_gone": FlowFailure(
        404,
        "This connection no longer exists",
        "The connection was disconnected while PagerDuty asked for more access, so nothing "
        "was changed. Connect PagerDuty again if you still need it.",
    ),
    "cannot_reconsent": FlowFailure(
        400,
        "This connection cannot be given more access",
        "Only a connection a PagerDuty user approved can be asked for more access. Nothing "
        "was changed.",
        can_retry=False,
    ),
    "link_used": FlowFailure(
        400,
        "This connect link cannot be used",
        "The link has expired or was already used. Ask the application for a new link.",
        can_retry=False,
    ),
    "not_signed_in": FlowFailure(
        403,
        "You are not signed in",
        "Sign in to the application (or open the connect link it gave you), then try again.",
        can_retry=False,
    ),
}


def _when(value: float | str | None) -> str:
    """A time for people: ``2026-11-27 20:58 UTC`` from a timestamp or an RFC 3339 string."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "—"
    else:
        moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Renderer:
    """Renders pages and error responses for one app (its router gives the URLs)."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when

    def path(self, scope: Scope, name: str, **params: Any) -> str:
        """The absolute path of a named route, including the mount prefix."""
        root: str = scope.get(ROOT_PATH_KEY, scope.get("root_path", ""))
        return root + str(self._router.url_path_for(name, **params))

    def render(
        self,
        request: Request | Scope,
        template: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        scope = request.scope if isinstance(request, Request) else request
        page = self.env.get_template(template)
        full: dict[str, Any] = {
            "url": lambda name, **params: self.path(scope, name, **params),
            "owner": None,
            "csrf": "",
            "title": "pdauth",
            **context,
        }
        return HTMLResponse(page.render(full), status_code=status_code)

    def error(self, scope: Scope, status: int, *, message: str | None = None) -> Response:
        """A generic error for ``status``: JSON under the API, a small page elsewhere."""
        heading, default = STATUS_PAGES.get(status, ("Error", "The request failed."))
        text = message or default
        if is_api(scope):
            code = JSON_CODES.get(status, "error")
            headers = {"www-authenticate": "Bearer"} if status == 401 else None
            return JSONResponse(
                {"error": {"code": code, "message": text}}, status_code=status, headers=headers
            )
        return self.render(
            scope,
            "error.html",
            {"title": heading, "heading": heading, "message": text},
            status_code=status,
        )

    def flow_failure(self, request: Request, kind: str, context: dict[str, Any]) -> HTMLResponse:
        failure = FLOW_FAILURES[kind]
        return self.render(
            request,
            "flow_error.html",
            {
                "title": failure.heading,
                "heading": failure.heading,
                "message": failure.message,
                "can_retry": failure.can_retry and bool(context.get("owner")),
                "retry_hint": None
                if context.get("owner")
                else "Open the connect link your application gave you to start again.",
                "detail": None,
                **context,
            },
            status_code=failure.status,
        )


def is_api(scope: Scope) -> bool:
    root = scope.get(ROOT_PATH_KEY, scope.get("root_path", ""))
    path: str = scope.get("path", "")
    return path.startswith((root + "/api/", "/api/"))


#: How a status reads to a person (badges, the admin's counts).
STATUS_LABELS: dict[str, str] = {
    "active": "active",
    "needs_reauth": "needs re-authorization",
    "revoked": "revoked",
}


def connection_view(connection: Connection) -> dict[str, Any]:
    """What the templates show of a connection: :meth:`Connection.to_json` (the one
    serializer, no secret) plus the human label of its status."""
    view = connection.to_json()
    view["status_label"] = STATUS_LABELS.get(connection.status, connection.status)
    return view


def public_data(value: Any) -> Any:
    """``value`` without any ``*_ct`` key at any depth: the one rule for hiding ciphertexts
    that outbox events carry for the keeper."""
    if isinstance(value, Mapping):
        return {k: public_data(v) for k, v in value.items() if not str(k).endswith("_ct")}
    if isinstance(value, list | tuple):
        return [public_data(v) for v in value]
    return value


def event_json(event: EventRow) -> dict[str, Any]:
    """An event-log entry as the JSON API returns it (event data never holds secrets)."""
    return {
        "id": event.id,
        "type": event.type,
        "connection_id": event.connection_id,
        "owner": event.owner,
        "data": public_data(event.data or {}),
        "created_at": iso_time(event.created_at),
    }
