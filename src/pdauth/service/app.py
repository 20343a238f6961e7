"""The service as an ASGI app: ``create_app(settings, owner_resolver=None, …) -> Starlette``.

This module wires the pieces together: the route table (pages, callback, admin, JSON API,
health), the outer security middleware, the request-body cap, and the :class:`Service` object
every handler shares — settings, the Connector (created lazily from settings, or the host's own),
the cookie jar, the connect-session issuer, the API-key verifier, the rate limiter and the
renderer. The app is mountable at any prefix in a Starlette or FastAPI host: URLs are built
from the app's router plus the mount prefix, and a Connector the app creates itself is opened
on first use (Starlette does not run a mounted app's lifespan) and closed by the app's lifespan
when it has one. Who the owner is: ``owner_resolver(request)`` from an embedding host, else the
owner a connect-session link signed the browser in as (see ``connect_sessions.py``).
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from pdauth.client import PagerDutyClient
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.connections import Connection, Connector
from pdauth.errors import StoreError
from pdauth.service.apikeys import ApiKeyVerifier
from pdauth.service.connect_sessions import (
    ConnectSessions,
    MemoryUsedTokens,
    RedisUsedTokens,
    UsedTokens,
    validate_owner,
)
from pdauth.service.cookies import CookieJar
from pdauth.service.ratelimit import RateLimiter, TrustedProxies, client_address
from pdauth.service.requestid import RequestIdMiddleware
from pdauth.service.security import SecurityMiddleware, SecurityPolicy
from pdauth.service.views import ApiError, Renderer

__all__ = ["OwnerResolver", "Service", "ServiceOptions", "create_app"]

log = logging.getLogger("pdauth.service")

OwnerResolver = Callable[[Request], "str | Awaitable[str | None] | None"]

MAX_BODY = 64 * 1024  # every request body; forms and JSON are far smaller


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
        public_url = settings.public_url
        if not public_url:
            # The redirect URI is <service base>/callback; without PDAUTH_PUBLIC_URL, the base
            # is what precedes that (never the Host header, which a client controls).
            parts = urlsplit(settings.redirect_uri)
            path = parts.path
            path = path[: -len("/callback")] if path.endswith("/callback") else ""
            public_url = f"{parts.scheme}://{parts.netloc}{path}"
        admin = settings.admin_password
        return cls(
            public_url=public_url.rstrip("/"),
            trusted_proxies=settings.trusted_proxies,
            connect_rate_limit=settings.connect_rate_limit,
            admin_password=admin.get_secret_value() if admin is not None else None,
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Service:
    """Everything the handlers share; one per app."""

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
        self._connector_lock = anyio.Lock()
        secret = settings.session_secret
        if secret is not None:
            session_key = secret.get_secret_value().encode("utf-8")
        else:
            # Without PDAUTH_SESSION_SECRET, cookies are signed with a per-process key: fine
            # for one process (sessions end on restart), wrong for several instances.
            log.warning("PDAUTH_SESSION_SECRET is not set; using a per-process session key")
            session_key = secrets.token_bytes(32)
        self.cookies = CookieJar(
            session_key, secure=self.options.https, path=self.options.base_path or "/"
        )
        used: UsedTokens
        used = RedisUsedTokens(settings.redis_url) if settings.redis_url else MemoryUsedTokens()
        self._used_tokens = used
        self.connect_sessions = ConnectSessions(settings.key_ring(), used, self.clock)
        self.api_keys = ApiKeyVerifier(key.get_secret_value() for key in settings.api_key_list())
        self.trusted_proxies = TrustedProxies(self.options.trusted_proxies)
        self.limiter = RateLimiter(
            self.options.connect_rate_limit, self.options.rate_window, self.clock
        )
        self.router = Router()
        self.renderer = Renderer(self.router)
        self.policy = SecurityPolicy(
            https=self.options.https,
            form_action_origins=(_origin(settings.authorize_endpoint),),
            max_body_size=MAX_BODY,
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

    async def aclose(self) -> None:
        if self._owns_connector and self._connector is not None:
            connector, self._connector = self._connector, None
            await connector.__aexit__(None, None, None)
        if isinstance(self._used_tokens, RedisUsedTokens):
            await self._used_tokens.aclose()

    # -- who is asking ------------------------------------------------------------------

    async def resolved_owner(self, request: Request) -> str | None:
        """The owner an embedding host names for this request (``None`` without a resolver)."""
        if self.owner_resolver is None:
            return None
        result = self.owner_resolver(request)
        if inspect.isawaitable(result):
            result = await result
        return validate_owner(result)

    def client_key(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(
            peer, request.headers.getlist("x-forwarded-for"), self.trusted_proxies
        )

    def rate_limited(self, request: Request, bucket: str) -> float:
        return self.limiter.hit(f"{bucket}|{self.client_key(request)}")

    async def pd_client(self, connection: Connection) -> PagerDutyClient:
        """A REST client for a connection, from the Connector (shared pool, same refresh path)."""
        connector = await self.connector()
        return await connector.client(connection, timeout=10.0, deadline=20.0)

    def absolute_url(self, scope: Scope, name: str, **params: Any) -> str:
        """An absolute URL on the service's public origin (never built from Host headers)."""
        return self.options.origin + self.renderer.path(scope, name, **params)


