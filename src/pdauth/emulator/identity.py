"""PagerDuty's identity service, emulated: authorize + consent, token, JWKS, discovery, revoke.

Paths and shapes follow identity.pagerduty.com (PagerDuty/developer-docs 06-OAuth-Functionality.md,
02-Private-Apps.md, 07-PagerDuty-OpenId-Token.md): RFC 6749 §4.1 authorization code with RFC 7636
PKCE (``S256`` only), §6 refresh (rotating the refresh token every time), §4.4 client credentials
(Scoped private apps, ``as_account-<region>.<subdomain>`` scope), and an RS256 OpenID Connect
id_token. PagerDuty documents no token-endpoint error statuses, so these are OUR ASSUMPTION,
following RFC 6749 §5.2: 400 for ``invalid_request``/``invalid_grant``/``unsupported_grant_type``/
``invalid_scope``/``unauthorized_client``, 401 for ``invalid_client``. Other assumptions are
labelled where they are made. PKCE is checked with hashlib, never with pdauth's client code.

This module is the authorize side (validation shared with ``POST /_emulator/authorize``, the
consent page and its decision) plus JWKS and discovery; the token side is
:mod:`~pdauth.emulator.identity_token`, the shared HTTP plumbing
:mod:`~pdauth.emulator.identity_http`. The endpoints are methods over one state.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pdauth.emulator.data import User
from pdauth.emulator.identity_http import (
    MAX_PARAM,
    BadForm,
    api_base_url,
    identity_base_url,
    read_form,
)
from pdauth.emulator.identity_token import ID_TOKEN_CLAIMS, TokenEndpoints
from pdauth.emulator.state import (
    EmulatorState,
    OAuthApp,
    PendingConsent,
)

__all__ = [
    "AuthorizeProblem",
    "AuthorizeRequest",
    "IdentityEndpoints",
    "api_base_url",
    "complete_authorize",
    "eligible_users",
    "identity_base_url",
    "identity_routes",
    "resolve_user",
    "validate_authorize",
]

CONSENT_TTL = 600.0
MAX_PENDING_CONSENTS = 10_000
CONSENT_USERS = 20
DENIED = "The resource owner or authorization server denied the request."
AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


# -- authorize: validation shared by the consent page and POST /_emulator/authorize ----------


class AuthorizeProblem(Exception):
    """An authorize request that cannot proceed.

    ``redirect`` is ``None`` when the client cannot be trusted with a redirect (unknown client,
    unregistered ``redirect_uri``): show an error page. Otherwise it is the ``redirect_uri``
    carrying ``error``/``error_description`` (RFC 6749 §4.1.2.1).
    """

    def __init__(self, error: str, description: str, *, redirect: str | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect = redirect


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated authorize request: the app, where to send the user, and what they grant."""

    app: OAuthApp
    redirect_uri: str
    requested_scope: str
    scopes: frozenset[str]
    state: str | None = field(default=None, repr=False)
    code_challenge: str | None = field(default=None, repr=False)
    nonce: str | None = field(default=None, repr=False)


def redirect_with(uri: str, params: Mapping[str, str]) -> str:
    """``uri`` with ``params`` added to its query (keeping a query it already has)."""
    parts = urlsplit(uri)
    query = urlencode(list(parse_qsl(parts.query, keep_blank_values=True)) + list(params.items()))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def granted_scopes(app: OAuthApp, requested: str) -> frozenset[str]:
    """What a user grant gets: the requested scopes plus ``openid`` if every one of them is
    configured on the app, else only ``openid`` — PagerDuty's documented behaviour for an
    invalid scope (developer-docs PR #66). A missing ``scope`` also yields only ``openid``
    (assumption: PagerDuty says scope is required but documents no error for its absence)."""
    asked = frozenset(requested.split())
    if asked and asked <= app.scopes | {"openid"}:
        return asked | {"openid"}
    return frozenset({"openid"})


