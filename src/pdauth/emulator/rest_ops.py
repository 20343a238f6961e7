"""The operations of the emulated REST API: one method per PagerDuty operation, each taking the
request and the authenticated :class:`~pdauth.emulator.rest_support.Principal` and answering
JSON or raising :class:`~pdauth.emulator.rest_support.ApiError`. Routing, faults,
authentication and rate limiting happen before, in :mod:`pdauth.emulator.rest`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from pdauth.emulator.data import Account, Directory, Service, User
from pdauth.emulator.rest_support import (
    ADMIN_ROLES,
    AUDIT_ACTOR_TYPES,
    AUDIT_DEFAULT_RANGE,
    AUDIT_MAX_RANGE,
    AUDIT_METHODS,
    AUDIT_RESOURCE_TYPES,
    CURSOR_DEFAULT_LIMIT,
    CURSOR_MAX_LIMIT,
    INCIDENT_DEFAULT_RANGE,
    INCIDENT_INCLUDES,
    INCIDENT_MAX_RANGE,
    INCIDENT_SORTS,
    SERVICE_INCLUDES,
    USER_INCLUDES,
    USER_INCLUDES_ME,
    ApiError,
    Principal,
    access_denied,
    body_details,
    classic_page,
    date_range,
    enum_list,
    incident_sort,
    invalid,
    json_response,
    not_found,
    parse_int,
    read_json,
    seconds,
    time_param,
)
from pdauth.emulator.rest_views import Links, links_for

if TYPE_CHECKING:
    from pdauth.emulator.rest import Region
    from pdauth.emulator.state import EmulatorState

__all__ = ["Operations"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Operations:
    """The handlers of one region's REST API over the shared emulator state."""

    def __init__(self, state: EmulatorState, region: Region) -> None:
        self.state = state
        self.region: Region = region
        self._cursor_key = secrets.token_bytes(32)

    @property
    def directory(self) -> Directory:
        return self.state.directory

    # -- helpers for handlers --------------------------------------------------------------

    def _links(self, request: Request, account: Account) -> Links:
        return links_for(self.state, str(request.base_url), self.region, account)

    def _page(
        self,
        request: Request,
        principal: Principal,
        plural: str,
        items: list[T],
        render: Callable[[Links, T], dict[str, object]],
    ) -> Response:
        """One classic page of ``items`` under ``plural``, with the pagination fields."""
        page, meta = classic_page(request.query_params, items)
        links = self._links(request, principal.account)
        return json_response(200, {plural: [render(links, item) for item in page], **meta})

    # -- handlers --------------------------------------------------------------------------

    async def get_me(self, request: Request, principal: Principal) -> Response:
        # No "Scoped OAuth requires" on this op; any user-level token may call it (assumption).
        if principal.user is None:
            # 400 is the only client error the schema lists for this op (assumption for its body).
            raise invalid("This endpoint requires a user-level token; this token has no user.")
        enum_list(request.query_params, "include[]", USER_INCLUDES_ME)
        links = self._links(request, principal.account)
        return json_response(200, {"user": links.user(principal.user)})

    async def list_users(self, request: Request, principal: Principal) -> Response:
        principal.require("users.read", write=False)
        params = request.query_params
        enum_list(params, "include[]", USER_INCLUDES)
        users = _search(params, self.directory.users_of(principal.account.id), _user_texts)
        return self._page(request, principal, "users", users, Links.user)

    async def get_user(self, request: Request, principal: Principal) -> Response:
        principal.require("users.read", write=False)
        enum_list(request.query_params, "include[]", USER_INCLUDES_ME)
        user = principal.own(self.directory.users.get(request.path_params["id"]))
        return json_response(200, {"user": self._links(request, principal.account).user(user)})

    async def list_services(self, request: Request, principal: Principal) -> Response:
        principal.require("services.read", write=False)
        params = request.query_params
        enum_list(params, "include[]", SERVICE_INCLUDES)
        sort = enum_list(params, "sort_by", ("name", "name:asc", "name:desc"))
        services = sorted(self.directory.services_of(principal.account.id), key=lambda s: s.name)
        if sort and sort[-1] == "name:desc":
            services.reverse()
        services = _search(params, services, _service_texts)
        name = params.get("name")
        if name is not None:
            services = [s for s in services if s.name == name]
        return self._page(request, principal, "services", services, Links.service)

    async def get_service(self, request: Request, principal: Principal) -> Response:
        principal.require("services.read", write=False)
        enum_list(request.query_params, "include[]", SERVICE_INCLUDES)
        service = principal.own(self.directory.services.get(request.path_params["id"]))
        return json_response(
            200, {"service": self._links(request, principal.account).service(service)}
        )

    async def list_incidents(self, request: Request, principal: Principal) -> Response:
        principal.require("incidents.read", write=False)
        params = request.query_params
        enum_list(params, "include[]", INCIDENT_INCLUDES)
        statuses = set(enum_list(params, "statuses[]", ("triggered", "acknowledged", "resolved")))
        urgencies = set(enum_list(params, "urgencies[]", ("high", "low")))
        date_range = enum_list(params, "date_range", ("all",))
        sort_keys = incident_sort(params.getlist("sort_by"))
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
            incidents.sort(key=INCIDENT_SORTS[field_name], reverse=descending)
        return self._page(request, principal, "incidents", incidents, Links.incident)

    def _incident_window(self, params: QueryParams) -> tuple[float, float]:
        now = self.state.clock.now()
        until = time_param(params, "until")
        since = time_param(params, "since")
        if until is None:
            default = seconds(INCIDENT_DEFAULT_RANGE)
            until = now if since is None or since <= now else since + default
        if since is None:
            since = until - seconds(INCIDENT_DEFAULT_RANGE)
        return date_range(
            since,
            until,
            INCIDENT_MAX_RANGE,
            "since must not be after until, and the range may not exceed 6 months.",
        )

    async def create_incident(self, request: Request, principal: Principal) -> Response:
        principal.require("incidents.write", write=True)
        requester = self._requester(request, principal)
        body = await read_json(request)
        spec = body.get("incident")
        if not isinstance(spec, dict):
            raise invalid("incident must be an object.")
        if spec.get("type") != "incident":
            raise invalid("incident.type must be 'incident'.")
        title = spec.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > 1024:
            raise invalid("incident.title must be a non-empty string (at most 1024 characters).")
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
            raise invalid("incident.service must reference a service of this account.")
        if service.status == "disabled":
            raise invalid("Service is disabled; incidents cannot be created on it.")
        urgency = spec.get("urgency", "high")
        if urgency not in ("high", "low"):
            raise invalid("incident.urgency must be 'high' or 'low'.")
        incident_key = spec.get("incident_key")
        if incident_key is not None and (
            not isinstance(incident_key, str) or not incident_key or len(incident_key) > 255
        ):
            raise invalid("incident.incident_key must be a non-empty string.")
        if incident_key is not None and any(
            i.service_id == service.id and i.incident_key == incident_key and i.status != "resolved"
            for i in self.directory.incidents.values()
        ):
            raise invalid("Open incident with matching dedup key already exists on this service.")
        assignees = self._assignees(spec.get("assignments"), principal, service)
        details = body_details(spec.get("body"))
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
        self.state.webhooks.emit_incident(links, incident, "incident.triggered", requester)
        return json_response(201, {"incident": links.incident(incident)})

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
            raise invalid("incident.assignments must be a non-empty list (at most 50).")
        ids: list[str] = []
        for item in raw:
            assignee = item.get("assignee") if isinstance(item, dict) else None
            user_id = assignee.get("id") if isinstance(assignee, dict) else None
            user = self.directory.users.get(user_id) if isinstance(user_id, str) else None
            if user is None or user.account_id != principal.account.id:
                raise invalid("Each assignment must reference a user of this account.")
            ids.append(user.id)
        return tuple(dict.fromkeys(ids))

    async def list_abilities(self, request: Request, principal: Principal) -> Response:
        principal.require("abilities.read", write=False)
        return json_response(200, {"abilities": list(principal.account.abilities)})

    async def check_ability(self, request: Request, principal: Principal) -> Response:
        principal.require("abilities.read", write=False)
        ability = request.path_params["id"]
        if ability in principal.account.abilities:
            return Response(status_code=204)
        known = {a for account in self.directory.accounts.values() for a in account.abilities}
        if ability in known:
            raise ApiError(402, "Missing Account Ability", 2014, [ability])
        raise not_found()

    async def list_audit_records(self, request: Request, principal: Principal) -> Response:
        principal.require("audit_records.read", write=False)
        if "audit_trail" not in principal.account.abilities:
            raise ApiError(402, "Missing Account Ability", 2014, ["audit_trail"])
        if principal.user is not None and principal.user.role not in ADMIN_ROLES:
            raise access_denied("Only admins and account owners can list all audit records.")
        params = request.query_params
        limit = parse_int(params, "limit", CURSOR_DEFAULT_LIMIT)
        if limit < 1:
            raise invalid("Limit must be at least 1.")
        limit = min(limit, CURSOR_MAX_LIMIT)
        types = enum_list(params, "root_resource_types[]", AUDIT_RESOURCE_TYPES)
        actions = set(enum_list(params, "actions[]", ("create", "update", "delete")))
        actor_type = enum_list(params, "actor_type", AUDIT_ACTOR_TYPES)
        method_type = enum_list(params, "method_type", AUDIT_METHODS)
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
            wanted = {AUDIT_RESOURCE_TYPES[t] for t in types}
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
        return json_response(
            200,
            {
                "records": [links.audit_record(r) for r in page],
                "limit": limit,
                "next_cursor": next_cursor,
            },
        )

    def _audit_window(self, params: QueryParams) -> tuple[float, float]:
        until = time_param(params, "until")
        if until is None:
            until = self.state.clock.now()
        since = time_param(params, "since")
        if since is None:
            since = until - seconds(AUDIT_DEFAULT_RANGE)
        return date_range(
            since, until, AUDIT_MAX_RANGE, "until must be after since and at most 31 days later."
        )

    # Cursors are opaque to clients: base64url(JSON) + HMAC, so a tampered or foreign cursor is a
    # clean 400. They carry the resolved time window, so the default "last 24 h" does not drift
    # between pages, and a keyset position, so new records do not shift later pages.
    def _seal_cursor(self, since: float, until: float, after: tuple[float, str]) -> str:
        payload = json.dumps([since, until, after[0], after[1]], separators=(",", ":")).encode()
        tag = hmac.new(self._cursor_key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(payload + tag).decode().rstrip("=")

    def _open_cursor(self, cursor: str) -> tuple[float, float, tuple[float, str]]:
        bad = invalid("The cursor is invalid.")
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
        kinds = enum_list(params, "type", ("mobile", "web"))
        if not user_id or not kinds:
            raise ApiError(400, "Missing Arguments", 2003, ["user_id and type are required."])
        user = self.directory.users.get(user_id)
        if user is None or user.account_id != principal.account.id:
            # Assumption: the schema lists no 404 here; an unknown user is a bad argument.
            raise ApiError(400, "User not found", 2013)
        caller = principal.user
        if caller is not None and caller.id != user.id and caller.role not in ADMIN_ROLES:
            raise access_denied("Only admins can sign other users out.")
        revoked = 0
        for grant in self.state.grants_of(user_id=user.id):
            if not grant.revoked and grant.delegation_type == kinds[-1]:
                revoked += int(self.state.revoke_grant(grant.id))
        logger.info("revoked %d %s delegation(s) of user %s", revoked, kinds[-1], user.id)
        return json_response(200, {"status": "ok"})


# -- rendering ------------------------------------------------------------------------------


class _Searchable(Protocol):
    @property
    def team_ids(self) -> tuple[str, ...]: ...


S = TypeVar("S", bound=_Searchable)


def _search(params: QueryParams, items: list[S], texts: Callable[[S], tuple[str, ...]]) -> list[S]:
    """``items`` filtered by ``query`` (a case-insensitive part of one of ``texts``) and by
    ``team_ids[]`` (sharing a team), as PagerDuty's list operations read them."""
    query = (params.get("query") or "").strip().lower()
    if query:
        items = [item for item in items if any(query in text.lower() for text in texts(item))]
    team_ids = set(params.getlist("team_ids[]"))
    if team_ids:
        items = [item for item in items if team_ids & set(item.team_ids)]
    return items


def _user_texts(user: User) -> tuple[str, ...]:
    return (user.name, user.email)


def _service_texts(service: Service) -> tuple[str, ...]:
    return (service.name,)
