"""The identity service's token side: client authentication, the three grants (authorization
code with PKCE, rotating refresh, client credentials), the id_token, and the token and
revocation endpoints. PKCE is checked with hashlib here, never with pdauth's client code."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pdauth.emulator.identity_http import (
    MAX_PARAM,
    TOKEN_HEADERS,
    BadForm,
    api_base_url,
    dropped,
    oauth_error,
    read_form,
    scope_string,
    serve_fault,
)
from pdauth.emulator.state import EmulatorState, Grant, OAuthApp, Region, at_hash

__all__ = ["ID_TOKEN_CLAIMS", "TokenEndpoints", "TokenError", "TokenService", "s256"]

# PagerDuty's id_token says "UnitedStates"; the EU spelling is not shown anywhere (assumption).
REGION_LABEL: dict[Region, str] = {"us": "UnitedStates", "eu": "Europe"}
ID_TOKEN_CLAIMS = (
    "iss", "aud", "sub", "exp", "nbf", "iat", "jti", "auth_time", "purpose", "at_hash", "acr",
    "amr", "delegation_id", "account_id", "user_id", "azp", "subdomain", "region", "sid", "nonce",
)  # fmt: skip
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_AS_ACCOUNT = re.compile(r"as_account-(us|eu)\.([A-Za-z0-9-]{1,100})")


def s256(verifier: str) -> str:
    """RFC 7636 §4.2, written out here so a client-side PKCE bug cannot pass its own check."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class TokenError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def authenticate_client(
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


def require_param(form: Mapping[str, str], name: str) -> str:
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
        value = require_param(form, "code")
        redirect_uri = require_param(form, "redirect_uri")
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
        value = require_param(form, "refresh_token")
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


class TokenEndpoints:
    """``POST /oauth/token`` and (when configured) ``POST /oauth/revoke`` over one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.tokens = TokenService(state)

    async def token(self, request: Request) -> Response:
        fault = self.state.faults.take("token")
        if fault is not None:
            self.state.stats.record_fault("token", fault.kind)
            early = await serve_fault(fault)
            if early is not None:
                return early
        try:
            form, repeated = await read_form(request)
        except BadForm as bad:
            self.state.stats.record_token("(unparsed)", "invalid_request")
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
                "authorization_code": self.tokens.authorization_code,
                "refresh_token": self.tokens.refresh_token,
                "client_credentials": self.tokens.client_credentials,
            }.get(grant_type)
            client = authenticate_client(self.state, request, form)
            if handler is None:
                raise TokenError("unsupported_grant_type", "This grant_type is not supported.")
            body = handler(request, client, form)
        except TokenError as err:
            self.state.stats.record_token(grant_type, err.error)
            headers = {}
            if err.error == "invalid_client" and request.headers.get("authorization"):
                headers["WWW-Authenticate"] = 'Basic realm="PagerDuty"'
            return oauth_error(err.error, err.description, headers=headers)
        self.state.stats.record_token(grant_type, "ok")
        if fault is not None and fault.kind == "drop":
            return dropped()
        return JSONResponse(body, headers=TOKEN_HEADERS)

    async def revoke(self, request: Request) -> Response:
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
            client = authenticate_client(self.state, request, form)
            value = require_param(form, "token")
        except TokenError as err:
            return oauth_error(err.error, err.description)
        state = self.state
        with state.lock:
            owner = state.refresh_tokens.get(value) or state.access_tokens.get(value)
            if owner is not None and owner.client_id == client.client_id:
                state.revoke_token(value)
        return Response(b"", status_code=200, headers=TOKEN_HEADERS)
