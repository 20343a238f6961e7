"""What the connection commands may show: the allowlist views of connections and events.

A connection is shown in the JSON API's shape (:func:`connection_json`, built by
:meth:`pdauth.connections.Connection.to_json`: never a token, a ciphertext or a lease owner),
with :func:`operator_details` beside it where an operator needs more; an event through
:func:`event_view`, whose data loses its ``*_ct`` members at any depth (the service's one rule,
:func:`pdauth.service.views.public_data`). Also the short labels tables use and
the guidance for revoking a grant inside PagerDuty, which has no revocation API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from pdauth.commands._output import clean, iso_time
from pdauth.connections import Connection
from pdauth.service.views import public_data
from pdauth.store import AsyncStore, ConnectionRow, EventRow
from pdauth.subscriptions import SubscriptionStatus

__all__ = [
    "account_label",
    "cell_time",
    "connection_json",
    "event_view",
    "operator_details",
    "pagerduty_revocation_help",
    "recent_events",
    "subscription_label",
    "user_label",
]

_EVENT_PAGE = 1000


def connection_json(
    row: ConnectionRow, api_base_urls: Mapping[str, str], required_scopes: Iterable[str] = ()
) -> dict[str, Any]:
    """A stored connection in the JSON API's shape (:meth:`Connection.to_json`, the one
    serializer): ``user{id,name,email}``, times as RFC 3339 UTC, no secret; ``missing_scopes``
    against ``required_scopes`` (``PDAUTH_SCOPES``), as the API reports them."""
    return Connection.from_row(row, api_base_urls, required_scopes).to_json()


def operator_details(row: ConnectionRow) -> dict[str, Any]:
    """What ``connections show``/``refresh`` add for operators, beside the API's shape: the
    token version, the key id that seals the tokens (rotation progress), the refresh token's
    expiry, the refresh lease, the last use and PagerDuty's delegation id. No secret."""
    return {
        "delegation_id": row.delegation_id,
        "key_id": row.key_id,
        "last_used_at": iso_time(row.last_used_at),
        "refresh_expires_at": iso_time(row.refresh_expires_at),
        "refresh_lease_until": iso_time(row.lease_until),
        "token_version": row.token_version,
    }


def event_view(event: EventRow) -> dict[str, Any]:
    """An audit/outbox event without its ciphertext members (``token_ct`` of a queued revoke)."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso_time(event.created_at),
        "delivered_at": iso_time(event.delivered_at),
        "attempts": event.attempts,
        "last_error": event.last_error,
        "data": public_data(event.data),
    }


async def recent_events(store: AsyncStore, row: ConnectionRow, limit: int) -> list[EventRow]:
    """The last ``limit`` events of one connection, oldest first.

    The store filters events by owner, not by connection, so the owner's events are paged
    through and filtered here (an owner has few connections).
    """
    kept: deque[EventRow] = deque(maxlen=limit)
    after = 0
    while True:
        page = await store.list_events(after_id=after, limit=_EVENT_PAGE, owner=row.owner)
        kept.extend(e for e in page if e.connection_id == row.id)
        if len(page) < _EVENT_PAGE:
            return list(kept)
        after = page[-1].id


def pagerduty_revocation_help(view: Mapping[str, Any], client_id: str) -> list[str]:
    """How to revoke a grant inside PagerDuty, which documents no revocation endpoint."""
    lines = [
        "PagerDuty offers no API to revoke a single grant, so it may still be valid on "
        "PagerDuty's side. To revoke it there:"
    ]
    user = view["user"] or {}
    if view["kind"] == "user":
        who = user.get("email") or user.get("name") or user.get("id") or "the user"
        lines.append(
            f"  - {clean(who)} removes the app in PagerDuty under My Profile -> Authorized Apps;"
        )
        if user.get("id"):
            lines.append(
                "  - or an account admin deletes the user's OAuth delegations: "
                f"DELETE {clean(view['api_base_url'])}/oauth_delegations"
                f"?user_id={clean(user['id'])} (REST API, scope "
                "oauth_delegations.write; PagerDuty documents it as signing the user out of "
                "its web and mobile apps as well);"
            )
    lines.append(
        f'  - or the app\'s owner uses "Revoke All Tokens" on the OAuth client screen of app '
        f"{clean(client_id)}: that revokes EVERY connection of the app (each must reconnect)."
    )
    return lines


def account_label(view: Mapping[str, Any]) -> str:
    """``subdomain (region)`` of a :func:`connection_json` view."""
    return f"{view['subdomain'] or view['account_id']} ({view['region']})"


def user_label(view: Mapping[str, Any]) -> str:
    """The PagerDuty user of a :func:`connection_json` view, for a table cell."""
    if view["kind"] == "app":
        return "(app token)"
    user = view["user"] or {}
    return str(user.get("email") or user.get("name") or user.get("id") or "-")


def cell_time(iso: str | None) -> str:
    # Views hold RFC 3339 strings; tables want them shorter.
    if iso is None:
        return "-"
    return iso[:16].replace("T", " ") + "Z"


_SUBSCRIPTION_LABELS = {
    "off": "off (PDAUTH_PAGERDUTY_EVENTS is not set)",
    "missing": "missing (the keeper subscribes it on its next pass)",
    "pending": "pending (being subscribed)",
    "active": "active",
    "no_scope": "no scope (the grant lacks the scope to subscribe; reconnect with it)",
    "failed": "failed (retried by the keeper)",
    "needs_reauth": "kept, but the connection needs re-authorization",
    "disabled": "disabled by PagerDuty after failed deliveries",
    "deleting": "being deleted (queued)",
    "deleted": "deleted",
}


def subscription_label(status: SubscriptionStatus) -> str:
    """The PagerDuty webhook subscription's state in one line (its id and last error too)."""
    label = _SUBSCRIPTION_LABELS.get(status.state, status.state)
    if status.pd_subscription_id:
        label += f" [{status.pd_subscription_id}]"
    if status.last_error and status.state not in ("active", "deleted"):
        label += f": {status.last_error}"
    return label
