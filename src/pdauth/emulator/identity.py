"""PagerDuty's identity service, emulated: authorize + consent, token, JWKS, discovery, revoke.

Paths and shapes follow identity.pagerduty.com (06-OAuth-Functionality.md, 02-Private-Apps.md,
07-PagerDuty-OpenId-Token.md): RFC 6749 §4.1 authorization code with RFC 7636 PKCE (``S256``
only), §6 refresh (rotating the refresh token every time), §4.4 client credentials (Scoped
private apps, ``as_account-<region>.<subdomain>`` scope), and an RS256 OpenID Connect id_token.
PagerDuty documents no token-endpoint error statuses, so these are OUR ASSUMPTION, following
RFC 6749 §5.2: 400 for ``invalid_request``/``invalid_grant``/``unsupported_grant_type``/
``invalid_scope``/``unauthorized_client``, 401 for ``invalid_client``. Other assumptions are
labelled where they are made. PKCE is checked with hashlib here, never with pdauth's client code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pdauth.emulator.data import User
from pdauth.emulator.state import (
    EmulatorState,
    Fault,
    Grant,
    OAuthApp,
    PendingConsent,
    Region,
    at_hash,
)

__all__ = [
    "AuthorizeProblem",
    "AuthorizeRequest",
    "api_base_url",
    "complete_authorize",
    "eligible_users",
    "identity_base_url",
    "identity_routes",
    "resolve_user",
    "validate_authorize",
]

MAX_BODY = 16 * 1024
MAX_PARAM = 2048
MAX_FIELDS = 64
CONSENT_TTL = 600.0
MAX_PENDING_CONSENTS = 10_000
CONSENT_USERS = 20
DENIED = "The resource owner or authorization server denied the request."
# PagerDuty's id_token says "UnitedStates"; the EU spelling is not shown anywhere (assumption).
REGION_LABEL: dict[Region, str] = {"us": "UnitedStates", "eu": "Europe"}
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
ID_TOKEN_CLAIMS = (
    "iss", "aud", "sub", "exp", "nbf", "iat", "jti", "auth_time", "purpose", "at_hash", "acr",
    "amr", "delegation_id", "account_id", "user_id", "azp", "subdomain", "region", "sid", "nonce",
)  # fmt: skip
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_AS_ACCOUNT = re.compile(r"as_account-(us|eu)\.([A-Za-z0-9-]{1,100})")
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
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STATUS = {
    "invalid_client": 401,
    "server_error": 500,
    "temporarily_unavailable": 503,
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


def scope_string(scopes: frozenset[str]) -> str:
    """``openid`` first, then the rest sorted, as in PagerDuty's ``"openid write"``."""
    rest = sorted(s for s in scopes if s != "openid")
    return " ".join((["openid"] if "openid" in scopes else []) + rest)


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
    state: EmulatorState, request: AuthorizeRequest, user: User | None, *, approve: bool
) -> str:
    """The redirect the user's decision produces: a code, or ``access_denied``."""
    extra = {"state": request.state} if request.state is not None else {}
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
        scopes=request.scopes,
        nonce=request.nonce,
    )
    state.stats.record_authorize("approved")
    return redirect_with(request.redirect_uri, {"code": code.value, **extra})


# -- URLs as the client sees them ----------------------------------------------------------


def identity_base_url(state: EmulatorState, request: Request) -> str:
    """The emulator's base URL: ``config.public_url`` or the one this request came to."""
    if state.config.public_url is not None:
        return state.config.public_url.rstrip("/")
    root = request.scope.get("root_path", "")
    return f"{request.url.scheme}://{request.url.netloc}{root}".rstrip("/")


def api_base_url(state: EmulatorState, request: Request, region: Region) -> str:
    """The regional REST base: US at the root, EU under ``/eu`` (the id_token ``aud``)."""
    base = identity_base_url(state, request)
    return base + "/eu" if region == "eu" else base


# -- request plumbing -----------------------------------------------------------------------


