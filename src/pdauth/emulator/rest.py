"""The emulated PagerDuty REST API v2 (a subset), for one service region.

Serves ``/users/me``, ``/users``, ``/users/{id}``, ``/services``, ``/services/{id}``,
``/incidents`` (GET and POST), ``/abilities``, ``/abilities/{id}``, ``/audit/records`` and
``DELETE /oauth_delegations`` from the seeded :class:`~pdauth.emulator.data.Directory`, with
PagerDuty's wire conventions (REST docs 02-Authentication, 04-Rate-Limits, 09-Pagination,
14-Errors and the official OpenAPI schema): ``Authorization: Bearer <oauth token>`` or
``Token token=<api key>``, the ``{"error": {"message", "code", "errors"}}`` envelope, classic
offset pagination (limit <= 100, offset + limit <= 10000) and cursor pagination, per-operation
Scoped OAuth scopes, ``ratelimit-*`` headers, and injected faults. The EU app is mounted under
``/eu``; a token issued for the other region is refused with 401. Where PagerDuty is silent the
choice is labelled "Assumption" below. Every response is JSON except 204s, the header-less 429
and the ``drop`` fault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from pdauth.emulator.data import (
    Account,
    AuditRecord,
    Directory,
    Incident,
    Service,
    User,
)
from pdauth.emulator.ratelimit import RateLimiter

if TYPE_CHECKING:
    from pdauth.emulator.state import EmulatorState

__all__ = ["RestApi", "create_rest_app", "rest_routes"]

logger = logging.getLogger(__name__)

Region = Literal["us", "eu"]

ACCEPT_V2 = "application/vnd.pagerduty+json;version=2"
CLASSIC_DEFAULT_LIMIT = 25
CLASSIC_MAX_LIMIT = 100  # 09-Pagination.md: "cannot exceed 100"
CLASSIC_WINDOW = 10_000  # 09-Pagination.md: offset + limit may not exceed 10000
CURSOR_DEFAULT_LIMIT = 25  # Assumption: PagerDuty documents no default/maximum for /audit/records
CURSOR_MAX_LIMIT = 100
INCIDENT_DEFAULT_RANGE = timedelta(days=30)  # schema: "default is 1 month"
INCIDENT_MAX_RANGE = timedelta(days=183)  # schema: "Maximum range is 6 months"
AUDIT_DEFAULT_RANGE = timedelta(hours=24)  # schema: since defaults to now() - 24 hours
AUDIT_MAX_RANGE = timedelta(days=31)  # schema: until may not be more than 31 days after since
MAX_BODY = 64 * 1024
_INT = re.compile(r"[0-9]{1,9}")
_READ_ONLY_ROLES = frozenset({"observer", "read_only_user", "read_only_limited_user"})
_ADMIN_ROLES = frozenset({"admin", "owner"})
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


# -- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A PagerDuty error response; raised by handlers, rendered by the dispatcher."""

    def __init__(
        self,
        status: int,
        message: str,
        code: int | None = None,
        errors: Iterable[str] = (),
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = list(errors)
        self.extra = dict(extra or {})

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.errors:
            error["errors"] = self.errors
        error.update(self.extra)
        return {"error": error}


_INTERNAL = ApiError(500, "An internal error has occurred. PagerDuty team has been notified.", 2000)


def _invalid(*errors: str) -> ApiError:
    return ApiError(400, "Invalid Input Provided", 2001, errors)


def _not_found() -> ApiError:
    return ApiError(404, "Not Found", 2100)


def _auth_failed() -> ApiError:
    return ApiError(401, "Authentication failed", 2006)


def _access_denied(reason: str) -> ApiError:
    return ApiError(403, "Access Denied", 2010, [reason])


def _missing_scope(scope: str) -> ApiError:
    # Observed shape (terraform-provider-pagerduty #1027/#1078): no numeric code.
    return ApiError(403, "Token missing required scopes", extra={"required_scopes": scope})


# -- who is calling -------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: Literal["api_key", "oauth"]
    account: Account
    user: User | None
    scopes: frozenset[str]
    app_kind: Literal["classic", "scoped"] | None  # None for API keys
    read_only: bool = False
    client_id: str | None = None
    # The credential as presented ("bearer:<token>" / "token:<key>"), for the rate-limit bucket.
    credential: str = field(default="", repr=False)

    def require(self, scope: str | None, *, write: bool) -> None:
        """Enforce the operation's scope. ``scope`` is the schema's "Scoped OAuth requires"."""
        if self.kind == "api_key":
            if write and self.read_only:
                raise _access_denied("This API key is read-only.")
            return
        if self.app_kind == "classic":
            # Assumption: a Classic `write` token may also read (PagerDuty's docs don't say).
            needed = "write" if write else "read"
            if needed not in self.scopes and not (needed == "read" and "write" in self.scopes):
                raise _missing_scope(needed)
        elif scope is not None and scope not in self.scopes:
            raise _missing_scope(scope)
        if write and self.user is not None and self.user.role in _READ_ONLY_ROLES:
            raise _access_denied("Your role does not allow this action.")


def _classic(scopes: frozenset[str]) -> bool:
    # Classic apps carry only `read`/`write` (+ `openid`); a scoped token never has them.
    return bool(scopes & {"read", "write"})


# -- time and parameters --------------------------------------------------------------------


def _iso(ts: float, *, millis: bool = False) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(name: str, raw: str) -> float:
    text = raw.strip()
    if not text or len(text) > 64:
        raise ApiError(400, "Invalid Input Provided", 2004, [f"{name} is not a valid date-time."])
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # Assumption: naive times are UTC
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400, "Invalid Input Provided", 2004, [f"{name} is not a valid date-time."]
        ) from None