def validate_authorize(
    state: EmulatorState, params: Mapping[str, str], repeated: frozenset[str] = frozenset()
) -> AuthorizeRequest:
    """Validate authorize parameters in RFC 6749 §4.1.2.1 order: first what decides whether a
    redirect is safe (client, exact registered ``redirect_uri``), then the rest as redirects."""
    client_id = params.get("client_id", "")
    if "client_id" in repeated or not client_id:
        raise AuthorizeProblem("invalid_request", "The client_id parameter is missing.")
    app = state.app(client_id) if len(client_id) <= MAX_PARAM else None
    if app is None:
        raise AuthorizeProblem("invalid_client", "No OAuth app with this client_id exists.")
    redirect_uri = params.get("redirect_uri", "")
    if "redirect_uri" in repeated or redirect_uri not in app.redirect_uris:
        raise AuthorizeProblem(
            "invalid_request",
            "The redirect_uri is missing or is not registered for this app; "
            "PagerDuty only redirects to a URL saved in the app's OAuth configuration.",
        )
    client_state = params.get("state")

    def fail(error: str, description: str) -> AuthorizeProblem:
        carried = {"error": error, "error_description": description}
        if client_state is not None and "state" not in repeated and len(client_state) <= MAX_PARAM:
            carried["state"] = client_state
        return AuthorizeProblem(error, description, redirect=redirect_with(redirect_uri, carried))

    if repeated:
        raise fail("invalid_request", f"Parameter {sorted(repeated)[0][:40]} is repeated.")
    too_long = [k for k in AUTHORIZE_PARAMS if len(params.get(k, "")) > MAX_PARAM]
    if too_long:
        raise fail("invalid_request", f"Parameter {too_long[0]} is too long.")
    response_type = params.get("response_type")
    if not response_type:
        raise fail("invalid_request", "The response_type parameter is missing.")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    if method is not None and method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256.")
    if challenge is None and method is not None:
        raise fail("invalid_request", "code_challenge_method was sent without code_challenge.")
    if challenge is not None:
        if method is None:  # RFC 7636 §4.3 would default to "plain", which we refuse
            raise fail("invalid_request", "code_challenge_method must be S256.")
        if not _CHALLENGE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge must be 43 base64url characters.")
    elif app.pkce_required:
        raise fail("invalid_request", "This app must use PKCE (code_challenge with S256).")
    requested = params.get("scope", "")
    return AuthorizeRequest(
        app=app,
        redirect_uri=redirect_uri,
        requested_scope=requested,
        scopes=granted_scopes(app, requested),
        state=client_state,
        code_challenge=challenge,
        nonce=params.get("nonce") or None,
    )


def eligible_users(state: EmulatorState, app: OAuthApp) -> list[User]:
    """The users the consent page offers: the first users of the app's account, or — for an
    app open to every account — of the US account plus the EU admin."""
    directory = state.directory
    if app.account_id is not None:
        return directory.users_of(app.account_id)[:CONSENT_USERS]
    offered: list[User] = []
    for account in directory.accounts.values():
        users = directory.users_of(account.id)
        offered.extend(users[:CONSENT_USERS] if account.region == "us" else users[:1])
    return offered


def resolve_user(state: EmulatorState, app: OAuthApp, who: str) -> User:
    """The user signing in (by e-mail or id) if they may authorize ``app``."""
    user = state.directory.find_user(who) if 0 < len(who) <= MAX_PARAM else None
    if user is None:
        raise AuthorizeProblem("invalid_request", "No such user.")
    if app.account_id is not None and user.account_id != app.account_id:
        # Scoped apps are private to their account (PagerDuty: "own account only").
        raise AuthorizeProblem("access_denied", "This app is not installed on the user's account.")
    return user


def complete_authorize(
    state: EmulatorState,
    request: AuthorizeRequest,
    user: User | None,
    *,
    approve: bool,
    approved: frozenset[str] | None = None,
) -> str:
    """The redirect the user's decision produces: a code, or ``access_denied``.

    ``approved`` narrows the grant to the scopes the user ticked (``None``: everything asked
    for, as before); ``openid`` stays whenever it was granted. Assumption: PagerDuty's consent
    page grants all or nothing; the narrowing lets clients' "scopes not granted" paths be
    tested (RFC 6749 §3.3 allows the server to grant fewer scopes than requested)."""
    extra = {"state": request.state} if request.state is not None else {}
    scopes = request.scopes
    if approved is not None:
        if not approved <= scopes:
            raise AuthorizeProblem("invalid_request", "Only requested scopes can be approved.")
        scopes = approved | (scopes & {"openid"})
    if not approve:
        state.stats.record_authorize("denied")
        return redirect_with(
            request.redirect_uri, {"error": "access_denied", "error_description": DENIED, **extra}
        )
    if user is None:
        raise AuthorizeProblem("invalid_request", "Approving needs a signed-in user.")
    code = state.issue_code(
        app=request.app,
        redirect_uri=request.redirect_uri,
        code_challenge=request.code_challenge,
        account_id=user.account_id,
        user_id=user.id,
        scopes=scopes,
        nonce=request.nonce,
    )
    state.stats.record_authorize("approved")
    return redirect_with(request.redirect_uri, {"code": code.value, **extra})


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _TEMPLATES.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def error_page(problem: AuthorizeProblem, status: int = 400) -> HTMLResponse:
    return render(
        "error.html", status, error=problem.error, description=problem.description, title="Error"
    )