def create_app(
    settings: Settings,
    owner_resolver: OwnerResolver | None = None,
    *,
    connector: Connector | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    keeper: bool = False,
    metrics: bool = True,
) -> Starlette:
    """The pdauth service as a Starlette app.

    - ``owner_resolver(request) -> str | None`` (sync or async) names the signed-in user of an
      embedding host app; without it, owners come from connect-session links.
    - ``connector``: a Connector the host manages (its lifecycle stays the host's); otherwise
      the app builds one from ``settings`` (``transport`` routes its HTTP, e.g. to an
      in-process emulator) and closes it in its lifespan.
    - ``keeper``: run the background keeper (due refreshes, revocation outbox, webhooks) in
      the app's lifespan every ``PDAUTH_KEEPER_INTERVAL`` seconds; ``pdauth serve`` turns it
      on. Several instances may run it: leases and claimed outbox rows keep work single.
    - ``metrics``: serve Prometheus metrics at ``/metrics`` (labels never carry ids or secrets).
    """
    from pdauth.service import api, pages

    service = Service(
        settings, owner_resolver, connector=connector, transport=transport, clock=clock
    )
    routes: list[Route] = [*pages.routes(service), *api.routes(service)]
    if metrics:
        routes.append(Route("/metrics", _LazyMetrics(service), methods=["GET", "HEAD"]))
    service.router.routes.extend(routes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if keeper:
                from pdauth.keeper import Keeper

                keeper_ = Keeper(await service.connector(), settings)
                async with keeper_, keeper_.running():
                    yield
            else:
                yield
        finally:
            await service.aclose()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, ApiError):
            response: Response = JSONResponse(
                {"error": {"code": exc.code, "message": exc.message}},
                status_code=exc.status_code,
            )
            if exc.status_code == 401:
                response.headers["www-authenticate"] = "Bearer"
            return response
        response = service.renderer.error(request.scope, exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def store_error(request: Request, exc: Exception) -> Response:
        # The database failed: a retryable 503, with nothing of the error shown.
        log.warning("database error while serving a request: %s", type(exc).__name__)
        return service.renderer.error(request.scope, 503)

    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost, so even a 413/414/500 from the security layer carries a request id.
            Middleware(RequestIdMiddleware),
            Middleware(SecurityMiddleware, policy=service.policy, render_error=_renderer(service)),
        ],
        exception_handlers={HTTPException: http_error, StoreError: store_error},
        lifespan=lifespan,
    )
    app.state.pdauth = service
    return app


class _LazyMetrics:
    """``/metrics``, built on the first scrape: the Connector (and its store) is lazy too."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from pdauth.metrics import metrics_app, metrics_registry

            connector = await self._service.connector()
            self._app = metrics_app(metrics_registry(connector.store, clock=self._service.clock))
        await self._app(scope, receive, send)


def _renderer(service: Service) -> Callable[[Scope, int], Response]:
    def render(scope: Scope, status: int) -> Response:
        return service.renderer.error(scope, status)

    return render
