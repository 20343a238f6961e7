"""The pdauth service: "Connect PagerDuty" end to end as a Starlette app.

``create_app(settings, owner_resolver=None, *, connector=None, transport=None, clock=None,
keeper=False, metrics=True)``
returns an ASGI app with the connect flow (``POST /connect`` → PagerDuty → ``GET /callback``),
server-rendered pages (connections, a "try it" panel, disconnect, friendly failure pages), an
admin view, connect-session links for standalone deployments, a JSON API under ``/api/v1``
with its OpenAPI document, a PagerDuty proxy for non-Python backends, and ``/healthz``. Mount it
in a Starlette or FastAPI host with :func:`pdauth.integrations.starlette.mount_pdauth` (which
also runs its lifespan: the Connector and the keeper), or run it with ``pdauth serve``;
``pdauth demo`` runs it against the emulator.
"""

from __future__ import annotations

from pdauth.service.app import OwnerResolver, create_app

__all__ = ["OwnerResolver", "create_app"]
