"""The control routes for incidents and v3 webhooks under ``/_emulator`` (not PagerDuty's).

- ``POST /_emulator/incidents`` ``{"account", "service"?, "title"?, "urgency"?, "user"?}``:
  trigger an incident without a token (emits ``incident.triggered``); 201 ``{"incident"}``.
- ``POST /_emulator/incidents/{id}`` ``{"status": "acknowledged"|"resolved", "user"?}``:
  acknowledge or resolve one (emits ``incident.acknowledged``/``incident.resolved``).
- ``GET /_emulator/webhook_subscriptions``: every subscription with its delivery state (no
  secrets, no header values).
- ``POST /_emulator/webhook_subscriptions/{id}/rotate_secret`` ``{"keep_old"?: true}``: a new
  signing secret, returned once; while the old one is kept both sign (two ``v1=`` entries).
- ``POST /_emulator/webhook_subscriptions/{id}/retire_secret``: only the newest secret signs.
- ``POST /_emulator/webhooks/bad_signatures`` ``{"count": n}``: the next ``n`` delivery
  attempts carry a well-formed signature made with a wrong key (negative tests).

Bad input is a 400 ``{"error", "error_description"}`` as on the rest of the control API.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from pdauth.emulator.control_support import (
    BadRequest,
    control_route,
    find_account,
    flag_field,
    json_body,
    string_field,
)
from pdauth.emulator.data import Account
from pdauth.emulator.rest_views import Links
from pdauth.emulator.state import EmulatorState
from pdauth.emulator.webhook_ops import change_incident_status, links_for
from pdauth.emulator.webhooks import Subscription

__all__ = ["webhook_control_routes"]

MAX_BAD_SIGNATURES = 10_000


class WebhookControl:
    """The endpoints, as methods over one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _account(self, data: dict[str, Any]) -> Account:
        ref = string_field(data, "account") or ""
        account = find_account(self.state.directory, ref)
        if account is None:
            raise BadRequest("account must be an account id or subdomain.")
        return account

    def _user_id(self, data: dict[str, Any], account: Account) -> str | None:
        who = string_field(data, "user")
        if who is None:
            return None
        user = self.state.directory.find_user(who) if who else None
        if user is None or user.account_id != account.id:
            raise BadRequest("user must be a user of the incident's account.")
        return user.id

    async def create_incident(self, request: Request) -> Response:
        data = await json_body(request)
        account = self._account(data)
        services = self.state.directory.services_of(account.id)
        service_id = string_field(data, "service") or (services[0].id if services else "")
        service = self.state.directory.services.get(service_id)
        if service is None or service.account_id != account.id:
            raise BadRequest("service must be a service of the account.")
        title = string_field(data, "title") or "Emulated incident"
        urgency = string_field(data, "urgency") or "high"
        if urgency not in ("high", "low") or len(title) > 1024:
            raise BadRequest("urgency must be high or low; title at most 1024 characters.")
        agent_id = self._user_id(data, account)
        incident = self.state.directory.add_incident(
            account_id=account.id,
            title=title,
            service_id=service.id,
            urgency="low" if urgency == "low" else "high",
            created_at=float(int(self.state.clock.now())),
            assignee_ids=(self.state.directory.users_of(account.id)[0].id,),
        )
        links = self._links(request, account)
        agent = self.state.directory.users.get(agent_id) if agent_id else None
        queued = self.state.webhooks.emit_incident(links, incident, "incident.triggered", agent)
        return JSONResponse(
            {"incident": links.incident(incident), "webhooks_queued": queued}, status_code=201
        )

    async def change_incident(self, request: Request) -> Response:
        incident = self.state.directory.incidents.get(request.path_params["id"])
        if incident is None:
            raise BadRequest("No such incident.", "not_found", 404)
        account = self.state.directory.accounts[incident.account_id]
        data = await json_body(request)
        status = string_field(data, "status")
        if status not in ("acknowledged", "resolved"):
            raise BadRequest("status must be 'acknowledged' or 'resolved'.")
        if incident.status == "resolved" and status != "resolved":
            raise BadRequest("The incident is already resolved.")
        agent_id = self._user_id(data, account)
        links = self._links(request, account)
        changed = change_incident_status(self.state, incident, status, links, agent_id)
        return JSONResponse({"incident": links.incident(changed)})

    def _links(self, request: Request, account: Account) -> Links:
        return links_for(self.state, str(request.base_url), account.region, account)

    def _subscription(self, request: Request) -> Subscription:
        found = self.state.webhooks.subscriptions.get(request.path_params["id"])
        if found is None:
            raise BadRequest("No such webhook subscription.", "not_found", 404)
        return found

    async def list_subscriptions(self, request: Request) -> Response:
        now = self.state.clock.now()
        return JSONResponse(
            {
                "webhook_subscriptions": [
                    {
                        "id": s.id,
                        "account_id": s.account_id,
                        "url": s.url,
                        "events": list(s.events),
                        "filter": {"type": s.filter_type, "id": s.filter_id},
                        "active": s.active,
                        "temporarily_disabled": s.temporarily_disabled(now),
                        "consecutive_failures": s.consecutive_failures,
                        "secrets_active": len(s.secrets),
                        "client_id": s.client_id,
                    }
                    for s in self.state.webhooks.subscriptions.values()
                ]
            }
        )

    async def rotate_secret(self, request: Request) -> Response:
        sub = self._subscription(request)
        keep_old = flag_field(await json_body(request, optional=True), "keep_old", True)
        secret = self.state.webhooks.rotate_secret(sub, keep_old=keep_old)
        return JSONResponse({"secret": secret, "secrets_active": len(sub.secrets)})

    async def retire_secret(self, request: Request) -> Response:
        sub = self._subscription(request)
        self.state.webhooks.retire_secrets(sub)
        return JSONResponse({"secrets_active": len(sub.secrets)})

    async def bad_signatures(self, request: Request) -> Response:
        count = (await json_body(request)).get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise BadRequest("count must be an integer.")
        if not 0 <= count <= MAX_BAD_SIGNATURES:
            raise BadRequest(f"count must be between 0 and {MAX_BAD_SIGNATURES}.")
        self.state.webhooks.bad_signatures = count
        return JSONResponse({"pending": count})


def webhook_control_routes(state: EmulatorState) -> list[BaseRoute]:
    """The routes above over ``state`` (mount them under ``/_emulator``)."""
    ep = WebhookControl(state)
    return [
        control_route("/incidents", ep.create_incident, "POST"),
        control_route("/incidents/{id}", ep.change_incident, "POST"),
        control_route("/webhook_subscriptions", ep.list_subscriptions, "GET"),
        control_route("/webhook_subscriptions/{id}/rotate_secret", ep.rotate_secret, "POST"),
        control_route("/webhook_subscriptions/{id}/retire_secret", ep.retire_secret, "POST"),
        control_route("/webhooks/bad_signatures", ep.bad_signatures, "POST"),
    ]
