"""The service as an ASGI app: ``create_app(settings, owner_resolver=None, …) -> Starlette``.

This module only assembles: the route table (the flow, pages, admin, JSON API, ``/metrics``),
the outer middleware (request ids, then security headers and size limits), the exception
handlers that turn errors into responses once at the edge (``edge.py``), and the lifespan that
runs the keeper and closes what the app opened. The :class:`~pdauth.service.core.Service` the
endpoints share sits in ``app.state.pdauth``.

The app is mountable at any prefix in a Starlette or FastAPI host: URLs are built from the
app's router plus the mount prefix, and a Connector the app creates itself is opened on first
use. Starlette does not run a mounted app's lifespan, so a mounted app's keeper never starts
by itself: :mod:`pdauth.integrations.starlette` mounts the app *and* runs its lifespan inside
the host's; mounted any other way with ``keeper=True``, the app logs an ERROR on its first
request that names that fix.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pdauth.clock import Clock
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.keeper import Keeper
from pdauth.service.admin import ROUTES as ADMIN_ROUTES
from pdauth.service.api import ROUTES as API_ROUTES
from pdauth.service.core import STATE_KEY, OwnerResolver, Service, ServiceOptions
from pdauth.service.edge import exception_handlers
from pdauth.service.flow import routes as flow_routes
from pdauth.service.pages import ROUTES as PAGE_ROUTES
from pdauth.service.pd_webhooks import ROUTES as PD_WEBHOOK_ROUTES
from pdauth.service.proxy import ROUTES as PROXY_ROUTES
from pdauth.service.requestid import RequestIdMiddleware
from pdauth.service.scrape import MetricsEndpoint
from pdauth.service.security import SecurityMiddleware

__all__ = ["OwnerResolver", "Service", "ServiceOptions", "create_app"]

log = logging.getLogger("pdauth.service")

KEEPER_NOT_RUNNING = (
    "pdauth: create_app(keeper=True) but the app's lifespan never ran (a mounted Starlette app's "
    "lifespan is not run by its host), so the keeper is NOT running: no proactive refresh, "
    "revocation outbox or webhooks. Mount it with pdauth.integrations.starlette.mount_pdauth "
    "(or pdauth.integrations.fastapi.mount_pdauth), or run `pdauth keeper` as its own process."
)


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
    - ``metrics``: serve Prometheus metrics at ``/metrics`` (labels never carry ids or secrets;
      a 501 naming ``pdauth[metrics]`` without prometheus-client).

    A ``PDAUTH_REDIRECT_URI`` whose path does not lie under the public URL is refused here
    with a :class:`~pdauth.errors.ConfigurationError`.
    """
    service = Service(
        settings, owner_resolver, connector=connector, transport=transport, clock=clock
    )
    routes: list[BaseRoute] = [
        *flow_routes(service.options.callback_path),
        *PAGE_ROUTES,
        *ADMIN_ROUTES,
        *API_ROUTES,
        *PROXY_ROUTES,
        *PD_WEBHOOK_ROUTES,
    ]
    if metrics:
        routes.append(Route("/metrics", MetricsEndpoint(service), methods=["GET", "HEAD"]))
    service.router.routes.extend(routes)
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost, so even a 413/414/500 from the security layer carries a request id.
            Middleware(RequestIdMiddleware),
            Middleware(KeeperCheck, service=service, wanted=keeper),
            Middleware(SecurityMiddleware, policy=service.policy, render_error=_renderer(service)),
        ],
        exception_handlers=dict(exception_handlers()),
        lifespan=_lifespan(service, keeper),
    )
    setattr(app.state, STATE_KEY, service)
    return app


def _lifespan(
    service: Service, keeper: bool
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.lifespan_ran = True
        try:
            if keeper:
                keeper_ = Keeper(await service.connector(), service.settings)
                async with keeper_, keeper_.running():
                    yield
            else:
                yield
        finally:
            await service.aclose()

    return lifespan


class KeeperCheck:
    """Logs one ERROR when ``keeper=True`` was asked for but the lifespan that runs it never
    ran (the app was mounted without :mod:`pdauth.integrations.starlette`): never silently."""

    def __init__(self, app: ASGIApp, service: Service, wanted: bool) -> None:
        self.app = app
        self._service = service
        self._pending = wanted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._pending and scope["type"] == "http":
            self._pending = False
            if not self._service.lifespan_ran:
                log.error(KEEPER_NOT_RUNNING)
        await self.app(scope, receive, send)


def _renderer(service: Service) -> Callable[[Scope, int], Response]:
    def render(scope: Scope, status: int) -> Response:
        return service.renderer.error(scope, status)

    return render
