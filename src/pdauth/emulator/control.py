"""The emulator's control API under ``/_emulator/``: test and demo hooks, JSON in and out.

Not part of PagerDuty. It lets a test do what a person would do in a browser (approve or deny
on the consent page), register OAuth apps, inject faults, revoke grants as PagerDuty's "Revoke
All Tokens" or delegation deletion would, move the emulator clock, rotate the id_token signing
key, and read counters. Bad input is a 400 with ``{"error", "error_description"}``, never a 500.
It has no authentication: the emulator is meant for loopback and test networks only.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any, cast
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pdauth.emulator.config import AppKind
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

MAX_JSON = 64 * 1024
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


class BadRequest(Exception):
    def __init__(self, description: str, error: str = "invalid_request", status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _fail(err: BadRequest) -> JSONResponse:
    return JSONResponse(
        {"error": err.error, "error_description": err.description}, status_code=err.status
    )


async def _json_body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON:
                raise BadRequest("The request body is too large.", status=413)
    except ClientDisconnect as exc:
        raise BadRequest("The request body was cut short.") from exc
    if not body.strip() and optional:
        return {}
    if mime not in ("application/json", ""):
        raise BadRequest("The body must be JSON (Content-Type: application/json).")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def _required(data: dict[str, Any], key: str) -> str:
    value = _string(data, key)
    if value is None:
        raise BadRequest(f"{key} is required.")
    return value


def _string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string.")
    return value


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number.")
    try:
        number = float(value)
    except OverflowError as exc:
        raise BadRequest(f"{key} is out of range.") from exc
    if not math.isfinite(number):
        raise BadRequest(f"{key} must be finite.")
    return number


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
    client_id = _string(data, "client_id") or f"{new_pd_id()}-emulated"
    if not _CLIENT_ID.fullmatch(client_id):
        raise BadRequest("client_id must be 1-128 URL-safe characters.")
    name = _string(data, "name") or client_id
    if len(name) > 200:
        raise BadRequest("name is too long.")
    kind = _string(data, "kind") or "classic"
    if kind not in ("classic", "scoped"):
        raise BadRequest("kind must be 'classic' or 'scoped'.")
    secret = _string(data, "client_secret")
    client_type = _string(data, "client_type") or ("public" if secret is None else "confidential")
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
    account_ref = _string(data, "account")
    if account_ref is not None:
        account = state.directory.accounts.get(account_ref) or (
            state.directory.account_by_subdomain(account_ref)
        )
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
        try:
            data = await _json_body(request)
            params: dict[str, str] = {}
            for key in AUTHORIZE_PARAMS:
                value = _string(data, key)
                if value is not None:
                    params[key] = value
            decision = _string(data, "decision") or "approve"
            if decision not in ("approve", "deny"):
                raise BadRequest("decision must be 'approve' or 'deny'.")
            who = _string(data, "user")
            approved = _approved_scopes(data.get("scopes"))
        except BadRequest as err:
            return _fail(err)
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
            return _fail(BadRequest(problem.description, problem.error))
        return JSONResponse({"redirect": target})

    async def stats(self, request: Request) -> Response:
        snap = self.state.stats.snapshot()
        snap["faults_pending"] = self.state.faults.pending()
        snap["webhooks"] = self.state.webhooks.stats()
        return JSONResponse(snap)

    async def list_apps(self, request: Request) -> Response:
        return JSONResponse({"apps": [_describe(a) for a in self.state.apps.values()]})

    async def register_app(self, request: Request) -> Response:
        try:
            app, generated = _app_from_json(self.state, await _json_body(request))
        except BadRequest as err:
            return _fail(err)
        self.state.register_app(app)
        body = _describe(app)
        if generated:  # the caller has no other way to learn it
            body["client_secret"] = app.client_secret
        return JSONResponse(body, status_code=201)

    async def faults(self, request: Request) -> Response:
        try:
            data = await _json_body(request)
            target = _required(data, "target")
            kind = _required(data, "kind")
            count = data.get("count", 1)
            delay = _number(data, "delay", 0.0)
            if target not in ("token", "rest"):
                raise BadRequest("target must be 'token' or 'rest'.")
            self.state.faults.add(cast(FaultTarget, target), kind, count, delay)
        except BadRequest as err:
            return _fail(err)
        except ValueError as exc:
            return _fail(BadRequest(str(exc)))
        return JSONResponse({"pending": self.state.faults.pending()})

    async def pending_faults(self, request: Request) -> Response:
        return JSONResponse({"pending": self.state.faults.pending()})

    async def revoke(self, request: Request) -> Response:
        """``{"client_id"}``: the app's "Revoke All Tokens". ``{"user", "client_id"?}``: delete a
        user's delegations (all apps, or one)."""
        try:
            data = await _json_body(request)
            client_id = _string(data, "client_id")
            who = _string(data, "user")
            if client_id is None and who is None:
                raise BadRequest("Give client_id, user, or both.")
            user_id = None
            if who is not None:
                user = self.state.directory.find_user(who) if who else None
                if user is None:
                    raise BadRequest("No such user.")
                user_id = user.id
        except BadRequest as err:
            return _fail(err)
        return JSONResponse({"revoked": self.state.revoke(client_id=client_id, user_id=user_id)})

    async def clock(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                advance = _number(await _json_body(request), "advance", 0.0)
                if not 0 <= advance <= MAX_ADVANCE:
                    raise BadRequest("advance must be between 0 and 20 years of seconds.")
            except BadRequest as err:
                return _fail(err)
            self.state.clock.advance(advance)
        return JSONResponse({"now": self.state.clock.now(), "offset": self.state.clock.offset})

    async def rotate_keys(self, request: Request) -> Response:
        """New signing key (new kid). ``{"keep_old": false}`` drops the old keys from the JWKS,
        so tokens signed earlier no longer verify."""
        try:
            data = await _json_body(request, optional=True)
            keep_old = data.get("keep_old", True)
            if not isinstance(keep_old, bool):
                raise BadRequest("keep_old must be true or false.")
        except BadRequest as err:
            return _fail(err)
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
        Route("/authorize", ep.authorize, methods=["POST"]),
        Route("/stats", ep.stats, methods=["GET"]),
        Route("/apps", ep.list_apps, methods=["GET"]),
        Route("/apps", ep.register_app, methods=["POST"]),
        Route("/faults", ep.faults, methods=["POST"]),
        Route("/faults", ep.pending_faults, methods=["GET"]),
        Route("/revoke", ep.revoke, methods=["POST"]),
        Route("/clock", ep.clock, methods=["GET", "POST"]),
        Route("/keys/rotate", ep.rotate_keys, methods=["POST"]),
        Route("/reset", ep.reset, methods=["POST"]),
        Route("/health", ep.health, methods=["GET"]),
    ]
