"""The I/O edge to PagerDuty's identity service: token endpoint, JWKS, discovery, ``/users/me``.

:class:`IdentityClient` sends the :class:`~pdauth.oauth.FormRequest` values that the pure
``pdauth.oauth`` core builds (RFC 6749 §4.1.3 code exchange, §6 refresh, §4.4 client
credentials, RFC 7009 §2.1 revocation), authenticated as ``settings.token_auth_method`` says
(``client_secret_post`` or HTTP Basic, RFC 6749 §2.3.1), and hands the raw answers back to
``pdauth.oauth`` for parsing. It never follows redirects, caps every body it reads, bounds every
call by ``settings.http_timeout`` (well under PagerDuty's 30 s code life) and turns connect
errors and timeouts into :class:`~pdauth.errors.TransportError`. A code exchange is sent once;
only a connect error — when the request surely never left — earns a single retry (RFC 6749
§4.1.2: a code is single use, and a strict server revokes the grant of a replayed one). It
verifies id_tokens with joserfc (RS256 only, never ``none`` or HS*) against the JWKS, which it
caches and refetches — at most once per ``jwks_refetch_interval`` — when a token names an
unknown ``kid`` (OIDC Core §10.1.1), then checks the claims with
:func:`pdauth.oauth.identity_from_claims`. The expected issuer is ``settings.issuer`` or, when
unset, the ``issuer`` of the OIDC discovery document at ``settings.discovery_endpoint``
(PagerDuty's documented and observed issuers differ). A discovery or JWKS URL with nothing there
(404/410) is a :class:`~pdauth.errors.ConfigurationError` naming the URL;
:meth:`IdentityClient.ensure_ready` finds it before a connect flow spends its pending
authorization.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from pdauth._portal import AsyncClosing
from pdauth.client.http import http_client
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.errors import ConfigurationError, IdTokenError, OAuthError, TransportError
from pdauth.metrics import token_request_timer
from pdauth.oauth import (
    AccountIdentity,
    FormRequest,
    TokenSet,
    client_credentials_request,
    code_exchange_request,
    identity_from_claims,
    parse_revocation_response,
    parse_token_response,
    refresh_request,
    revocation_request,
)

__all__ = ["IdentityClient", "PagerDutyUser"]

# Token responses are capped at 64 KiB by pdauth.oauth; read one byte more so it can tell.
MAX_TOKEN_BODY = 64 * 1024
MAX_DOCUMENT_BODY = 256 * 1024  # JWKS / discovery / users/me
MAX_JWKS_KEYS = 50
JWKS_MAX_AGE = 3600.0  # PagerDuty: "keys may rotate"; an unknown kid refetches sooner
ALLOWED_ID_TOKEN_ALGORITHMS = ("RS256",)
PAGERDUTY_ACCEPT = "application/vnd.pagerduty+json;version=2"

_PRINTABLE = re.compile(r"[\x20-\x7e\u00a0-\uffff]{1,255}")


@dataclass(frozen=True)
class PagerDutyUser:
    """What ``GET /users/me`` tells us about the connected user (no secrets)."""

    id: str
    name: str | None
    email: str | None
    html_url: str | None = None


@dataclass(frozen=True)
class _Raw:
    status: int
    body: bytes = field(repr=False)
    content_type: str | None


@dataclass
class _JwksCache:
    keys: tuple[RSAKey, ...] = ()
    fetched_at: float | None = None  # monotonic


def usable_signing_keys(jwks: Any) -> tuple[RSAKey, ...]:
    """The keys of a JWKS document that may verify an id_token: RSA, for signing, RS256.

    Only public members are imported (a private ``d`` in a JWKS is ignored, never used), at
    most ``MAX_JWKS_KEYS`` entries are looked at, and a malformed key is simply not a
    candidate. ``pdauth doctor`` applies the same rule, so it reports exactly the keys pdauth
    would use.
    """
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(entries, list):
        return ()
    keys: list[RSAKey] = []
    for entry in entries[:MAX_JWKS_KEYS]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        public = {k: v for k, v in entry.items() if k in ("kty", "n", "e", "kid", "use", "alg")}
        try:
            keys.append(RSAKey.import_key(public))
        except (JoseError, ValueError, TypeError):
            continue
    return tuple(keys)


class IdentityClient(AsyncClosing):
    """Talks to the identity service; holds (and, when it made it, closes) an httpx client.

    ``http``: an existing ``httpx.AsyncClient`` to use (not closed here); otherwise one is made
    with ``transport`` (tests route it to the in-process emulator with ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        jwks_refetch_interval: float = 30.0,
    ) -> None:
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self._timeout = float(settings.http_timeout)
        self._http, self._owns_http = http_client(http, transport, self._timeout)
        self._jwks = _JwksCache()
        self._jwks_lock = anyio.Lock()
        self._jwks_refetch_interval = jwks_refetch_interval
        self._last_forced_refetch: float | None = None
        self._issuer: str | None = settings.issuer
        self._issuer_lock = anyio.Lock()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def known_issuer(self) -> str | None:
        """The expected issuer if already known (configured or discovered), else None."""
        return self._issuer

    # -- token endpoint --------------------------------------------------------------------

    def _client_secret(self) -> str | None:
        secret = self._settings.client_secret
        return secret.get_secret_value() if secret is not None else None

    async def exchange_code(
        self,
        code: str,
        code_verifier: str,
        *,
        redirect_uri: str | None = None,
        required_scopes: tuple[str, ...] | frozenset[str] | None = None,
    ) -> TokenSet:
        """RFC 6749 §4.1.3 + RFC 7636 §4.5: exchange a code, once.

        Raises the ``pdauth.oauth`` parse errors (``InvalidGrantError``, ``InvalidClientError``,
        ``InsufficientScopeError``, …) or :class:`TransportError`. Never retried after an
        answer; retried once only on a connect error (the request never left).
        """
        request = code_exchange_request(
            self._settings.token_endpoint,
            client_id=self._settings.client_id,
            client_secret=self._client_secret(),
            code=code,
            redirect_uri=redirect_uri or self._settings.redirect_uri,
            code_verifier=code_verifier,
            auth_method=self._settings.token_auth_method,
        )
        scopes = self._settings.scopes if required_scopes is None else required_scopes
        return await self._token_call(
            "authorization_code",
            request,
            required_scopes=tuple(scopes),
            requested_scopes=tuple(scopes),
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        """RFC 6749 §6: trade a refresh token for a new pair (PagerDuty rotates it every time).

        No scope check here: the old refresh token is already spent when the answer arrives,
        so the new pair must reach the database whatever scopes it carries. The request is
        sent once (a retry is the TokenManager's decision); a connect error is retried once
        because the request surely never left.
        """
        request = refresh_request(
            self._settings.token_endpoint,
            client_id=self._settings.client_id,
            client_secret=self._client_secret(),
            refresh_token=refresh_token,
            auth_method=self._settings.token_auth_method,
        )
        return await self._token_call(
            "refresh_token", request, previous_refresh_token=refresh_token
        )

    async def client_credentials(self, scopes: tuple[str, ...] | frozenset[str]) -> TokenSet:
        """RFC 6749 §4.4: an app token (PagerDuty Scoped private apps; ``as_account-…`` scope)."""
        secret = self._client_secret()
        if secret is None:
            raise ConfigurationError("app tokens need PDAUTH_CLIENT_SECRET (a Scoped private app)")
        request = client_credentials_request(
            self._settings.token_endpoint,
            client_id=self._settings.client_id,
            client_secret=secret,
            scopes=tuple(scopes),
            auth_method=self._settings.token_auth_method,
        )
        required = tuple(s for s in scopes if not s.startswith("as_account-"))
        return await self._token_call(
            "client_credentials", request, required_scopes=required, requested_scopes=tuple(scopes)
        )

    async def _token_call(
        self,
        grant: str,
        request: FormRequest,
        *,
        required_scopes: tuple[str, ...] = (),
        requested_scopes: tuple[str, ...] | None = None,
        previous_refresh_token: str | None = None,
    ) -> TokenSet:
        """Send one token request (timed per ``grant``) and parse the answer with its checks."""
        now = self._clock.now()
        with token_request_timer(grant, self._clock):
            raw = await self._post_form(request)
        return parse_token_response(
            raw.status,
            raw.body,
            now=now,
            content_type=raw.content_type,
            required_scopes=required_scopes,
            requested_scopes=requested_scopes,
            previous_refresh_token=previous_refresh_token,
        )

    async def revoke(
        self, token: str, token_type_hint: Literal["refresh_token", "access_token"]
    ) -> None:
        """RFC 7009 §2.1 at ``settings.revocation_endpoint`` (PagerDuty documents none).

        Raises ``OAuthError("temporarily_unavailable")`` on 503 (retry later), other
        ``OAuthError``s on refusals and :class:`TransportError` when unreachable.
        """
        endpoint = self._settings.revocation_endpoint
        if endpoint is None:
            raise OAuthError("unsupported", "no revocation endpoint is configured")
        request = revocation_request(
            endpoint,
            client_id=self._settings.client_id,
            client_secret=self._client_secret(),
            token=token,
            token_type_hint=token_type_hint,
            auth_method=self._settings.token_auth_method,
        )
        raw = await self._post_form(request)
        parse_revocation_response(raw.status, raw.body)

    async def _post_form(self, request: FormRequest) -> _Raw:
        headers = dict(request.headers)
        body = request.body()
        # One retry, and only when the connection was never established: anything later may
        # have reached the server (a code is single use; a refresh token rotates).
        for attempt in (1, 2):
            try:
                return await self._send(
                    request.method, request.url, headers=headers, content=body, cap=MAX_TOKEN_BODY
                )
            except _NotSentError:
                if attempt == 2:
                    break
        raise TransportError("could not connect to the PagerDuty identity service")

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        cap: int,
    ) -> _Raw:
        try:
            # httpx's own timeout does not bound an ASGI transport; this bounds both.
            with anyio.fail_after(self._timeout):
                async with self._http.stream(
                    method, url, headers=dict(headers), content=content
                ) as response:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > cap:  # enough to know it is too big; stop reading
                            break
                    return _Raw(
                        response.status_code,
                        b"".join(chunks)[: cap + 1],
                        response.headers.get("content-type"),
                    )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise _NotSentError from None
        except (httpx.TimeoutException, TimeoutError):
            raise TransportError("the PagerDuty identity service did not answer in time") from None
        except httpx.HTTPError as exc:
            # Exception text from httpx names the URL at most; still, say only the class.
            raise TransportError(
                f"talking to the PagerDuty identity service failed ({type(exc).__name__})"
            ) from None

    async def _get_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        missing: str | None = None,
    ) -> Any:
        """GET a JSON document. ``missing``: what to tell the operator when ``url`` is not
        there (404/410) — a wrong URL in the configuration, not a passing server fault."""
        try:
            raw = await self._send(
                "GET",
                url,
                headers={"Accept": "application/json", **(headers or {})},
                cap=MAX_DOCUMENT_BODY,
            )
        except _NotSentError:
            raise TransportError("could not connect to the PagerDuty identity service") from None
        if raw.status in (404, 410) and missing is not None:
            # The URL comes from the settings, which refuse credentials in URLs.
            raise ConfigurationError(f"nothing at {url} (HTTP {raw.status}): {missing}")
        if raw.status != 200:
            raise OAuthError("server_error", f"the identity service answered {raw.status}")
        if len(raw.body) > MAX_DOCUMENT_BODY:
            raise OAuthError("server_error", "the identity service's document is too large")
        try:
            return json.loads(raw.body)
        except (ValueError, RecursionError):
            raise OAuthError(
                "server_error", "the identity service's document is not JSON"
            ) from None

    # -- issuer and keys -------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Learn (and cache) what completing a connect flow needs: the issuer and the JWKS.

        Call it before a pending authorization is consumed, so that a configuration error —
        a discovery or JWKS URL with nothing there, raised as
        :class:`~pdauth.errors.ConfigurationError` naming the URL and the variable to fix —
        leaves the flow intact for a retry once it is fixed. Other failures raise as
        :meth:`issuer` does (:class:`~pdauth.errors.TransportError`, ``OAuthError``). Cheap
        once warm: the issuer is kept for the client's life, the JWKS for an hour.
        """
        await self.issuer()
        await self._signing_keys(None)

    async def issuer(self) -> str:
        """The expected id_token ``iss``: ``settings.issuer``, else the discovery document's."""
        if self._issuer is not None:
            return self._issuer
        async with self._issuer_lock:
            if self._issuer is None:
                doc = await self._get_json(
                    self._settings.discovery_endpoint,
                    missing="set PDAUTH_DISCOVERY_URL to the OIDC discovery document "
                    "(or PDAUTH_ISSUER to the expected issuer)",
                )
                issuer = doc.get("issuer") if isinstance(doc, dict) else None
                if not isinstance(issuer, str) or not issuer or len(issuer) > 512:
                    raise OAuthError(
                        "server_error", "the OIDC discovery document has no valid issuer"
                    )
                self._issuer = issuer
            return self._issuer

    async def _load_jwks(self) -> tuple[RSAKey, ...]:
        doc = await self._get_json(
            self._settings.jwks_endpoint,
            missing="set PDAUTH_JWKS_URL to the identity service's JWKS document",
        )
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise OAuthError("server_error", "the JWKS document has no key list")
        return usable_signing_keys(doc)

    async def _signing_keys(self, kid: str | None) -> tuple[RSAKey, ...]:
        async with self._jwks_lock:
            now = self._clock.monotonic()
            cache = self._jwks
            if cache.fetched_at is None or now - cache.fetched_at > JWKS_MAX_AGE:
                self._jwks = cache = _JwksCache(await self._load_jwks(), now)
            if kid is None:
                return cache.keys
            found = tuple(k for k in cache.keys if k.kid == kid)
            if found:
                return found
            # Unknown kid: the server may have rotated. Refetch, but not on every forged kid.
            last = self._last_forced_refetch
            if last is None or now - last >= self._jwks_refetch_interval:
                self._last_forced_refetch = now
                self._jwks = cache = _JwksCache(await self._load_jwks(), now)
                found = tuple(k for k in cache.keys if k.kid == kid)
            return found

    async def verify_id_token(
        self, id_token: str, *, access_token: str | None = None
    ) -> AccountIdentity:
        """Verify the signature (RS256, JWKS) and claims; return the account it names.

        With ``access_token``, an ``at_hash`` claim must match it (OIDC Core §3.1.3.6).
        Every failure is :class:`~pdauth.errors.IdTokenError` naming the problem, not values.
        """
        header = _peek_header(id_token)
        alg = header.get("alg")
        if alg not in ALLOWED_ID_TOKEN_ALGORITHMS:
            raise IdTokenError("id_token alg must be RS256")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise IdTokenError("id_token kid must be a string")
        candidates = await self._signing_keys(kid)
        if not candidates:
            raise IdTokenError("id_token is signed with a key that is not in the JWKS")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                token = jwt.decode(id_token, key, algorithms=list(ALLOWED_ID_TOKEN_ALGORITHMS))
            except (JoseError, ValueError, TypeError):
                continue
            claims = dict(token.claims)
            break
        if claims is None:
            raise IdTokenError("id_token signature does not verify")
        identity = identity_from_claims(
            claims,
            client_id=self._settings.client_id,
            issuer=await self.issuer(),
            api_base_urls=self._settings.api_base_urls,
            now=self._clock.now(),
        )
        at_hash = claims.get("at_hash")
        if access_token is not None and at_hash is not None:
            digest = hashlib.sha256(access_token.encode("utf-8")).digest()
            expected = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")
            if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash, expected):
                raise IdTokenError("id_token at_hash does not match the access token")
        return identity

    # -- REST: who is this? ----------------------------------------------------------------

    async def fetch_user(self, api_base_url: str, access_token: str) -> PagerDutyUser | None:
        """``GET {api_base_url}/users/me``; ``None`` when it fails in any way (best effort).

        ``api_base_url`` must be one of ``settings.api_base_urls`` (the token goes nowhere
        else; docs/SECURITY.md item 21).
        """
        bases = {u.rstrip("/") for u in self._settings.api_base_urls.values()}
        if api_base_url.rstrip("/") not in bases:
            raise ValueError("api_base_url is not one of the configured PagerDuty API bases")
        try:
            doc = await self._get_json(
                api_base_url.rstrip("/") + "/users/me",
                headers={"Accept": PAGERDUTY_ACCEPT, "Authorization": f"Bearer {access_token}"},
            )
        except (OAuthError, TransportError):
            return None
        user = doc.get("user") if isinstance(doc, dict) else None
        if not isinstance(user, dict):
            return None
        user_id = user.get("id")
        if not isinstance(user_id, str) or not re.fullmatch(r"[A-Za-z0-9]{1,64}", user_id):
            return None
        return PagerDutyUser(
            id=user_id,
            name=_text(user.get("name")),
            email=_text(user.get("email")),
            html_url=_text(user.get("html_url")),
        )


class _NotSentError(Exception):
    """Internal: the connection was never established, so the request never left."""


def _text(value: object) -> str | None:
    if isinstance(value, str) and _PRINTABLE.fullmatch(value):
        return value
    return None


def _peek_header(id_token: object) -> dict[str, Any]:
    """The JOSE header, only to choose the key and refuse bad algorithms before verifying."""
    if not isinstance(id_token, str) or len(id_token) > 16_384:
        raise IdTokenError("id_token is not a compact JWS")
    parts = id_token.split(".")
    if len(parts) != 3 or not all(parts):
        raise IdTokenError("id_token is not a compact JWS")
    segment = parts[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise IdTokenError("id_token header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise IdTokenError("id_token header is not a JSON object")
    return header
