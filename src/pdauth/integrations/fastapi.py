"""pdauth inside a FastAPI host: :func:`mount_pdauth` plus dependencies for ``Depends``.

``mount_pdauth(app, settings, path="/pagerduty", owner_resolver=...)`` mounts the service and
runs its lifespan (the Connector, the keeper) inside the host's — the same call as
:mod:`pdauth.integrations.starlette`, whose docstring says what it does and which sessions it
needs (none of its own; :func:`session_owner` reads the host's ``SessionMiddleware`` session
when there is one). The dependencies, also as ``Annotated`` types (:data:`PagerDuty`,
:data:`Owner`, :data:`ConnectorDep`)::

    @app.get("/incidents")
    async def incidents(pd: PagerDuty) -> ...

- :func:`get_connector` — the service's :class:`~pdauth.connections.Connector`;
- :func:`get_owner` — the signed-in owner, or 401;
- :func:`pagerduty_client` — a ``PagerDutyClient`` for the signed-in owner's connection named
  by a ``connection_id`` path or query parameter, else their newest active one (404 when
  it is not theirs or they have none); closed when the request ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from pdauth.client import PagerDutyClient
from pdauth.connections import Connector
from pdauth.integrations.starlette import (
    client_for,
    connector_of,
    mount_pdauth,
    owner_of,
    session_owner,
)

__all__ = [
    "ConnectorDep",
    "Owner",
    "PagerDuty",
    "get_connector",
    "get_owner",
    "mount_pdauth",
    "pagerduty_client",
    "session_owner",
]


async def get_connector(request: Request) -> Connector:
    """The Connector of the service :func:`mount_pdauth` mounted."""
    return await connector_of(request)


async def get_owner(request: Request) -> str:
    """The signed-in owner (the service's ``owner_resolver``); 401 when nobody is."""
    owner = await owner_of(request)
    if owner is None:
        raise HTTPException(status_code=401, detail="sign in first")
    return owner


async def pagerduty_client(
    request: Request, connection_id: str | None = None
) -> AsyncIterator[PagerDutyClient]:
    """An owner-checked ``PagerDutyClient`` (see the module docstring)."""
    async with client_for(request, connection_id) as client:
        yield client


#: ``pd: PagerDuty`` in an endpoint's signature: :func:`pagerduty_client`.
PagerDuty = Annotated[PagerDutyClient, Depends(pagerduty_client)]
#: ``owner: Owner``: :func:`get_owner`.
Owner = Annotated[str, Depends(get_owner)]
#: ``connector: ConnectorDep``: :func:`get_connector`.
ConnectorDep = Annotated[Connector, Depends(get_connector)]