def _parse_int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):
        raise _invalid(f"{name.capitalize()} must be a non-negative integer.")
    return int(raw)


def _parse_bool(params: QueryParams, name: str) -> bool:
    # PagerDuty documents lowercase `true`; anything else but `false` is refused (assumption).
    raw = params.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise _invalid(f"{name.capitalize()} must be true or false.")


def _enum_list(params: QueryParams, name: str, allowed: Iterable[str]) -> list[str]:
    values = params.getlist(name)
    allowed_set = set(allowed)
    bad = [v for v in values if v not in allowed_set]
    if bad:
        raise _invalid(f"{name} must be one of: {', '.join(sorted(allowed_set))}.")
    return list(dict.fromkeys(values))


def _classic_page(params: QueryParams, items: list[Any]) -> tuple[list[Any], dict[str, object]]:
    limit = _parse_int(params, "limit", CLASSIC_DEFAULT_LIMIT)
    offset = _parse_int(params, "offset", 0)
    total = _parse_bool(params, "total")
    if limit < 1:
        raise _invalid("Limit must be at least 1.")  # Assumption: PagerDuty's answer is unknown
    # Assumption: like PagerDuty's "limit … cannot exceed 100", a bigger limit is clamped and
    # the clamped value echoed back.
    limit = min(limit, CLASSIC_MAX_LIMIT)
    if offset + limit > CLASSIC_WINDOW:
        raise _invalid(f"Offset plus limit must not exceed {CLASSIC_WINDOW}.")
    page = items[offset : offset + limit]
    meta: dict[str, object] = {
        "limit": limit,
        "offset": offset,
        "more": offset + len(page) < len(items),
        "total": len(items) if total else None,
    }
    return page, meta


# -- the API --------------------------------------------------------------------------------

