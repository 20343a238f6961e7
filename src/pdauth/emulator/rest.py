"""The emulated PagerDuty REST API v2 (a subset), for one service region.

Serves ``/users/me``, ``/users``, ``/users/{id}``, ``/services``, ``/services/{id}``,
``/incidents`` (GET and POST), ``/incidents/{id}`` (GET and PUT), ``/webhook_subscriptions`` (and
``/{id}``, ``/{id}/enable``, ``/{id}/ping``; :mod:`~pdauth.emulator.webhook_ops`),
``/abilities``, ``/abilities/{id}``, ``/audit/records`` and ``DELETE /oauth_delegations``
from the seeded :class:`~pdauth.emulator.data.Directory`, with PagerDuty's wire conventions (its
public PagerDuty/developer-docs, REST-API 02-Authentication,
04-Rate-Limits, 09-Pagination, 14-Errors, and the official OpenAPI schema):
``Authorization: Bearer <oauth token>`` or ``Token token=<api key>``, the
``{"error": {"message", "code", "errors"}}`` envelope, classic offset pagination (limit <= 100,
offset + limit <= 10000) and cursor pagination, per-operation Scoped OAuth scopes,
``ratelimit-*`` headers, and injected faults. The EU app is mounted under ``/eu``; a token issued
for the other region is refused with 401. Where PagerDuty is silent the choice is labelled
"Assumption". Every response is JSON except 204s, the header-less 429 and the ``drop`` fault.

Routing is Starlette's, like the identity and control APIs: one :class:`~starlette.routing.Route`
per path (with and without a trailing slash) whose endpoint runs every request through the same
pipeline — injected fault, Accept accounting, authentication, rate limit, then the operation of
that method (405 when there is none) — and unmatched paths take the same pipeline to a 404, so
an unknown path costs rate-limit budget and needs credentials exactly as on PagerDuty. The
operations are in :mod:`~pdauth.emulator.rest_ops`, the rendering in
:mod:`~pdauth.emulator.rest_views`, the vocabulary in :mod:`~pdauth.emulator.rest_support`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from pdauth.emulator.data import Directory
from pdauth.emulator.ratelimit import RateLimiter
from pdauth.emulator.rest_ops import Operations
from pdauth.emulator.rest_support import (
    INTERNAL_ERROR,
    ApiError,
    Principal,
    auth_failed,
    is_classic,
    json_response,
    not_found,
)
from pdauth.emulator.webhook_ops import WebhookOperations

if TYPE_CHECKING:
    from pdauth.emulator.state import EmulatorState

__all__ = ["RestApi", "create_rest_app", "rest_routes"]

logger = logging.getLogger(__name__)

Region = Literal["us", "eu"]
Handler = Callable[[Request, Principal], Awaitable[Response]]

ACCEPT_V2 = "application/vnd.pagerduty+json;version=2"
UNMATCHED = "(unmatched)"
MAX_ID = 64  # a longer path id matches no route (as before: a 404, not a lookup)
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RestApi:
    """ASGI app serving one region's REST API over the shared emulator state."""

    def __init__(self, state: EmulatorState, region: Region) -> None:
        self.state = state
        self.region: Region = region
        self.limiter = RateLimiter(
            limit=state.config.rate_limit,
            window=state.config.rate_window,
            clock=state.clock.now,
            drop_headers=state.config.drop_ratelimit_headers,
            seed=state.config.seed,
        )
        # Accept headers seen ("v2", "json", "any", "missing", "other"): PagerDuty wants the
        # versioned type; the emulator tolerates the rest but keeps count.
        self.accept_counts: Counter[str] = Counter()
        # POST /_emulator/reset starts every credential with a full budget again.
        state.reset_hooks.append(self.limiter.reset)
        state.reset_hooks.append(self.accept_counts.clear)
        self.operations = Operations(state, region)
        self.webhook_operations = WebhookOperations(state, region)
        self.router = Router(routes=self._routes(), redirect_slashes=False, default=self._unmatched)

    def _routes(self) -> list[BaseRoute]:
        ops, hooks = self.operations, self.webhook_operations
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/users/me", {"GET": ops.get_me}),
            ("/users", {"GET": ops.list_users}),
            ("/users/{id}", {"GET": ops.get_user}),
            ("/services", {"GET": ops.list_services}),
            ("/services/{id}", {"GET": ops.get_service}),
            ("/incidents", {"GET": ops.list_incidents, "POST": ops.create_incident}),
            ("/abilities", {"GET": ops.list_abilities}),
            ("/abilities/{id}", {"GET": ops.check_ability}),
            ("/audit/records", {"GET": ops.list_audit_records}),
            ("/incidents/{id}", {"GET": hooks.get_incident, "PUT": hooks.update_incident}),
            ("/oauth_delegations", {"DELETE": ops.delete_oauth_delegations}),
            (
                "/webhook_subscriptions",
                {"GET": hooks.list_subscriptions, "POST": hooks.create_subscription},
            ),
            (
                "/webhook_subscriptions/{id}",
                {
                    "GET": hooks.get_subscription,
                    "PUT": hooks.update_subscription,
                    "DELETE": hooks.delete_subscription,
                },
            ),
            ("/webhook_subscriptions/{id}/enable", {"POST": hooks.enable_subscription}),
            ("/webhook_subscriptions/{id}/ping", {"POST": hooks.ping_subscription}),
        ]
        routes: list[BaseRoute] = []
        for template, handlers in table:
            endpoint = self._endpoint(template, handlers)
            # Every method reaches the endpoint, which answers 405 after authentication.
            routes.append(Route(template, endpoint, methods=None))
            routes.append(Route(template + "/", endpoint, methods=None))
        return routes

    @property
    def directory(self) -> Directory:
        return self.state.directory

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan/websocket: nothing to do here
            return
        await self.router(scope, receive, send)

    def _endpoint(self, template: str, handlers: dict[str, Handler]) -> _Endpoint:
        return _Endpoint(self, template, handlers)

    async def _unmatched(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.dispatch(Request(scope, receive), UNMATCHED, None)
        await response(scope, receive, send)

    async def dispatch(self, request: Request, template: str, handler: Handler | None) -> Response:
        """Answer one request; ``handler`` None is a 405 (or a 404 for :data:`UNMATCHED`)."""
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        response = await self._handle(request, template, handler)
        self.state.stats.record_rest(method, template, response.status_code)
        return response

    async def _handle(self, request: Request, template: str, handler: Handler | None) -> Response:
        fault = self.state.faults.take("rest")
        if fault is not None:
            self.state.stats.record_fault("rest", fault.kind)
            if fault.kind == "500":
                return json_response(500, INTERNAL_ERROR.body())
            if fault.kind == "503":
                return json_response(503, {"error": {"message": "Service Unavailable"}})
            if fault.kind == "timeout":
                await anyio.sleep(fault.delay)
                return json_response(504, {"error": {"message": "Gateway Timeout"}})
        response = await self._process(request, template, handler)
        if fault is not None and fault.kind == "drop":
            # Processed, then "lost" by a load balancer: an empty, non-JSON 502.
            return Response(status_code=502)
        return response

    async def _process(self, request: Request, template: str, handler: Handler | None) -> Response:
        self._count_accept(request.headers.get("accept"))
        try:
            principal = self._authenticate(request.headers.get("authorization"))
        except ApiError as exc:
            return json_response(exc.status, exc.body())
        decision = self.limiter.hit(principal.credential)
        if not decision.allowed:
            self.state.stats.record_429(with_headers=not decision.headerless)
            if decision.headerless:
                return Response(status_code=429)
            response: Response = json_response(
                429, ApiError(429, "Rate Limit Exceeded", 2020).body()
            )
        else:
            response = await self._run(request, principal, template, handler)
        response.headers.update(decision.headers())
        return response

    async def _run(
        self, request: Request, principal: Principal, template: str, handler: Handler | None
    ) -> Response:
        try:
            if handler is None:
                if template == UNMATCHED:
                    raise not_found()
                raise ApiError(405, "Method Not Allowed")  # Assumption: PagerDuty's 405 is unseen
            return await handler(request, principal)
        except ApiError as exc:
            return json_response(exc.status, exc.body())
        except Exception:
            # A bug in the emulator must still answer with PagerDuty's envelope, not a crash.
            logger.exception("emulator REST handler failed on %s", template)
            return json_response(500, INTERNAL_ERROR.body())

    def _count_accept(self, accept: str | None) -> None:
        if accept is None:
            kind = "missing"
        elif ACCEPT_V2 in accept.replace(" ", ""):
            kind = "v2"
        elif "application/json" in accept:
            kind = "json"
        elif "*/*" in accept:
            kind = "any"
        else:
            kind = "other"
        self.accept_counts[kind] += 1

    # -- who is calling ----------------------------------------------------------------------

    def _authenticate(self, header: str | None) -> Principal:
        if header is None or len(header) > 4096:
            raise auth_failed()
        scheme, _, rest = header.strip().partition(" ")
        rest = rest.strip()
        if scheme.lower() == "bearer" and rest and " " not in rest:
            return replace(self._oauth_principal(rest), credential=f"bearer:{rest}")
        if scheme.lower() == "token":
            name, eq, value = rest.partition("=")
            value = value.strip().strip('"')
            if name.strip().lower() == "token" and eq and value and " " not in value:
                return replace(self._key_principal(value), credential=f"token:{value}")
        raise auth_failed()

    def _oauth_principal(self, token: str) -> Principal:
        issued = self.state.authenticate(token)
        if issued is None or issued.region != self.region:
            raise auth_failed()
        account = self.directory.accounts.get(issued.account_id)
        if account is None:
            raise auth_failed()
        user = None
        if issued.user_id is not None:
            user = self.directory.users.get(issued.user_id)
            if user is None:
                raise auth_failed()
        scopes = frozenset(issued.scopes)
        return Principal(
            kind="oauth",
            account=account,
            user=user,
            scopes=scopes,
            app_kind="classic" if is_classic(scopes) else "scoped",
            client_id=issued.client_id,
        )

    def _key_principal(self, value: str) -> Principal:
        key = self.directory.find_api_key(value)
        if key is None:
            raise auth_failed()
        account = self.directory.accounts[key.account_id]
        if account.region != self.region:
            raise auth_failed()
        return Principal(
            kind="api_key",
            account=account,
            user=None,
            scopes=frozenset(),
            app_kind=None,
            read_only=key.read_only,
        )


class _Endpoint:
    """One path's endpoint, an ASGI app so that Starlette hands it every method (a function
    endpoint would be GET-only and answer other methods with its own plain-text 405)."""

    def __init__(self, api: RestApi, template: str, handlers: dict[str, Handler]) -> None:
        self.api = api
        self.template = template
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if len(request.path_params.get("id", "")) > MAX_ID:
            response = await self.api.dispatch(request, UNMATCHED, None)
        else:
            handler = self.handlers.get(request.method)
            response = await self.api.dispatch(request, self.template, handler)
        await response(scope, receive, send)


def create_rest_app(state: EmulatorState, region: Region) -> RestApi:
    """The REST API of ``region`` as an ASGI app (mount US at ``""``, EU at ``"/eu"``)."""
    if region not in ("us", "eu"):
        raise ValueError("region must be 'us' or 'eu'")
    return RestApi(state, region)


def rest_routes(state: EmulatorState, region: Region) -> list[BaseRoute]:
    """The same app as routes, for ``Starlette(routes=[..., *rest_routes(state, "us")])``."""
    return [Mount("", app=create_rest_app(state, region))]