class IdentityEndpoints:
    """The consent page, its decision, the JWKS and the discovery document over one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def authorize(self, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in AUTHORIZE_PARAMS}
        repeated = frozenset(
            k for k in AUTHORIZE_PARAMS if len(request.query_params.getlist(k)) > 1
        )
        try:
            valid = validate_authorize(self.state, params, repeated)
        except AuthorizeProblem as problem:
            return _problem_response(self.state, problem, status=302)
        nonce = _remember(self.state, params)
        return render(
            "authorize.html",
            title=f"Authorize {valid.app.name}",
            app=valid.app,
            scopes=sorted(valid.scopes, key=lambda s: (s != "openid", s)),
            reduced=valid.scopes == frozenset({"openid"})
            and bool(set(valid.requested_scope.split()) - {"openid"}),
            users=[
                (u, self.state.directory.accounts[u.account_id])
                for u in eligible_users(self.state, valid.app)
            ],
            consent=nonce,
            redirect_host=urlsplit(valid.redirect_uri).netloc,
        )

    async def decision(self, request: Request) -> Response:
        try:
            form, _ = await read_form(request)
        except BadForm as bad:
            problem = AuthorizeProblem("invalid_request", bad.description)
            return error_page(problem, bad.status)
        pending = self.state.consents.pop(form.get("consent", ""), None)
        if pending is None or self.state.clock.now() >= pending.expires_at:
            return error_page(
                AuthorizeProblem(
                    "invalid_request",
                    "This consent page has expired or was already used. Start again from the app.",
                )
            )
        choice = form.get("decision")
        if choice not in ("approve", "deny"):
            return error_page(AuthorizeProblem("invalid_request", "Choose Approve or Deny."))
        try:
            valid = validate_authorize(self.state, pending.params)
            user = (
                resolve_user(self.state, valid.app, form.get("user", ""))
                if choice == "approve"
                else None
            )
            # The page's "withhold" checkboxes (unticked by default) narrow the grant; a post
            # without them approves everything asked for, as before.
            withheld = {k.removeprefix("withhold:") for k in form if k.startswith("withhold:")}
            approved = valid.scopes - withheld if withheld else None
            target = complete_authorize(
                self.state, valid, user, approve=choice == "approve", approved=approved
            )
        except AuthorizeProblem as problem:
            return _problem_response(self.state, problem)
        return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.state.keys.jwks(), headers={"Cache-Control": "max-age=300"})

    async def discovery(self, request: Request) -> Response:
        base = identity_base_url(self.state, request)
        doc: dict[str, Any] = {
            "issuer": self.state.config.issuer,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "jwks_uri": f"{base}/global/oauth/anonymous/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "read", "write"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "client_secret_basic",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": list(ID_TOKEN_CLAIMS),
        }
        if self.state.config.revocation_endpoint:
            doc["revocation_endpoint"] = f"{base}/oauth/revoke"
        return JSONResponse(doc)


def identity_routes(state: EmulatorState) -> list[BaseRoute]:
    """The identity host's routes, over ``state``."""
    pages = IdentityEndpoints(state)
    tokens = TokenEndpoints(state)
    routes: list[BaseRoute] = [
        Route("/oauth/authorize", pages.authorize, methods=["GET"]),
        Route("/oauth/authorize/decision", pages.decision, methods=["POST"]),
        Route("/oauth/token", tokens.token, methods=["POST"]),
        Route("/global/oauth/anonymous/jwks", pages.jwks, methods=["GET"]),
        Route(
            "/global/oauth/anonymous/.well-known/openid-configuration",
            pages.discovery,
            methods=["GET"],
        ),
    ]
    if state.config.revocation_endpoint:
        routes.append(Route("/oauth/revoke", tokens.revoke, methods=["POST"]))
    return routes


def _problem_response(
    state: EmulatorState, problem: AuthorizeProblem, status: int = 303
) -> Response:
    if problem.redirect is None:
        return error_page(problem)
    state.stats.record_authorize(problem.error)
    return RedirectResponse(
        problem.redirect, status_code=status, headers={"Cache-Control": "no-store"}
    )


def _remember(state: EmulatorState, params: dict[str, str]) -> str:
    """Keep a consent page's parameters server-side under a fresh single-use nonce."""
    now = state.clock.now()
    with state.lock:
        if len(state.consents) >= MAX_PENDING_CONSENTS:
            for key in [k for k, p in state.consents.items() if p.expires_at <= now]:
                del state.consents[key]
            while len(state.consents) >= MAX_PENDING_CONSENTS:  # drop the oldest
                del state.consents[next(iter(state.consents))]
        nonce = secrets.token_urlsafe(24)
        state.consents[nonce] = PendingConsent(params=params, expires_at=now + CONSENT_TTL)
    return nonce
