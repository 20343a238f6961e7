"""The emulator's control API under ``/_emulator/``: test and demo hooks, JSON in and out.

Not part of PagerDuty. It lets a test do what a person would do in a browser (approve or deny
on the consent page), register OAuth apps, inject faults, revoke grants as PagerDuty's "Revoke
All Tokens" or delegation deletion would, move the emulator clock, rotate the id_token signing
key, and read counters. Bad input is a 400 with ``{"error", "error_description"}``, never a 500.
It has no authentication: the emulator is meant for loopback and test networks only.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, cast
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from pdauth.emulator.config import AppKind
from pdauth.emulator.control_support import (
    BadRequest,
    control_route,
    fail,
    find_account,
    flag_field,
    json_body,
    number_field,
    required_field,
    string_field,
)
from pdauth.emulator.identity import (
    AUTHORIZE_PARAMS,
    AuthorizeProblem,
    complete_authorize,
    eligible_users,
    resolve_user,
    validate_authorize,
)
from pdauth.emulator.state import EmulatorState, FaultTarget, OAuthApp, new_pd_id

__all__ = ["control_routes", "demo_app"]

MAX_ADVANCE = 20 * 365 * 86_400.0
CLASSIC_SCOPES = frozenset({"read", "write"})
_SCOPED_SCOPE = re.compile(r"[a-z_]+(:[a-z_]+)?\.(read|write)")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")

DEMO_CLIENT_ID = "pdauth-demo"
DEMO_CLIENT_SECRET = "pdauth-demo-secret"  # noqa: S105 - a published demo credential


def demo_app() -> OAuthApp:
    """The app registered at start: a confidential Classic app for loopback ports 8000-8010."""
    uris = tuple(
        f"http://{host}:{port}/callback"
        for port in range(8000, 8011)
        for host in ("127.0.0.1", "localhost")
    )
    return OAuthApp(
        client_id=DEMO_CLIENT_ID,
        name="pdauth demo",
        kind="classic",
        redirect_uris=uris,
        scopes=CLASSIC_SCOPES,
        client_secret=DEMO_CLIENT_SECRET,
    )


def _approved_scopes(raw: object) -> frozenset[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw) and len(raw) <= 100:
        return frozenset(cast(list[str], raw))
    raise BadRequest("scopes must be a list of strings or a space-separated string.")


def _app_from_json(state: EmulatorState, data: dict[str, Any]) -> tuple[OAuthApp, bool]:
    """Validate a registration; returns the app and whether its secret was generated."""
    client_id = string_field(data, "client_id") or f"{new_pd_id()}-emulated"
    if not _CLIENT_ID.fullmatch(client_id):
        raise BadRequest("client_id must be 1-128 URL-safe characters.")
    name = string_field(data, "name") or client_id
    if len(name) > 200:
        raise BadRequest("name is too long.")
    kind = string_field(data, "kind") or "classic"
    if kind not in ("classic", "scoped"):
        raise BadRequest("kind must be 'classic' or 'scoped'.")
    secret = string_field(data, "client_secret")
    client_type = string_field(data, "client_type") or (
        "public" if secret is None else "confidential"
    )
    if client_type not in ("public", "confidential"):
        raise BadRequest("client_type must be 'public' or 'confidential'.")
    if client_type == "public" and secret is not None:
        raise BadRequest("A public client has no client_secret.")
    if kind == "scoped" and client_type == "public":
        raise BadRequest("Scoped OAuth apps are confidential clients only.")
    generated = client_type == "confidential" and not secret
    if generated:
        secret = secrets.token_urlsafe(32)
    if secret is not None and not 8 <= len(secret) <= 512:
        raise BadRequest("client_secret must be 8-512 characters.")

    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise BadRequest("redirect_uris must be a non-empty list of URLs.")
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise BadRequest("Each redirect URI must be an absolute http(s) URL without fragment.")

    raw_scopes = data.get("scopes")
    if raw_scopes is None:
        if kind == "scoped":
            raise BadRequest("A Scoped app needs its scopes.")
        scopes = CLASSIC_SCOPES
    elif isinstance(raw_scopes, str):
        scopes = frozenset(raw_scopes.split())
    elif isinstance(raw_scopes, list) and all(isinstance(s, str) for s in raw_scopes):
        scopes = frozenset(cast(list[str], raw_scopes))
    else:
        raise BadRequest("scopes must be a list of strings or a space-separated string.")
    if kind == "classic" and not (scopes and scopes <= CLASSIC_SCOPES):
        raise BadRequest("Classic apps have the scopes 'read' and/or 'write'.")
    if kind == "scoped" and not (scopes and all(_SCOPED_SCOPE.fullmatch(s) for s in scopes)):
        raise BadRequest("Scoped apps have '<resource>.read|write' scopes.")

    account_id = None
    account_ref = string_field(data, "account")
    if account_ref is not None:
        account = find_account(state.directory, account_ref)
        if account is None:
            raise BadRequest("No such account (give its id or subdomain).")
        account_id = account.id
    app = OAuthApp(
        client_id=client_id,
        name=name,
        kind=cast(AppKind, kind),
        redirect_uris=tuple(uris),
        scopes=scopes,
        client_secret=secret,
        account_id=account_id,
    )
    return app, generated


def _describe(app: OAuthApp) -> dict[str, Any]:
    return {
        "client_id": app.client_id,
        "name": app.name,
        "kind": app.kind,
        "client_type": "confidential" if app.confidential else "public",
        "redirect_uris": list(app.redirect_uris),
        "scopes": sorted(app.scopes),
        "account_id": app.account_id,
    }


class ControlEndpoints:
    """The ``/_emulator`` endpoints, as methods over one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def authorize(self, request: Request) -> Response:
        """What the consent page does, as JSON: ``{"redirect": url}``. ``decision`` defaults to
        ``approve`` and ``user`` to the first user the page would offer; ``scopes`` (a list or a
        space-separated string) narrows the grant to those of the requested scopes the user
        approves (default: all of them)."""
        data = await json_body(request)
        params: dict[str, str] = {}
        for key in AUTHORIZE_PARAMS:
            value = string_field(data, key)
            if value is not None:
                params[key] = value
        decision = string_field(data, "decision") or "approve"
        if decision not in ("approve", "deny"):
            raise BadRequest("decision must be 'approve' or 'deny'.")
        who = string_field(data, "user")
        approved = _approved_scopes(data.get("scopes"))
        try:
            valid = validate_authorize(self.state, params)
            user = None
            if decision == "approve":
                if who is None:
                    offered = eligible_users(self.state, valid.app)
                    who = offered[0].id if offered else ""
                user = resolve_user(self.state, valid.app, who)
            target = complete_authorize(
                self.state, valid, user, approve=decision == "approve", approved=approved
            )
        except AuthorizeProblem as problem:
            if problem.redirect is not None:
                self.state.stats.record_authorize(problem.error)
                return JSONResponse({"redirect": problem.redirect})
            return fail(BadRequest(problem.description, problem.error))
        return JSONResponse({"redirect": target})

    async def stats(self, request: Request) -> Response:
        snap = self.state.stats.snapshot()
        snap["faults_pending"] = self.state.faults.pending()
        snap["webhooks"] = self.state.webhooks.stats()
        return JSONResponse(snap)

    async def list_apps(self, request: Request) -> Response:
        return JSONResponse({"apps": [_describe(a) for a in self.state.apps.values()]})

    async def register_app(self, request: Request) -> Response:
        app, generated = _app_from_json(self.state, await json_body(request))
        self.state.register_app(app)
        body = _describe(app)
        if generated:  # the caller has no other way to learn it
            body["client_secret"] = app.client_secret
        return JSONResponse(body, status_code=201)

    async def faults(self, request: Request) -> Response:
        data = await json_body(request)
        target = required_field(data, "target")
        kind = required_field(data, "kind")
        count = data.get("count", 1)
        delay = number_field(data, "delay", 0.0)
        if target not in ("token", "rest"):
            raise BadRequest("target must be 'token' or 'rest'.")
        try:
            self.state.faults.add(cast(FaultTarget, target), kind, count, delay)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return JSONResponse({"pending": self.state.faults.pending()})

    async def pending_faults(self, request: Request) -> Response:
        return JSONResponse({"pending": self.state.faults.pending()})

    async def revoke(self, request: Request) -> Response:
        """``{"client_id"}``: the app's "Revoke All Tokens". ``{"user", "client_id"?}``: delete a
        user's delegations (all apps, or one)."""
        data = await json_body(request)
        client_id = string_field(data, "client_id")
        who = string_field(data, "user")
        if client_id is None and who is None:
            raise BadRequest("Give client_id, user, or both.")
        user_id = None
        if who is not None:
            user = self.state.directory.find_user(who) if who else None
            if user is None:
                raise BadRequest("No such user.")
            user_id = user.id
        return JSONResponse({"revoked": self.state.revoke(client_id=client_id, user_id=user_id)})

    async def clock(self, request: Request) -> Response:
        if request.method == "POST":
            advance = number_field(await json_body(request), "advance", 0.0)
            if not 0 <= advance <= MAX_ADVANCE:
                raise BadRequest("advance must be between 0 and 20 years of seconds.")
            self.state.clock.advance(advance)
        return JSONResponse({"now": self.state.clock.now(), "offset": self.state.clock.offset})

    async def rotate_keys(self, request: Request) -> Response:
        """New signing key (new kid). ``{"keep_old": false}`` drops the old keys from the JWKS,
        so tokens signed earlier no longer verify."""
        keep_old = flag_field(await json_body(request, optional=True), "keep_old", True)
        kid = self.state.keys.rotate(keep_old=keep_old)
        return JSONResponse({"kid": kid, "kids": self.state.keys.kids()})

    async def reset(self, request: Request) -> Response:
        """Forget codes, grants, tokens, pending consents, faults, counters and webhook
        subscriptions (apps stay)."""
        self.state.reset()
        return JSONResponse({"reset": True})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def control_routes(state: EmulatorState) -> list[BaseRoute]:
    """The ``/_emulator`` routes over ``state`` (mount them under ``/_emulator``)."""
    ep = ControlEndpoints(state)
    return [
        control_route("/authorize", ep.authorize, "POST"),
        control_route("/stats", ep.stats, "GET"),
        control_route("/apps", ep.list_apps, "GET"),
        control_route("/apps", ep.register_app, "POST"),
        control_route("/faults", ep.faults, "POST"),
        control_route("/faults", ep.pending_faults, "GET"),
        control_route("/revoke", ep.revoke, "POST"),
        control_route("/clock", ep.clock, "GET", "POST"),
        control_route("/keys/rotate", ep.rotate_keys, "POST"),
        control_route("/reset", ep.reset, "POST"),
        control_route("/health", ep.health, "GET"),
    ]
