"""Rendering of the emulator's directory values as PagerDuty REST JSON (users, services,
incidents, audit records and the references between them), with one request's URLs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdauth.emulator.data import Account, AuditRecord, Directory, Incident, Service, User
from pdauth.emulator.rest_support import AUDIT_PLURALS, iso

if TYPE_CHECKING:
    from pdauth.emulator.rest import Region
    from pdauth.emulator.state import EmulatorState

__all__ = ["Links", "links_for"]


def links_for(state: EmulatorState, base_url: str, region: Region, account: Account) -> Links:
    """Links for ``account`` as one region's REST API renders them (``base_url`` from the
    request, unless ``public_url`` is configured)."""
    base = (state.config.public_url or base_url).rstrip("/")
    api = base + ("/eu" if region == "eu" else "")
    domain = "eu.pagerduty.com" if account.region == "eu" else "pagerduty.com"
    return Links(api=api, web=f"https://{account.subdomain}.{domain}", directory=state.directory)


@dataclass(frozen=True)
class Links:
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
            "created_at": iso(service.created_at),
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
            body["last_incident_timestamp"] = iso(last)
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
            "created_at": iso(incident.created_at),
            "updated_at": iso(incident.updated_at),
            "status": incident.status,
            "incident_key": incident.incident_key,
            "service": self.service_ref(service.id),
            "assignments": [
                {"at": iso(incident.created_at), "assignee": self.user_ref(u)}
                for u in incident.assignee_ids
            ],
            "assigned_via": "escalation_policy",
            "last_status_change_at": iso(incident.updated_at),
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
                {"at": iso(incident.updated_at), "acknowledger": self.user_ref(u)}
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
            body["resolved_at"] = iso(incident.resolved_at)
        return body

    def audit_record(self, record: AuditRecord) -> dict[str, object]:
        plural = AUDIT_PLURALS[record.root_resource_type]
        root = self._ref(
            record.root_resource_type, plural, record.root_resource_id, record.root_resource_name
        )
        method: dict[str, object] = {"type": record.method_type}
        if record.method_type in ("api_token", "oauth"):
            method["truncated_token"] = record.request_id[-4:]
        return {
            "id": record.id,
            "self": None,
            "execution_time": iso(record.execution_time, millis=True),
            "execution_context": {"request_id": record.request_id, "remote_address": None},
            "actors": [self.user_ref(record.actor_user_id)] if record.actor_user_id else [],
            "method": method,
            "root_resource": root,
            "action": record.action,
            "details": {"resource": root, "fields": None, "references": None},
        }
