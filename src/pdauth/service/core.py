"""The :class:`Service` every endpoint shares, its :class:`ServiceOptions`, and how an endpoint
finds it.

One ``Service`` per app holds the settings, the Connector (created lazily from settings, or the
host's own), the cookie jar, the connect-session issuer, the API-key verifier, the rate limiter
and the renderer. ``create_app`` stores it in the app's state; endpoints are module-level
functions that call :func:`service_of` on their request (Starlette style), so each can be read
and tested alone and no endpoint module imports the app module. Who the owner is:
``owner_resolver(request)`` from an embedding host, else the owner a connect-session link signed
the browser in as (see ``connect_sessions.py``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.requests import HTTPConnection, Request
from starlette.routing import Router
from starlette.types import Scope

from pdauth.client import PagerDutyClient
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.connections import Connection, Connector
from pdauth.errors import ConfigurationError
from pdauth.pagerduty_webhooks import MAX_BODY as PAGERDUTY_MAX_BODY
from pdauth.service.apikeys import ApiKeyVerifier
from pdauth.service.connect_sessions import (
    ConnectSessions,
    MemoryUsedTokens,
    RedisUsedTokens,
    UsedTokens,
    validate_owner,
)
from pdauth.service.cookies import CookieJar
from pdauth.service.ratelimit import TrustedProxies, client_address
from pdauth.service.security import SecurityPolicy
from pdauth.service.shared_limits import build_limiter
from pdauth.service.views import Renderer
from pdauth.subscriptions import RECEIVER_PATH

__all__ = ["MAX_BODY", "OwnerResolver", "Service", "ServiceOptions", "service_of"]

log = logging.getLogger("pdauth.service")

OwnerResolver = Callable[[Request], "str | Awaitable[str | None] | None"]

MAX_BODY = 64 * 1024  # every request body; forms and JSON are far smaller
STATE_KEY = "pdauth"


@dataclass(frozen=True)
class ServiceOptions:
    """Service knobs derived from :class:`~pdauth.config.Settings` (see ``from_settings``)."""

    public_url: str
    trusted_proxies: tuple[str, ...] = ()
    connect_rate_limit: int = 30
    rate_window: float = 60.0
    admin_password: str | None = None
    admin_session_seconds: float = 3600.0
    owner_session_seconds: float = 3600.0
    callback_path: str = "/callback"
    try_rate_limit: int = 10
    # An admin session unused this long ends (its absolute lifetime is admin_session_seconds).
    admin_idle_seconds: float = 1800.0
    # The host application's name on the connect-link page ("this application" without one).
    app_name: str | None = None

    @property
    def https(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"

    @property
    def origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        return urlsplit(self.public_url).path.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceOptions:
        """The options for ``settings``; a redirect URI outside the public URL is refused.

        The callback route is the configured redirect URI's path relative to the service's
        public base (:attr:`Settings.service_base_url`), so ``https://app.example.com/oauth/pd``
        with the public URL ``https://app.example.com`` routes ``/oauth/pd``.
        """
        public_url = settings.service_base_url
        callback_path = _callback_path(public_url, urlsplit(settings.redirect_uri).path)
        admin = settings.admin_password
        return cls(
            public_url=public_url,
            trusted_proxies=settings.trusted_proxies,
            connect_rate_limit=settings.connect_rate_limit,
            admin_password=admin.get_secret_value() if admin is not None else None,
            callback_path=callback_path,
        )


def _callback_path(public_url: str, redirect_path: str) -> str:
    # The origins may differ (a service reached under several names); the path decides the route.
    base = urlsplit(public_url).path.rstrip("/")
    if not (redirect_path == base or redirect_path.startswith(base + "/")):
        raise ConfigurationError(
            f"PDAUTH_REDIRECT_URI's path must lie under PDAUTH_PUBLIC_URL's path ({base}/…): "
            "the service can only route callbacks it serves"
        )
    path = redirect_path[len(base) :]
    if path in ("", "/") or path.startswith(("/api/", "/static/", "/admin", "/connections")):
        raise ConfigurationError(
            "PDAUTH_REDIRECT_URI's path clashes with the service's own pages; "
            f"use e.g. {public_url}/callback"
        )
    return path


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Service:
    """Everything the endpoints share; one per app."""

    def __init__(
        self,
        settings: Settings,
        owner_resolver: OwnerResolver | None,
        *,
        connector: Connector | None,
        transport: httpx.AsyncBaseTransport | None,
        clock: Clock | None,
        options: ServiceOptions | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or ServiceOptions.from_settings(settings)
        self.clock: Clock = clock or SystemClock()
        self.owner_resolver = owner_resolver
        self._connector = connector
        self._owns_connector = connector is None
        self._transport = transport
        self.proxy_http: httpx.AsyncClient | None = None  # the proxy's pool, made on first use
        self._connector_lock = anyio.Lock()
        self.lifespan_ran = False
        session_key = _session_key(settings)
        self.cookies = CookieJar(
            session_key, secure=self.options.https, path=self.options.base_path or "/"
        )
        # What admin sessions remember of the admin password: an HMAC under the session key,
        # never the password, so a new password ends every admin session.
        self.admin_fingerprint = admin_password_fingerprint(
            session_key, self.options.admin_password
        )
        used: UsedTokens
        used = (
            RedisUsedTokens(settings.redis_url, prefix=settings.redis_prefix + "connect-session:")
            if settings.redis_url
            else MemoryUsedTokens()
        )
        self._used_tokens = used
        self.connect_sessions = ConnectSessions(settings.key_ring(), used, self.clock)
        self.api_keys = ApiKeyVerifier(key.get_secret_value() for key in settings.api_key_list())
        self.trusted_proxies = TrustedProxies(self.options.trusted_proxies)
        # Shared by every instance through Redis when configured (see shared_limits.py).
        limiter = functools.partial(
            build_limiter,
            settings.redis_url,
            window=self.options.rate_window,
            prefix=settings.redis_prefix,
            clock=self.clock,
        )
        self.limiter = limiter(limit=self.options.connect_rate_limit)
        # "Call PagerDuty" spends the owner's PagerDuty rate limit: a few per minute per owner.
        self.try_limiter = limiter(limit=self.options.try_rate_limit)
        self.router = Router()
        self.renderer = Renderer(self.router)
        self.policy = SecurityPolicy(
            https=self.options.https,
            form_action_origins=(_origin(settings.authorize_endpoint),),
            max_body_size=MAX_BODY,
            large_body_prefixes=(RECEIVER_PATH,),  # PagerDuty's deliveries: up to 256 KB
            large_body_size=PAGERDUTY_MAX_BODY,
        )

    # -- the Connector ----------------------------------------------------------------

    async def connector(self) -> Connector:
        """The Connector, created and opened on first use when the app owns it."""
        if self._connector is not None:
            return self._connector
        async with self._connector_lock:
            if self._connector is None:
                created = Connector(self.settings, clock=self.clock, transport=self._transport)
                self._connector = await created.__aenter__()
        return self._connector

    @property
    def transport(self) -> httpx.AsyncBaseTransport | None:
        """Where the app's own HTTP to PagerDuty goes (``None``: the network)."""
        return self._transport

    async def aclose(self) -> None:
        if self.proxy_http is not None:
            http, self.proxy_http = self.proxy_http, None
            await http.aclose()
        if self._owns_connector and self._connector is not None:
            connector, self._connector = self._connector, None
            await connector.__aexit__(None, None, None)
        if isinstance(self._used_tokens, RedisUsedTokens):
            await self._used_tokens.aclose()
        await self.limiter.aclose()
        await self.try_limiter.aclose()

    # -- who is asking ------------------------------------------------------------------

    async def resolved_owner(self, request: Request) -> str | None:
        """The owner an embedding host names for this request (``None`` without a resolver)."""
        if self.owner_resolver is None:
            return None
        result = self.owner_resolver(request)
        if inspect.isawaitable(result):
            result = await result
        return validate_owner(result)

    def client_key(self, request: HTTPConnection) -> str:
        peer = request.client.host if request.client else None
        return client_address(
            peer, request.headers.getlist("x-forwarded-for"), self.trusted_proxies
        )

    async def rate_limited(self, request: HTTPConnection, bucket: str) -> float:
        """Spend one request of this client's ``bucket``: 0 when allowed, else seconds to wait."""
        return await self.limiter.hit(f"{bucket}|{self.client_key(request)}")

    async def pd_client(self, connection: Connection) -> PagerDutyClient:
        """A REST client for a connection, from the Connector (shared pool, same refresh path)."""
        connector = await self.connector()
        return await connector.client(connection, timeout=10.0, deadline=20.0)

    def path(self, scope: Scope, name: str, **params: Any) -> str:
        """The path of a named route, including the mount prefix."""
        return self.renderer.path(scope, name, **params)

    def absolute_url(self, scope: Scope, name: str, **params: Any) -> str:
        """An absolute URL on the service's public origin (never built from Host headers)."""
        return self.options.origin + self.renderer.path(scope, name, **params)


def admin_password_fingerprint(session_key: bytes, password: str | None) -> str | None:
    """HMAC-SHA256 of the admin password under the session key (hex); None without one."""
    if password is None:
        return None
    message = b"pdauth admin password\0" + password.encode("utf-8")
    return hmac.new(session_key, message, hashlib.sha256).hexdigest()


def _session_key(settings: Settings) -> bytes:
    secret = settings.session_secret
    if secret is not None:
        return secret.get_secret_value().encode("utf-8")
    # Without PDAUTH_SESSION_SECRET, cookies are signed with a per-process key: fine for one
    # process (sessions end on restart), wrong for several instances.
    log.warning("PDAUTH_SESSION_SECRET is not set; using a per-process session key")
    return secrets.token_bytes(32)


def service_of(request: HTTPConnection) -> Service:
    """The :class:`Service` of the pdauth app serving ``request`` (set by ``create_app``)."""
    service = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(service, Service):
        raise RuntimeError("this endpoint belongs to an app made by pdauth.service.create_app")
    return service
