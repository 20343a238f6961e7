"""pdauth inside a Starlette host: mount the service and run its lifespan with the host's.

``mount_pdauth(host, settings, path="/pagerduty", owner_resolver=...)`` is the one call: it
builds the service (:func:`pdauth.service.create_app`), mounts it at ``path``, and wraps the
host's lifespan so that the service's runs inside it — the Connector is opened at start-up
(a bad configuration fails then, not on the first click), the keeper (due refreshes, the
revocation outbox, webhooks) runs while the host runs, and both close at shutdown. Starlette
never runs a mounted app's lifespan by itself; a service mounted any other way with
``keeper=True`` logs an ERROR naming this function. Mounting also installs pdauth's log
redaction on the host's access loggers (uvicorn, gunicorn, …), so the callback's ``code`` and
``state`` never reach the host's logs.

Sessions: pdauth keeps its own signed cookies (``pdauth_session``, ``pdauth_binding``) and
needs no session middleware. Who the signed-in user is comes from ``owner_resolver(request)``;
:func:`session_owner` makes one that reads the host's ``request.session`` when the host has
Starlette's ``SessionMiddleware`` and answers "nobody" (never an error) when it has none.

For the host's own endpoints: :func:`connector_of`, :func:`owner_of` and :func:`client_for`
give the Connector, the signed-in owner, and an owner-checked ``PagerDutyClient`` of one of
the owner's connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.routing import Mount

from pdauth.client import PagerDutyClient
from pdauth.clock import Clock
from pdauth.config import Settings
from pdauth.connections import Connection, Connector
from pdauth.errors import ConnectionNotFoundError
from pdauth.logs import protect_host_loggers
from pdauth.service import OwnerResolver, create_app
from pdauth.service.core import Service

__all__ = ["client_for", "connector_of", "mount_pdauth", "owner_of", "service_of", "session_owner"]

HOST_STATE_KEY = "pdauth"
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def mount_pdauth(
    host: Starlette,
    settings: Settings | None = None,
    *,
    path: str = "/pagerduty",
    owner_resolver: OwnerResolver | None = None,
    connector: Connector | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    keeper: bool = True,
    metrics: bool = False,
) -> Starlette:
    """Mount the pdauth service on ``host`` at ``path`` and run it within the host's lifespan.

    ``settings`` defaults to ``Settings.from_env()``; ``PDAUTH_REDIRECT_URI`` must end in
    ``<path>/callback`` on the host's public address. The other arguments are
    :func:`~pdauth.service.create_app`'s (``keeper`` defaults to on here: the lifespan that runs
    it is guaranteed). Returns the mounted service app.
    """
    settings = settings if settings is not None else Settings.from_env()
    app = create_app(
        settings,
        owner_resolver,
        connector=connector,
        transport=transport,
        clock=clock,
        keeper=keeper,
        metrics=metrics,
    )
    host.router.routes.append(Mount(path.rstrip("/"), app=app, name="pdauth"))
    setattr(host.state, HOST_STATE_KEY, app.state.pdauth)
    host.router.lifespan_context = _composed(host.router.lifespan_context, app)
    protect_host_loggers(settings)
    return app


def _composed(host_lifespan: Lifespan, service_app: Starlette) -> Lifespan:
    """The host's lifespan with the service's inside it (host state passes through)."""
    service: Service = service_app.state.pdauth

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with host_lifespan(app) as state, service_app.router.lifespan_context(service_app):
            await service.connector()  # open now: a bad configuration fails at start-up
            yield state

    return lifespan


def session_owner(key: str = "user") -> OwnerResolver:
    """An owner resolver reading ``request.session[key]`` (a non-empty string) when the host
    has ``SessionMiddleware``; without it, nobody is signed in (no error)."""

    def resolve(request: Request) -> str | None:
        if "session" not in request.scope:
            return None
        value = request.session.get(key)
        return value if isinstance(value, str) and value else None

    return resolve


def service_of(conn: HTTPConnection) -> Service:
    """The service :func:`mount_pdauth` mounted on the host serving ``conn``."""
    service = getattr(conn.app.state, HOST_STATE_KEY, None)
    if not isinstance(service, Service):
        raise RuntimeError("call pdauth.integrations.starlette.mount_pdauth(host, …) first")
    return service


async def connector_of(conn: HTTPConnection) -> Connector:
    """The service's Connector (opened by the host's lifespan)."""
    return await service_of(conn).connector()


async def owner_of(conn: HTTPConnection) -> str | None:
    """The signed-in owner: the service's ``owner_resolver``, else the owner a connect link
    signed this browser in as; ``None`` when nobody is."""
    service = service_of(conn)
    if service.owner_resolver is not None and isinstance(conn, Request):
        return await service.resolved_owner(conn)
    session = service.cookies.read_session(conn, service.clock.now())
    return session.owner_at(service.clock.now()) if session is not None else None


@asynccontextmanager
async def client_for(
    conn: HTTPConnection, connection: str | Connection | None = None
) -> AsyncIterator[PagerDutyClient]:
    """A ``PagerDutyClient`` for one of the signed-in owner's connections (by id, or their
    newest active one when ``connection`` is None). 401 without an owner, 404 for a
    connection that is not theirs or when they have none active."""
    owner = await owner_of(conn)
    if owner is None:
        raise HTTPException(401, "sign in first")
    connector = await connector_of(conn)
    try:
        found = await _owned(connector, owner, connection)
    except ConnectionNotFoundError:
        raise HTTPException(404, "no such PagerDuty connection") from None
    async with await connector.client(found) as client:
        yield client


async def _owned(
    connector: Connector, owner: str, connection: str | Connection | None
) -> Connection:
    if isinstance(connection, Connection):
        connection = connection.id
    if connection is not None:
        return await connector.get(connection, owner=owner)
    active = await connector.connections(owner, status="active")
    if not active:
        raise ConnectionNotFoundError("no active connection")
    return max(active, key=lambda c: c.created_at or 0.0)