class BadForm(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


async def read_form(request: Request) -> tuple[dict[str, str], frozenset[str]]:
    """Parse a small ``application/x-www-form-urlencoded`` body strictly.

    Returns the fields and the names that were repeated (RFC 6749 §3.1: parameters MUST NOT be
    included more than once). Hostile input becomes :class:`BadForm` (413/400), never a crash.
    """
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if mime != "application/x-www-form-urlencoded":
        raise BadForm(400, "The body must be application/x-www-form-urlencoded.")
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdecimal():
        raise BadForm(400, "Invalid Content-Length.")
    if declared is not None and (len(declared) > 9 or int(declared) > MAX_BODY):
        raise BadForm(413, "The request body is too large.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise BadForm(413, "The request body is too large.")
    except ClientDisconnect as exc:
        raise BadForm(400, "The request body was cut short.") from exc
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(400, "The body is not valid UTF-8 form data.") from exc
    fields: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in fields:
            repeated.add(key)
        fields[key] = value
    return fields, frozenset(repeated)


def oauth_error(
    error: str,
    description: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 6749 §5.2 error body (status per the module docstring's assumption)."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status or _STATUS.get(error, 400),
        headers={**_TOKEN_HEADERS, **(headers or {})},
    )


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _TEMPLATES.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def error_page(problem: AuthorizeProblem, status: int = 400) -> HTMLResponse:
    return render(
        "error.html", status, error=problem.error, description=problem.description, title="Error"
    )


def s256(verifier: str) -> str:
    """RFC 7636 §4.2, written out here so a client-side PKCE bug cannot pass its own check."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def serve_fault(fault: Fault) -> Response | None:
    """The response for a fault served *before* processing (``drop`` returns None: it is
    served after processing by :func:`dropped`)."""
    if fault.kind == "500":
        return oauth_error("server_error", "Injected fault.")
    if fault.kind == "503":
        return oauth_error("temporarily_unavailable", "Injected fault.")
    if fault.kind == "timeout":
        await anyio.sleep(fault.delay)
        return Response("upstream request timeout", status_code=504, media_type="text/plain")
    return None


def dropped() -> Response:
    """What a load balancer that lost the upstream answer sends: 502, empty, not JSON."""
    return Response(b"", status_code=502, media_type="text/html")


# -- the token endpoint ----------------------------------------------------------------------


class TokenError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _authenticate_client(
    state: EmulatorState, request: Request, form: Mapping[str, str]
) -> OAuthApp:
    """Client authentication: ``client_secret_post`` (what PagerDuty documents), HTTP Basic
    (RFC 6749 §2.3.1 — accepted as an assumption), or none for public clients."""
    basic_id = basic_secret = None
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            raw_id, _, raw_secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise TokenError("invalid_client", "Malformed Basic credentials.") from exc
        basic_id, basic_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_secret" in form:
            raise TokenError("invalid_request", "Use one client authentication method.")
    client_id = basic_id if basic_id is not None else form.get("client_id", "")
    if basic_id is not None and form.get("client_id", basic_id) != basic_id:
        raise TokenError("invalid_request", "client_id does not match the Basic credentials.")
    secret = basic_secret if basic_secret is not None else form.get("client_secret")
    if not client_id:
        raise TokenError("invalid_client", "Client authentication failed.")
    app = state.app(client_id) if len(client_id) <= MAX_PARAM else None
    if app is None:
        raise TokenError("invalid_client", "Client authentication failed.")
    if app.client_secret is None:
        if secret:  # a public client has no secret to present
            raise TokenError("invalid_client", "Client authentication failed.")
    elif secret is None or not hmac.compare_digest(
        secret.encode("utf-8", "surrogatepass"), app.client_secret.encode("utf-8")
    ):
        raise TokenError("invalid_client", "Client authentication failed.")
    return app


def _require(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise TokenError("invalid_request", f"The {name} parameter is missing.")
    if len(value) > MAX_PARAM:
        raise TokenError("invalid_request", f"The {name} parameter is too long.")
    return value


class TokenService:
    """The grants, over one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _token_body(
        self,
        request: Request,
        grant: Grant,
        *,
        refresh: bool,
        id_token: bool,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        state = self.state
        access = state.issue_access_token(grant)
        body: dict[str, Any] = {}
        if id_token:
            # client_info's meaning is undocumented; PagerDuty's samples carry this value.
            body["client_info"] = "prefix_legacy_app"
            body["id_token"] = self._id_token(request, grant, access.value, nonce)
        body["token_type"] = "bearer"  # noqa: S105 - a token type, not a secret
        body["access_token"] = access.value
        if refresh:
            body["refresh_token"] = state.issue_refresh_token(grant).value
        body["scope"] = scope_string(grant.scopes)
        body["expires_in"] = int(access.expires_at - access.issued_at)
        return body

    def _id_token(self, request: Request, grant: Grant, access: str, nonce: str | None) -> str:
        state = self.state
        now = int(state.clock.now())
        account = state.directory.accounts[grant.account_id]
        claims: dict[str, Any] = {
            "iss": state.config.issuer,
            "aud": [api_base_url(state, request, grant.region), grant.client_id],
            "sub": grant.user_id,
            "exp": now + state.config.id_token_ttl,
            "nbf": now,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "auth_time": int(grant.auth_time),
            "purpose": "id",
            "at_hash": at_hash(access),
            # acr/amr copy the production sample's shape; the EU acr value is an assumption.
            "acr": f"acr:html-form:{REGION_LABEL[grant.region].lower()}",
            "amr": ["pwd"],
            "delegation_id": grant.id,
            "account_id": grant.account_id,
            "user_id": grant.user_id,
            "azp": grant.client_id,
            "subdomain": account.subdomain,
            "region": REGION_LABEL[grant.region],
            "sid": grant.sid,
            "product_abilities": [],
        }
        if nonce is not None:
            claims["nonce"] = nonce
        state.stats.record_issued("id_token")
        return state.keys.sign(claims)

    def authorization_code(
        self, request: Request, client: OAuthApp, form: Mapping[str, str]
    ) -> dict[str, Any]:
        """RFC 6749 §4.1.3 + RFC 7636 §4.6."""
        state = self.state
        value = _require(form, "code")
        redirect_uri = _require(form, "redirect_uri")
        with state.lock:
            code = state.codes.get(value)
            if code is None or code.client_id != client.client_id:
                raise TokenError("invalid_grant", "The authorization code is invalid.")
            if code.used:
                # RFC 6749 §4.1.2: a replayed code SHOULD revoke what it produced.
                state.stats.record_reuse_detection()
                if code.grant_id is not None:
                    state.revoke_grant(code.grant_id)
                raise TokenError("invalid_grant", "The authorization code was already used.")
            if state.clock.now() >= code.expires_at:
                raise TokenError("invalid_grant", "The authorization code has expired.")
            if redirect_uri != code.redirect_uri:
                raise TokenError("invalid_grant", "redirect_uri does not match the authorize one.")
            verifier = form.get("code_verifier")
            if code.code_challenge is not None:
                if not verifier or not _VERIFIER.fullmatch(verifier):
                    raise TokenError("invalid_grant", "A valid code_verifier is required.")
                if not hmac.compare_digest(s256(verifier), code.code_challenge):
                    # Not consumed: the legitimate client may still redeem it (assumption).
                    raise TokenError("invalid_grant", "The code_verifier does not match.")
            elif verifier:
                # OAuth 2.1 §4.1.3: refuse a verifier for a code issued without a challenge.
                raise TokenError("invalid_grant", "No code_challenge was sent for this code.")
            code.used = True
            account = state.directory.accounts[code.account_id]
            grant = state.new_grant(
                app=client,
                account_id=code.account_id,
                user_id=code.user_id,
                scopes=code.scopes,
                region=account.region,
            )
            code.grant_id = grant.id
            return self._token_body(request, grant, refresh=True, id_token=True, nonce=code.nonce)

    def refresh_token(
        self, request: Request, client: OAuthApp, form: Mapping[str, str]
    ) -> dict[str, Any]:
        """RFC 6749 §6, rotating the refresh token every time. A ``scope`` parameter is ignored:
        the new tokens carry the grant's scopes (assumption; PagerDuty documents none)."""
        state = self.state
        value = _require(form, "refresh_token")
        with state.lock:
            rt = state.refresh_tokens.get(value)
            if rt is None or rt.client_id != client.client_id:
                raise TokenError("invalid_grant", "The refresh token is invalid.")
            grant = state.grants[rt.grant_id]
            if rt.revoked or grant.revoked:
                raise TokenError("invalid_grant", "The refresh token was revoked.")
            if rt.rotated:
                # Reuse of a rotated refresh token: PagerDuty is silent (assumption, configurable).
                state.stats.record_reuse_detection()
                if state.config.refresh_reuse == "strict":
                    state.revoke_grant(grant.id)
                raise TokenError("invalid_grant", "The refresh token was already used.")
            if state.clock.now() >= rt.expires_at:
                raise TokenError("invalid_grant", "The refresh token has expired.")
            rt.rotated = True
            return self._token_body(request, grant, refresh=True, id_token=False)

    def client_credentials(
        self, request: Request, client: OAuthApp, form: Mapping[str, str]
    ) -> dict[str, Any]:
        """RFC 6749 §4.4 for Scoped private apps (02-Private-Apps.md): the scope must name the
        account, ``as_account-<us|eu>.<subdomain>``; no refresh token, no id_token."""
        state = self.state
        if client.kind != "scoped" or not client.confidential:
            raise TokenError(
                "unauthorized_client", "Only Scoped OAuth apps may use client_credentials."
            )
        requested = form.get("scope", "")
        if len(requested) > MAX_PARAM:
            raise TokenError("invalid_request", "Invalid scope")
        scopes = frozenset(requested.split())
        targets = [m for m in map(_AS_ACCOUNT.fullmatch, scopes) if m is not None]
        if len(targets) != 1:
            # Matches what golang/oauth2 surfaced from PagerDuty (terraform-provider #936).
            raise TokenError("invalid_request", "Invalid scope")
        region, subdomain = targets[0].group(1), targets[0].group(2)
        account = state.directory.account_by_subdomain(subdomain)
        if account is None or account.region != region:
            raise TokenError("invalid_request", "Invalid scope")
        if client.account_id is not None and client.account_id != account.id:
            raise TokenError("invalid_request", "Invalid scope")
        resource = scopes - {targets[0].group(0)}
        if not resource <= client.scopes:
            # Assumption: app tokens are refused unconfigured scopes rather than reduced.
            raise TokenError("invalid_scope", "A requested scope is not configured on the app.")
        grant = state.new_grant(
            app=client,
            account_id=account.id,
            user_id=None,
            scopes=scopes,
            region=account.region,
            delegation_type="integration",
        )
        body = self._token_body(request, grant, refresh=False, id_token=False)
        # PagerDuty echoes the scope as requested (as_account first).
        body["scope"] = " ".join([targets[0].group(0), *sorted(resource)])
        return body


def identity_routes(state: EmulatorState) -> list[BaseRoute]:
    """The identity host's routes, over ``state``."""
    tokens = TokenService(state)

    async def authorize(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in AUTHORIZE_PARAMS}
        repeated = frozenset(
            k for k in AUTHORIZE_PARAMS if len(request.query_params.getlist(k)) > 1
        )
        try:
            valid = validate_authorize(state, params, repeated)
        except AuthorizeProblem as problem:
            return _problem_response(state, problem, status=302)
        nonce = _remember(state, params)
        return render(
            "authorize.html",
            title=f"Authorize {valid.app.name}",
            app=valid.app,
            scopes=sorted(valid.scopes, key=lambda s: (s != "openid", s)),
            reduced=valid.scopes == frozenset({"openid"})
            and bool(set(valid.requested_scope.split()) - {"openid"}),
            users=[
                (u, state.directory.accounts[u.account_id])
                for u in eligible_users(state, valid.app)
            ],
            consent=nonce,
            redirect_host=urlsplit(valid.redirect_uri).netloc,
        )

    async def decision(request: Request) -> Response:
        try:
            form, _ = await read_form(request)
        except BadForm as bad:
            problem = AuthorizeProblem("invalid_request", bad.description)
            return error_page(problem, bad.status)
        pending = state.consents.pop(form.get("consent", ""), None)
        if pending is None or state.clock.now() >= pending.expires_at:
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
            valid = validate_authorize(state, pending.params)
            user = (
                resolve_user(state, valid.app, form.get("user", ""))
                if choice == "approve"
                else None
            )
            target = complete_authorize(state, valid, user, approve=choice == "approve")
        except AuthorizeProblem as problem:
            return _problem_response(state, problem)
        return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})

    async def token(request: Request) -> Response:
        fault = state.faults.take("token")
        if fault is not None:
            state.stats.record_fault("token", fault.kind)
            early = await serve_fault(fault)
            if early is not None:
                return early
        try:
            form, repeated = await read_form(request)
        except BadForm as bad:
            state.stats.record_token("(unparsed)", "invalid_request")
            return oauth_error("invalid_request", bad.description, bad.status)
        grant_type = form.get("grant_type", "")
        try:
            if repeated:
                raise TokenError(
                    "invalid_request", f"Parameter {sorted(repeated)[0][:40]} is repeated."
                )
            if not grant_type:
                raise TokenError("invalid_request", "The grant_type parameter is missing.")
            handler = {
                "authorization_code": tokens.authorization_code,
                "refresh_token": tokens.refresh_token,
                "client_credentials": tokens.client_credentials,
            }.get(grant_type)
            client = _authenticate_client(state, request, form)
            if handler is None:
                raise TokenError("unsupported_grant_type", "This grant_type is not supported.")
            body = handler(request, client, form)
        except TokenError as err:
            state.stats.record_token(grant_type, err.error)
            headers = {}
            if err.error == "invalid_client" and request.headers.get("authorization"):
                headers["WWW-Authenticate"] = 'Basic realm="PagerDuty"'
            return oauth_error(err.error, err.description, headers=headers)
        state.stats.record_token(grant_type, "ok")
        if fault is not None and fault.kind == "drop":
            return dropped()
        return JSONResponse(body, headers=_TOKEN_HEADERS)

    async def revoke(request: Request) -> Response:
        """RFC 7009 revocation. NOT a PagerDuty endpoint (PagerDuty documents none); served
        only with ``revocation_endpoint=True``. A token of another client is left alone and
        still answered 200 (assumption: that reveals nothing about it)."""
        try:
            form, repeated = await read_form(request)
        except BadForm as bad:
            return oauth_error("invalid_request", bad.description, bad.status)
        try:
            if repeated:
                raise TokenError(
                    "invalid_request", f"Parameter {sorted(repeated)[0][:40]} is repeated."
                )
            client = _authenticate_client(state, request, form)
            value = _require(form, "token")
        except TokenError as err:
            return oauth_error(err.error, err.description)
        with state.lock:
            owner = state.refresh_tokens.get(value) or state.access_tokens.get(value)
            if owner is not None and owner.client_id == client.client_id:
                state.revoke_token(value)
        return Response(b"", status_code=200, headers=_TOKEN_HEADERS)

    async def jwks(request: Request) -> Response:
        return JSONResponse(state.keys.jwks(), headers={"Cache-Control": "max-age=300"})

    async def discovery(request: Request) -> Response:
        base = identity_base_url(state, request)
        doc: dict[str, Any] = {
            "issuer": state.config.issuer,
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
        if state.config.revocation_endpoint:
            doc["revocation_endpoint"] = f"{base}/oauth/revoke"
        return JSONResponse(doc)

    routes: list[BaseRoute] = [
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/authorize/decision", decision, methods=["POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/global/oauth/anonymous/jwks", jwks, methods=["GET"]),
        Route(
            "/global/oauth/anonymous/.well-known/openid-configuration", discovery, methods=["GET"]
        ),
    ]
    if state.config.revocation_endpoint:
        routes.append(Route("/oauth/revoke", revoke, methods=["POST"]))
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
