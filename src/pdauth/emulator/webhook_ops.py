"""The REST operations behind PagerDuty's webhook subscriptions (``/webhook_subscriptions``,
``/{id}``, ``/{id}/enable``, ``/{id}/ping``) and ``PUT /incidents/{id}`` (acknowledge, resolve),
which emits the v3 events. Shapes follow the official REST schema (``WebhookSubscription``); the
signing secret is in the create response only ("Only provided on the initial create
response") and custom header values are redacted in every answer (01-Overview.md). Routing,
authentication and rate limiting happen before, in :mod:`pdauth.emulator.rest`; the delivery
itself in :mod:`pdauth.emulator.webhooks`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from pdauth.emulator.data import Incident
from pdauth.emulator.rest_support import (
    ApiError,
    Principal,
    classic_page,
    enum_list,
    invalid,
    json_response,
    read_json,
)
from pdauth.emulator.rest_views import Links, links_for
from pdauth.emulator.webhooks import EVENT_TYPES, Subscription, new_secret

if TYPE_CHECKING:
    from pdauth.emulator.rest import Region
    from pdauth.emulator.state import EmulatorState

__all__ = ["WebhookOperations", "change_incident_status", "links_for"]

logger = logging.getLogger(__name__)

FILTER_TYPES = ("account_reference", "service_reference", "team_reference")
REDACTED = "-- redacted --"  # what PagerDuty's GetSubscriptionExample shows for header values
MAX_URL = 2048
MAX_HEADERS = 10  # Assumption: PagerDuty documents no limit on custom headers
READ, WRITE = "webhook_subscriptions.read", "webhook_subscriptions.write"


def change_incident_status(
    state: EmulatorState, incident: Incident, status: str, links: Links, agent_id: str | None
) -> Incident:
    """Acknowledge or resolve ``incident`` and emit ``incident.acknowledged``/``.resolved``.
    The same status again changes nothing and emits nothing (assumption); a resolved incident
    cannot change (assumption: PagerDuty's answer for that is undocumented)."""
    if status == incident.status:
        return incident
    if incident.status == "resolved":
        raise invalid("Incident Already Resolved")
    now = float(int(state.clock.now()))
    changed = replace(
        incident,
        status=cast(Any, status),
        updated_at=now,
        resolved_at=now if status == "resolved" else None,
    )
    state.directory.incidents[incident.id] = changed
    agent = state.directory.users.get(agent_id) if agent_id else None
    state.webhooks.emit_incident(links, changed, f"incident.{status}", agent)
    return changed


class WebhookOperations:
    """The webhook-subscription handlers of one region's REST API."""

    def __init__(self, state: EmulatorState, region: Region) -> None:
        self.state = state
        self.region: Region = region

    def _links(self, request: Request, principal: Principal) -> Links:
        return links_for(self.state, str(request.base_url), self.region, principal.account)

    def _find(self, request: Request, principal: Principal) -> Subscription:
        return principal.own(self.state.webhooks.subscriptions.get(request.path_params["id"]))

    def render(self, sub: Subscription, *, secret: bool = False) -> dict[str, object]:
        now = self.state.clock.now()
        return {
            "id": sub.id,
            "type": "webhook_subscription",
            "active": sub.active,
            "delivery_method": {
                "id": sub.delivery_method_id,
                "secret": sub.secrets[0] if secret else None,
                "temporarily_disabled": sub.temporarily_disabled(now),
                "type": "http_delivery_method",
                "url": sub.url,
                "custom_headers": [{"name": n, "value": REDACTED} for n, _ in sub.custom_headers],
            },
            "description": sub.description,
            "events": list(sub.events),
            "filter": {"id": sub.filter_id, "type": sub.filter_type},
        }

    # -- handlers --------------------------------------------------------------------------

    async def list_subscriptions(self, request: Request, principal: Principal) -> Response:
        principal.require(READ, write=False)
        params = request.query_params
        kind = enum_list(params, "filter_type", ("account", "service", "team"))
        filter_id = params.get("filter_id")
        subs = sorted(self.state.webhooks.of_account(principal.account.id), key=lambda s: s.id)
        if kind:
            if kind[-1] != "account" and not filter_id:
                raise invalid("filter_id is required when filter_type is service or team.")
            subs = [s for s in subs if s.filter_type == f"{kind[-1]}_reference"]
            if filter_id:
                subs = [s for s in subs if s.filter_id == filter_id]
        page, meta = classic_page(params, subs)
        return json_response(200, {"webhook_subscriptions": [self.render(s) for s in page], **meta})

    async def create_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(WRITE, write=True)
        spec = _spec(await read_json(request))
        if spec.get("type", "webhook_subscription") != "webhook_subscription":
            raise invalid("webhook_subscription.type must be 'webhook_subscription'.")
        url, headers = _delivery_method(spec.get("delivery_method"))
        filter_type, filter_id = self._filter(spec.get("filter"), principal)
        sub = Subscription(
            id=self.state.directory.new_id(),
            account_id=principal.account.id,
            url=url,
            events=_events(spec.get("events")),
            filter_type=filter_type,
            filter_id=filter_id,
            delivery_method_id=self.state.directory.new_id(),
            secrets=[new_secret()],
            custom_headers=headers,
            description=_description(spec.get("description")),
            active=_active(spec.get("active", True)),
            client_id=principal.client_id,
        )
        self.state.webhooks.add(sub)
        logger.info("webhook subscription %s created", sub.id)
        # The schema lists 200 (not 201) for this create.
        return json_response(200, {"webhook_subscription": self.render(sub, secret=True)})

    async def get_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(READ, write=False)
        sub = self._find(request, principal)
        return json_response(200, {"webhook_subscription": self.render(sub)})

    async def update_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(WRITE, write=True)
        sub = self._find(request, principal)
        spec = _spec(await read_json(request))
        if "delivery_method" in spec:
            # Schema: "This operation does not support updating the delivery_method"
            # (assumption: refused rather than ignored).
            raise invalid("delivery_method cannot be updated; create a new subscription.")
        events = _events(spec["events"]) if "events" in spec else sub.events
        if "filter" in spec:
            sub.filter_type, sub.filter_id = self._filter(spec["filter"], principal)
        sub.events = events
        if "description" in spec:
            sub.description = _description(spec["description"])
        if "active" in spec:
            sub.active = _active(spec["active"])
        return json_response(200, {"webhook_subscription": self.render(sub)})

    async def delete_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(WRITE, write=True)
        sub = self._find(request, principal)
        self.state.webhooks.remove(sub.id)
        logger.info("webhook subscription %s deleted", sub.id)
        return Response(status_code=204)

    async def enable_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(WRITE, write=True)
        sub = self._find(request, principal)
        self.state.webhooks.enable(sub)
        return json_response(200, {"webhook_subscription": self.render(sub)})

    async def ping_subscription(self, request: Request, principal: Principal) -> Response:
        principal.require(WRITE, write=True)
        sub = self._find(request, principal)
        self.state.webhooks.ping(sub)
        return Response(status_code=202)  # the schema's 202 "Accepted" has no body

    async def get_incident(self, request: Request, principal: Principal) -> Response:
        principal.require("incidents.read", write=False)
        incident = principal.own(self.state.directory.incidents.get(request.path_params["id"]))
        return json_response(200, {"incident": self._links(request, principal).incident(incident)})

    async def update_incident(self, request: Request, principal: Principal) -> Response:
        """``PUT /incidents/{id}``: ``status`` acknowledged or resolved (the rest is ignored)."""
        principal.require("incidents.write", write=True)
        incident = principal.own(self.state.directory.incidents.get(request.path_params["id"]))
        requester = _requester(self.state, request, principal)
        spec = (await read_json(request)).get("incident")
        if not isinstance(spec, dict) or spec.get("type") not in ("incident", "incident_reference"):
            raise invalid("incident must be an object of type incident.")
        status = spec.get("status")
        if status is not None and status not in ("acknowledged", "resolved"):
            raise invalid("incident.status must be 'acknowledged' or 'resolved'.")
        links = self._links(request, principal)
        if status is not None:
            incident = change_incident_status(self.state, incident, status, links, requester)
        return json_response(200, {"incident": links.incident(incident)})

    def _filter(self, raw: object, principal: Principal) -> tuple[str, str]:
        if not isinstance(raw, dict):
            raise invalid("webhook_subscription.filter is required.")
        kind, ref = raw.get("type"), raw.get("id")
        account = principal.account.id
        if kind == "account_reference":
            if ref is not None and ref != account:
                raise invalid("filter.id must be this account's id for an account_reference.")
            return kind, account
        directory = self.state.directory
        if kind == "service_reference":
            service = directory.services.get(ref) if isinstance(ref, str) else None
            if service is None or service.account_id != account:
                raise invalid("filter.id must reference a service of this account.")
            return kind, service.id
        if kind == "team_reference":
            team = directory.teams.get(ref) if isinstance(ref, str) else None
            if team is None or team.account_id != account:
                raise invalid("filter.id must reference a team of this account.")
            return kind, team.id
        raise invalid(f"filter.type must be one of: {', '.join(FILTER_TYPES)}.")


def _requester(state: EmulatorState, request: Request, principal: Principal) -> str | None:
    # PUT /incidents/{id} requires `From` (schema); the emulator is lenient for account keys'
    # absence only when an OAuth user is behind the token (assumption).
    raw = (request.headers.get("from") or "").strip()
    if not raw:
        if principal.user is not None:
            return principal.user.id
        raise ApiError(400, "You must specify a requester_id to perform this action", 2011)
    user = state.directory.find_user(raw[:320])
    if user is None or user.account_id != principal.account.id or "@" not in raw:
        raise ApiError(400, "Requester User Not Found", 1008)
    return user.id


def _spec(body: dict[str, Any]) -> dict[str, Any]:
    spec = body.get("webhook_subscription")
    if not isinstance(spec, dict):
        raise invalid("webhook_subscription must be an object.")
    return spec


def _delivery_method(raw: object) -> tuple[str, tuple[tuple[str, str], ...]]:
    if not isinstance(raw, dict):
        raise invalid("webhook_subscription.delivery_method is required.")
    if raw.get("type", "http_delivery_method") != "http_delivery_method":
        raise invalid("delivery_method.type must be 'http_delivery_method'.")
    url = raw.get("url")
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= MAX_URL else None
    # 02-Behavior.md: any http:// or https:// URL, any port, basic credentials allowed.
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("delivery_method.url must be an absolute http(s) URL.")
    headers = raw.get("custom_headers") or []
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise invalid(f"delivery_method.custom_headers must be a list (at most {MAX_HEADERS}).")
    pairs: list[tuple[str, str]] = []
    for item in headers:
        name = item.get("name") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(value, str) or not _token(name):
            raise invalid("Each custom header needs a valid name and a string value.")
        if "\r" in value or "\n" in value or len(value) > 1024:
            raise invalid("A custom header value must be one line (at most 1024 characters).")
        pairs.append((name, value))
    names = [n.lower() for n, _ in pairs]
    if len(set(names)) != len(names):
        raise invalid("Custom header names must be unique.")  # 01-Overview.md
    return str(url), tuple(pairs)


def _token(name: str) -> bool:
    allowed = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return 0 < len(name) <= 100 and set(name) <= allowed


def _events(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(e, str) for e in raw):
        raise invalid("webhook_subscription.events must be a non-empty list of event types.")
    unknown = sorted({e for e in raw if e not in EVENT_TYPES})
    if unknown:
        raise invalid(f"Unknown event type: {unknown[0][:80]}.")
    if len(set(raw)) != len(raw):
        raise invalid("webhook_subscription.events must not repeat an event type.")
    return tuple(raw)


def _description(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > 1024:
        raise invalid("description must be a string (at most 1024 characters).")
    return raw


def _active(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise invalid("active must be true or false.")
    return raw