Handler = Callable[[Request, Principal], Awaitable[Response]]


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler


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
        self._cursor_key = secrets.token_bytes(32)
        self._routes = [
            self._route("GET", "/users/me", self.get_me),
            self._route("GET", "/users", self.list_users),
            self._route("GET", "/users/{id}", self.get_user),
            self._route("GET", "/services", self.list_services),
            self._route("GET", "/services/{id}", self.get_service),
            self._route("GET", "/incidents", self.list_incidents),
            self._route("POST", "/incidents", self.create_incident),
            self._route("GET", "/abilities", self.list_abilities),
            self._route("GET", "/abilities/{id}", self.check_ability),
            self._route("GET", "/audit/records", self.list_audit_records),
            self._route("DELETE", "/oauth_delegations", self.delete_oauth_delegations),
        ]

    @staticmethod
    def _route(method: str, template: str, handler: Handler) -> _Route:
        regex = re.escape(template).replace(re.escape("{id}"), "(?P<id>[^/]{1,64})")
        return _Route(method, template, re.compile(f"{regex}/?"), handler)

    @property
    def directory(self) -> Directory:
        return self.state.directory

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan/websocket: nothing to do here
            return
        request = Request(scope, receive)
        response = await self.dispatch(request)
        await response(scope, receive, send)

    def _match(self, method: str, path: str) -> tuple[str, Handler | None, dict[str, str]]:
        """Route template, handler (None → 405) and path params; template "(unmatched)" → 404."""
        found_path = False
        for route in self._routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            found_path = True
            if route.method == method:
                return route.template, route.handler, m.groupdict()
        if found_path:
            template = next(r.template for r in self._routes if r.pattern.fullmatch(path))
            return template, None, {}
        return "(unmatched)", None, {}

    async def dispatch(self, request: Request) -> Response:
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        path = _route_path(request.scope)
        template, handler, path_params = self._match(request.method, path)
        request.scope["path_params"] = path_params
        response = await self._handle(request, template, handler)
        self.state.stats.record_rest(method, template, response.status_code)
        return response

    async def _handle(self, request: Request, template: str, handler: Handler | None) -> Response:
        fault = self.state.faults.take("rest")
        if fault is not None:
            self.state.stats.record_fault("rest", fault.kind)
            if fault.kind == "500":
                return _json(500, _INTERNAL.body())
            if fault.kind == "503":
                return _json(503, {"error": {"message": "Service Unavailable"}})
            if fault.kind == "timeout":
                await anyio.sleep(fault.delay)
                return _json(504, {"error": {"message": "Gateway Timeout"}})
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
            return _json(exc.status, exc.body())
        decision = self.limiter.hit(principal.credential)
        if not decision.allowed:
            self.state.stats.record_429(with_headers=not decision.headerless)
            if decision.headerless:
                return Response(status_code=429)
            response: Response = _json(429, ApiError(429, "Rate Limit Exceeded", 2020).body())
        else:
            response = await self._run(request, principal, template, handler)
        response.headers.update(decision.headers())
        return response

    async def _run(
        self, request: Request, principal: Principal, template: str, handler: Handler | None
    ) -> Response:
        try:
            if handler is None:
                if template == "(unmatched)":
                    raise _not_found()
                raise ApiError(405, "Method Not Allowed")  # Assumption: PagerDuty's 405 is unseen
            return await handler(request, principal)
        except ApiError as exc:
            return _json(exc.status, exc.body())
        except Exception:
            # A bug in the emulator must still answer with PagerDuty's envelope, not a crash.
            logger.exception("emulator REST handler failed on %s", template)
            return _json(500, _INTERNAL.body())

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

    def _authenticate(self, header: str | None) -> Principal:
        if header is None or len(header) > 4096:
            raise _auth_failed()
        scheme, _, rest = header.strip().partition(" ")
        rest = rest.strip()
        if scheme.lower() == "bearer" and rest and " " not in rest:
            return replace(self._oauth_principal(rest), credential=f"bearer:{rest}")
        if scheme.lower() == "token":
            name, eq, value = rest.partition("=")
            value = value.strip().strip('"')
            if name.strip().lower() == "token" and eq and value and " " not in value:
                return replace(self._key_principal(value), credential=f"token:{value}")
        raise _auth_failed()

    def _oauth_principal(self, token: str) -> Principal:
        issued = self.state.authenticate(token)
        if issued is None or issued.region != self.region:
            raise _auth_failed()
        account = self.directory.accounts.get(issued.account_id)
        if account is None:
            raise _auth_failed()
        user = None
        if issued.user_id is not None:
            user = self.directory.users.get(issued.user_id)
            if user is None:
                raise _auth_failed()
        scopes = frozenset(issued.scopes)
        return Principal(
            kind="oauth",
            account=account,
            user=user,
            scopes=scopes,
            app_kind="classic" if _classic(scopes) else "scoped",
            client_id=issued.client_id,
        )

    def _key_principal(self, value: str) -> Principal:
        key = self.directory.find_api_key(value)
        if key is None:
            raise _auth_failed()
        account = self.directory.accounts[key.account_id]
        if account.region != self.region:
            raise _auth_failed()
        return Principal(
            kind="api_key",
            account=account,
            user=None,
            scopes=frozenset(),
            app_kind=None,
            read_only=key.read_only,
        )

    # -- helpers for handlers --------------------------------------------------------------

    def _links(self, request: Request, account: Account) -> _Links:
        public = self.state.config.public_url
        base = (public or str(request.base_url)).rstrip("/")
        api = base + ("/eu" if self.region == "eu" else "")
        web = (
            f"https://{account.subdomain}.eu.pagerduty.com"
            if account.region == "eu"
            else f"https://{account.subdomain}.pagerduty.com"
        )
        return _Links(api=api, web=web, directory=self.directory)

    def _in_account(self, principal: Principal, obj_account_id: str) -> None:
        if obj_account_id != principal.account.id:
            raise _not_found()

    # -- handlers --------------------------------------------------------------------------

    async def get_me(self, request: Request, principal: Principal) -> Response:
        # No "Scoped OAuth requires" on this op; any user-level token may call it (assumption).
        if principal.user is None:
            # 400 is the only client error the schema lists for this op (assumption for its body).
            raise _invalid("This endpoint requires a user-level token; this token has no user.")
        _enum_list(request.query_params, "include[]", _USER_INCLUDES_ME)
        links = self._links(request, principal.account)
        return _json(200, {"user": links.user(principal.user)})

    async def list_users(self, request: Request, principal: Principal) -> Response:
        principal.require("users.read", write=False)
        params = request.query_params
        _enum_list(params, "include[]", _USER_INCLUDES)
        users = self.directory.users_of(principal.account.id)
        query = (params.get("query") or "").strip().lower()
        if query:
            users = [u for u in users if query in u.name.lower() or query in u.email.lower()]
        team_ids = set(params.getlist("team_ids[]"))
        if team_ids:
            users = [u for u in users if team_ids & set(u.team_ids)]
        page, meta = _classic_page(params, users)
        links = self._links(request, principal.account)
        return _json(200, {"users": [links.user(u) for u in page], **meta})

    async def get_user(self, request: Request, principal: Principal) -> Response:
        principal.require("users.read", write=False)
        _enum_list(request.query_params, "include[]", _USER_INCLUDES_ME)
        user = self.directory.users.get(request.path_params["id"])
        if user is None:
            raise _not_found()
        self._in_account(principal, user.account_id)
        return _json(200, {"user": self._links(request, principal.account).user(user)})

    async def list_services(self, request: Request, principal: Principal) -> Response:
        principal.require("services.read", write=False)
        params = request.query_params
        _enum_list(params, "include[]", _SERVICE_INCLUDES)
        sort = _enum_list(params, "sort_by", ("name", "name:asc", "name:desc"))
        services = sorted(self.directory.services_of(principal.account.id), key=lambda s: s.name)
        if sort and sort[-1] == "name:desc":
            services.reverse()
        query = (params.get("query") or "").strip().lower()
        if query:
            services = [s for s in services if query in s.name.lower()]
        name = params.get("name")
        if name is not None:
            services = [s for s in services if s.name == name]
        team_ids = set(params.getlist("team_ids[]"))
        if team_ids:
            services = [s for s in services if team_ids & set(s.team_ids)]
        page, meta = _classic_page(params, services)
        links = self._links(request, principal.account)
        return _json(200, {"services": [links.service(s) for s in page], **meta})

    async def get_service(self, request: Request, principal: Principal) -> Response:
        principal.require("services.read", write=False)
        _enum_list(request.query_params, "include[]", _SERVICE_INCLUDES)
        service = self.directory.services.get(request.path_params["id"])
        if service is None:
            raise _not_found()
        self._in_account(principal, service.account_id)
        return _json(200, {"service": self._links(request, principal.account).service(service)})

    async def list_incidents(self, request: Request, principal: Principal) -> Response:
        principal.require("incidents.read", write=False)
        params = request.query_params
        _enum_list(params, "include[]", _INCIDENT_INCLUDES)
        statuses = set(_enum_list(params, "statuses[]", ("triggered", "acknowledged", "resolved")))
        urgencies = set(_enum_list(params, "urgencies[]", ("high", "low")))
        date_range = _enum_list(params, "date_range", ("all",))
        sort_keys = _incident_sort(params.getlist("sort_by"))
        incidents = self.directory.incidents_of(principal.account.id)
        if not date_range:
            since, until = self._incident_window(params)
            incidents = [i for i in incidents if since <= i.created_at <= until]
        if statuses:
            incidents = [i for i in incidents if i.status in statuses]
        if urgencies:
            incidents = [i for i in incidents if i.urgency in urgencies]
        service_ids = set(params.getlist("service_ids[]"))
        if service_ids:
            incidents = [i for i in incidents if i.service_id in service_ids]
        user_ids = set(params.getlist("user_ids[]"))
        if user_ids:
            incidents = [i for i in incidents if user_ids & set(i.assignee_ids)]
        team_ids = set(params.getlist("team_ids[]"))
        if team_ids:
            incidents = [
                i
                for i in incidents
                if team_ids & set(self.directory.services[i.service_id].team_ids)
            ]
        key = params.get("incident_key")
        if key is not None:
            incidents = [i for i in incidents if i.incident_key == key]
        for field_name, descending in reversed(sort_keys):
            incidents.sort(key=_INCIDENT_SORTS[field_name], reverse=descending)
        page, meta = _classic_page(params, incidents)
        links = self._links(request, principal.account)
        return _json(200, {"incidents": [links.incident(i) for i in page], **meta})

    def _incident_window(self, params: QueryParams) -> tuple[float, float]:
        now = self.state.clock.now()
        raw_since, raw_until = params.get("since"), params.get("until")
        until = _parse_time("until", raw_until) if raw_until is not None else None
        since = _parse_time("since", raw_since) if raw_since is not None else None
        if until is None:
            until = now if since is None or since <= now else since + _secs(INCIDENT_DEFAULT_RANGE)
        if since is None:
            since = until - _secs(INCIDENT_DEFAULT_RANGE)
        if since > until or until - since > _secs(INCIDENT_MAX_RANGE):
            raise ApiError(
                400,
                "Invalid Query Date Range",
                2005,
                ["since must not be after until, and the range may not exceed 6 months."],
            )
        return since, until

    async def create_incident(self, request: Request, principal: Principal) -> Response:
        principal.require("incidents.write", write=True)
        requester = self._requester(request, principal)
        body = await _read_json(request)
        spec = body.get("incident")
        if not isinstance(spec, dict):
            raise _invalid("incident must be an object.")
        if spec.get("type") != "incident":
            raise _invalid("incident.type must be 'incident'.")
        title = spec.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > 1024:
            raise _invalid("incident.title must be a non-empty string (at most 1024 characters).")
        service_ref = spec.get("service")
        service = None
        if isinstance(service_ref, dict) and service_ref.get("type") in (
            "service_reference",
            "service",
        ):
            service_id = service_ref.get("id")
            service = (
                self.directory.services.get(service_id) if isinstance(service_id, str) else None
            )
        if service is None or service.account_id != principal.account.id:
            raise _invalid("incident.service must reference a service of this account.")
        if service.status == "disabled":
            raise _invalid("Service is disabled; incidents cannot be created on it.")
        urgency = spec.get("urgency", "high")
        if urgency not in ("high", "low"):
            raise _invalid("incident.urgency must be 'high' or 'low'.")
        incident_key = spec.get("incident_key")
        if incident_key is not None and (
            not isinstance(incident_key, str) or not incident_key or len(incident_key) > 255
        ):
            raise _invalid("incident.incident_key must be a non-empty string.")
        if incident_key is not None and any(
            i.service_id == service.id and i.incident_key == incident_key and i.status != "resolved"
            for i in self.directory.incidents.values()
        ):
            raise _invalid("Open incident with matching dedup key already exists on this service.")
        assignees = self._assignees(spec.get("assignments"), principal, service)
        details = _body_details(spec.get("body"))
        incident = self.directory.add_incident(
            account_id=principal.account.id,
            title=title.strip(),
            service_id=service.id,
            urgency="low" if urgency == "low" else "high",
            created_at=float(int(self.state.clock.now())),
            incident_key=incident_key,
            assignee_ids=assignees,
            body_details=details,
        )
        logger.info("incident #%d created by %s", incident.incident_number, requester.id)
        links = self._links(request, principal.account)
        return _json(201, {"incident": links.incident(incident)})

    def _requester(self, request: Request, principal: Principal) -> User:
        # PagerDuty requires `From: <email of a valid user>` on POST /incidents (schema: required).
        raw = request.headers.get("from")
        if raw is None or not raw.strip():
            raise ApiError(
                400,
                "You must specify a requester_id to perform this action",
                2011,
                ["The From header must hold the e-mail address of a valid user of the account."],
            )
        user = self.directory.find_user(raw.strip()[:320])
        if user is None or user.account_id != principal.account.id or "@" not in raw:
            raise ApiError(
                400,
                "Requester User Not Found",
                1008,
                ["The From header must hold the e-mail address of a valid user of the account."],
            )
        return user

    def _assignees(self, raw: object, principal: Principal, service: Service) -> tuple[str, ...]:
        if raw is None:
            # No direct assignment: the escalation policy picks someone; the emulator takes the
            # first member of the service's team, else the account's first user (assumption).
            users = self.directory.users_of(principal.account.id)
            team_members = [u for u in users if set(u.team_ids) & set(service.team_ids)]
            return ((team_members or users)[0].id,)
        if not isinstance(raw, list) or not raw or len(raw) > 50:
            raise _invalid("incident.assignments must be a non-empty list (at most 50).")
        ids: list[str] = []
        for item in raw:
            assignee = item.get("assignee") if isinstance(item, dict) else None
            user_id = assignee.get("id") if isinstance(assignee, dict) else None
            user = self.directory.users.get(user_id) if isinstance(user_id, str) else None
            if user is None or user.account_id != principal.account.id:
                raise _invalid("Each assignment must reference a user of this account.")
            ids.append(user.id)
        return tuple(dict.fromkeys(ids))

    async def list_abilities(self, request: Request, principal: Principal) -> Response:
        principal.require("abilities.read", write=False)
        return _json(200, {"abilities": list(principal.account.abilities)})

    async def check_ability(self, request: Request, principal: Principal) -> Response:
        principal.require("abilities.read", write=False)
        ability = request.path_params["id"]
        if ability in principal.account.abilities:
            return Response(status_code=204)
        known = {a for account in self.directory.accounts.values() for a in account.abilities}
        if ability in known:
            raise ApiError(402, "Missing Account Ability", 2014, [ability])
        raise _not_found()

    async def list_audit_records(self, request: Request, principal: Principal) -> Response:
        principal.require("audit_records.read", write=False)
        if "audit_trail" not in principal.account.abilities:
            raise ApiError(402, "Missing Account Ability", 2014, ["audit_trail"])
        if principal.user is not None and principal.user.role not in _ADMIN_ROLES:
            raise _access_denied("Only admins and account owners can list all audit records.")
        params = request.query_params
        limit = _parse_int(params, "limit", CURSOR_DEFAULT_LIMIT)
        if limit < 1:
            raise _invalid("Limit must be at least 1.")
        limit = min(limit, CURSOR_MAX_LIMIT)
        types = _enum_list(params, "root_resource_types[]", _AUDIT_RESOURCE_TYPES)
        actions = set(_enum_list(params, "actions[]", ("create", "update", "delete")))
        actor_type = _enum_list(params, "actor_type", _AUDIT_ACTOR_TYPES)
        method_type = _enum_list(params, "method_type", _AUDIT_METHODS)
        actor_id = params.get("actor_id")
        cursor = params.get("cursor")
        if cursor:
            since, until, after = self._open_cursor(cursor)
        else:
            since, until = self._audit_window(params)
            after = None
        records = [
            r
            for r in self.directory.audit_records_of(principal.account.id)
            if since <= r.execution_time <= until
        ]
        if types:
            wanted = {_AUDIT_RESOURCE_TYPES[t] for t in types}
            records = [r for r in records if r.root_resource_type in wanted]
        if actions:
            records = [r for r in records if r.action in actions]
        if actor_type:
            # Seeded actors are all users; other actor types match nothing.
            records = [r for r in records if actor_type[-1] == "user_reference" and r.actor_user_id]
        if actor_id is not None:
            records = [r for r in records if r.actor_user_id == actor_id]
        if method_type:
            records = [r for r in records if r.method_type == method_type[-1]]
        if after is not None:
            records = [r for r in records if (-r.execution_time, r.id) > after]
        page = records[:limit]
        next_cursor = None
        if len(records) > limit:
            last = page[-1]
            next_cursor = self._seal_cursor(since, until, (-last.execution_time, last.id))
        links = self._links(request, principal.account)
        return _json(
            200,
            {
                "records": [links.audit_record(r) for r in page],
                "limit": limit,
                "next_cursor": next_cursor,
            },
        )

    def _audit_window(self, params: QueryParams) -> tuple[float, float]:
        now = self.state.clock.now()
        raw_since, raw_until = params.get("since"), params.get("until")
        until = _parse_time("until", raw_until) if raw_until is not None else now
        since = (
            _parse_time("since", raw_since)
            if raw_since is not None
            else until - _secs(AUDIT_DEFAULT_RANGE)
        )
        if since > until or until - since > _secs(AUDIT_MAX_RANGE):
            raise ApiError(
                400,
                "Invalid Query Date Range",
                2005,
                ["until must be after since and at most 31 days later."],
            )
        return since, until

    # Cursors are opaque to clients: base64url(JSON) + HMAC, so a tampered or foreign cursor is a
    # clean 400. They carry the resolved time window, so the default "last 24 h" does not drift
    # between pages, and a keyset position, so new records do not shift later pages.
    def _seal_cursor(self, since: float, until: float, after: tuple[float, str]) -> str:
        payload = json.dumps([since, until, after[0], after[1]], separators=(",", ":")).encode()
        tag = hmac.new(self._cursor_key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(payload + tag).decode().rstrip("=")

    def _open_cursor(self, cursor: str) -> tuple[float, float, tuple[float, str]]:
        bad = _invalid("The cursor is invalid.")
        if len(cursor) > 512:
            raise bad
        try:
            blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise bad from None
        payload, tag = blob[:-12], blob[-12:]
        expected = hmac.new(self._cursor_key, payload, hashlib.sha256).digest()[:12]
        if len(blob) <= 12 or not hmac.compare_digest(tag, expected):
            raise bad
        since, until, position, last_id = json.loads(payload)
        return float(since), float(until), (float(position), str(last_id))

    async def delete_oauth_delegations(self, request: Request, principal: Principal) -> Response:
        principal.require("oauth_delegations.write", write=True)
        params = request.query_params
        user_id = params.get("user_id")
        kinds = _enum_list(params, "type", ("mobile", "web"))
        if not user_id or not kinds:
            raise ApiError(400, "Missing Arguments", 2003, ["user_id and type are required."])
        user = self.directory.users.get(user_id)
        if user is None or user.account_id != principal.account.id:
            # Assumption: the schema lists no 404 here; an unknown user is a bad argument.
            raise ApiError(400, "User not found", 2013)
        caller = principal.user
        if caller is not None and caller.id != user.id and caller.role not in _ADMIN_ROLES:
            raise _access_denied("Only admins can sign other users out.")
        revoked = 0
        for grant in self.state.grants_of(user_id=user.id):
            if not grant.revoked and grant.delegation_type == kinds[-1]:
                revoked += int(self.state.revoke_grant(grant.id))
        logger.info("revoked %d %s delegation(s) of user %s", revoked, kinds[-1], user.id)
        return _json(200, {"status": "ok"})


# -- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Links:
    """Turns directory values into PagerDuty JSON with this request's URLs."""

    api: str
    web: str
    directory: Directory

    def _ref(self, kind: str, plural: str, obj_id: str, summary: str) -> dict[str, object]:
        return {
            "id": obj_id,
            "type": f"{kind}_reference",
            "summary": summary,
            "self": f"{self.api}/{plural}/{obj_id}",
            "html_url": f"{self.web}/{plural}/{obj_id}",
        }

    def user_ref(self, user_id: str) -> dict[str, object]:
        user = self.directory.users.get(user_id)
        return self._ref("user", "users", user_id, user.name if user else user_id)

    def team_ref(self, team_id: str) -> dict[str, object]:
        team = self.directory.teams[team_id]
        return self._ref("team", "teams", team.id, team.name)

    def service_ref(self, service_id: str) -> dict[str, object]:
        service = self.directory.services[service_id]
        return self._ref("service", "services", service.id, service.name)

    def policy_ref(self, policy_id: str) -> dict[str, object]:
        policy = self.directory.escalation_policies[policy_id]
        return self._ref("escalation_policy", "escalation_policies", policy.id, policy.name)

    def user(self, user: User) -> dict[str, object]:
        digest = hashlib.sha256(user.email.strip().lower().encode()).hexdigest()
        body: dict[str, object] = {
            "id": user.id,
            "type": "user",
            "summary": user.name,
            "self": f"{self.api}/users/{user.id}",
            "html_url": f"{self.web}/users/{user.id}",
            "name": user.name,
            "email": user.email,
            "time_zone": user.time_zone,
            "color": user.color,
            "role": user.role,
            "avatar_url": f"https://secure.gravatar.com/avatar/{digest}.png?d=mm&r=PG",
            "description": user.description,
            "invitation_sent": user.invitation_sent,
            "created_via_sso": False,
            "teams": [self.team_ref(t) for t in user.team_ids],
            "contact_methods": [],
            "notification_rules": [],
        }
        # The schema types job_title as a non-null string: leave it out when there is none.
        if user.job_title is not None:
            body["job_title"] = user.job_title
        return body

    def service(self, service: Service) -> dict[str, object]:
        body: dict[str, object] = {
            "id": service.id,
            "type": "service",
            "summary": service.name,
            "self": f"{self.api}/services/{service.id}",
            "html_url": f"{self.web}/service-directory/{service.id}",
            "name": service.name,
            "description": service.description,
            "auto_resolve_timeout": service.auto_resolve_timeout,
            "acknowledgement_timeout": service.acknowledgement_timeout,
            "created_at": _iso(service.created_at),
            "status": self.directory.service_status(service.id),
            "escalation_policy": self.policy_ref(service.escalation_policy_id),
            "teams": [self.team_ref(t) for t in service.team_ids],
            "integrations": [],
            "incident_urgency_rule": {"type": "constant", "urgency": "high"},
            "scheduled_actions": [],
            "addons": [],
            "alert_creation": service.alert_creation,
        }
        last = self.directory.last_incident_at(service.id)
        if last is not None:
            body["last_incident_timestamp"] = _iso(last)
        return body

    def incident(self, incident: Incident) -> dict[str, object]:
        service = self.directory.services[incident.service_id]
        body: dict[str, object] = {
            "id": incident.id,
            "type": "incident",
            "summary": f"[#{incident.incident_number}] {incident.title}",
            "self": f"{self.api}/incidents/{incident.id}",
            "html_url": f"{self.web}/incidents/{incident.id}",
            "incident_number": incident.incident_number,
            "title": incident.title,
            "created_at": _iso(incident.created_at),
            "updated_at": _iso(incident.updated_at),
            "status": incident.status,
            "incident_key": incident.incident_key,
            "service": self.service_ref(service.id),
            "assignments": [
                {"at": _iso(incident.created_at), "assignee": self.user_ref(u)}
                for u in incident.assignee_ids
            ],
            "assigned_via": "escalation_policy",
            "last_status_change_at": _iso(incident.updated_at),
            "first_trigger_log_entry": {
                "id": "R" + hashlib.sha256(incident.id.encode()).hexdigest()[:25].upper(),
                "type": "trigger_log_entry_reference",
                "summary": "Triggered through the API.",
                "self": None,
                "html_url": f"{self.web}/incidents/{incident.id}/log_entries",
            },
            "alert_counts": {"all": 0, "triggered": 0, "resolved": 0},
            "is_mergeable": True,
            "incident_type": {"name": "incident_default"},
            "escalation_policy": self.policy_ref(incident.escalation_policy_id),
            "teams": [self.team_ref(t) for t in service.team_ids],
            "pending_actions": [],
            "acknowledgements": [
                {"at": _iso(incident.updated_at), "acknowledger": self.user_ref(u)}
                for u in incident.assignee_ids
            ]
            if incident.status == "acknowledged"
            else [],
            "last_status_change_by": (
                self.user_ref(incident.assignee_ids[0])
                if incident.status == "acknowledged" and incident.assignee_ids
                else self.service_ref(service.id)
            ),
            "urgency": incident.urgency,
            "incidents_responders": [],
            "responder_requests": [],
        }
        # The schema types resolved_at as a non-null string: present only once resolved.
        if incident.resolved_at is not None:
            body["resolved_at"] = _iso(incident.resolved_at)
        return body

    def audit_record(self, record: AuditRecord) -> dict[str, object]:
        plural = _AUDIT_PLURALS[record.root_resource_type]
        root = self._ref(
            record.root_resource_type, plural, record.root_resource_id, record.root_resource_name
        )
        method: dict[str, object] = {"type": record.method_type}
        if record.method_type in ("api_token", "oauth"):
            method["truncated_token"] = record.request_id[-4:]
        return {
            "id": record.id,
            "self": None,
            "execution_time": _iso(record.execution_time, millis=True),
            "execution_context": {"request_id": record.request_id, "remote_address": None},
            "actors": [self.user_ref(record.actor_user_id)] if record.actor_user_id else [],
            "method": method,
            "root_resource": root,
            "action": record.action,
            "details": {"resource": root, "fields": None, "references": None},
        }


_USER_INCLUDES = ("contact_methods", "notification_rules", "teams", "subdomains")
_USER_INCLUDES_ME = (*_USER_INCLUDES, "calendar_urls")
_SERVICE_INCLUDES = (
    "escalation_policies",
    "teams",
    "integrations",
    "auto_pause_notifications_parameters",
)
_INCIDENT_INCLUDES = (
    "acknowledgers",
    "agents",
    "assignees",
    "conference_bridge",
    "escalation_policies",
    "first_trigger_log_entries",
    "priorities",
    "services",
    "teams",
    "users",
)
_AUDIT_RESOURCE_TYPES = {
    "users": "user",
    "teams": "team",
    "schedules": "schedule",
    "escalation_policies": "escalation_policy",
    "services": "service",
    "ip_allow_lists": "ip_allow_list",
}
_AUDIT_PLURALS = {singular: plural for plural, singular in _AUDIT_RESOURCE_TYPES.items()}
_AUDIT_ACTOR_TYPES = ("user_reference", "api_key_reference", "app_reference")
_AUDIT_METHODS = ("browser", "oauth", "api_token", "identity_provider", "other")
_INCIDENT_SORTS: dict[str, Callable[[Incident], Any]] = {
    "incident_number": lambda i: i.incident_number,
    "created_at": lambda i: i.created_at,
    # Unresolved incidents sort after resolved ones when ascending (assumption).
    "resolved_at": lambda i: (i.resolved_at is None, i.resolved_at or 0.0),
    "urgency": lambda i: i.urgency,
}


def _incident_sort(raw: list[str]) -> list[tuple[str, bool]]:
    """``sort_by=created_at:desc,urgency`` (comma-separated, at most two) → [(field, desc)]."""
    parts = [p.strip() for value in raw for p in value.split(",") if p.strip()]
    keys: list[tuple[str, bool]] = []
    for part in parts:
        field_name, _, direction = part.partition(":")
        if field_name not in _INCIDENT_SORTS or direction not in ("", "asc", "desc"):
            raise _invalid(
                "sort_by must be incident_number, created_at, resolved_at or urgency, "
                "optionally with :asc or :desc."
            )
        keys.append((field_name, direction == "desc"))
    if len(keys) > 2 or len({k for k, _ in keys}) != len(keys):
        raise _invalid("sort_by takes at most two distinct fields.")
    return keys


def _body_details(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "incident_body":
        raise _invalid("incident.body must be an object of type incident_body.")
    details = raw.get("details")
    if details is None:
        return None
    if not isinstance(details, str) or len(details) > 65_536:
        raise _invalid("incident.body.details must be a string.")
    return details


async def _read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():
        raise _invalid("Content-Type must be application/json.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "Request Entity Too Large", 2001, ["The body is too large."])
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise _invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def _json(status: int, body: Mapping[str, object]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _secs(delta: timedelta) -> float:
    return delta.total_seconds()


def _route_path(scope: Scope) -> str:
    """The path below this app's mount point (``/eu/users`` → ``/users``)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def create_rest_app(state: EmulatorState, region: Region) -> RestApi:
    """The REST API of ``region`` as an ASGI app (mount US at ``""``, EU at ``"/eu"``)."""
    if region not in ("us", "eu"):
        raise ValueError("region must be 'us' or 'eu'")
    return RestApi(state, region)


def rest_routes(state: EmulatorState, region: Region) -> list[BaseRoute]:
    """The same app as routes, for ``Starlette(routes=[..., *rest_routes(state, "us")])``."""
    return [Mount("", app=create_rest_app(state, region))]
