"""What the connection commands may show: the allowlist views of connections and events.

A connection is shown through :func:`connection_view` (every non-secret column, never a token,
a ciphertext or a lease owner); an event through :func:`event_view`, whose data loses its
``*_ct`` members. Also the short labels tables use and the guidance for revoking a grant inside
PagerDuty, which has no revocation API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from pdauth.commands._output import clean, iso_time
from pdauth.store import AsyncStore, ConnectionRow, EventRow

__all__ = [
    "account_label",
    "cell_time",
    "connection_view",
    "event_view",
    "pagerduty_revocation_help",
    "recent_events",
    "user_label",
]

_EVENT_PAGE = 1000


def connection_view(row: ConnectionRow, api_base_urls: Mapping[str, str]) -> dict[str, Any]:
    """Every non-secret field of a connection, JSON-ready (times as RFC 3339 UTC)."""
    error = None
    if row.last_error_code is not None:
        error = {
            "code": row.last_error_code,
            "message": row.last_error_message,
            "at": iso_time(row.last_error_at),
        }
    return {
        "id": row.id,
        "owner": row.owner,
        "kind": row.kind,
        "status": row.status,
        "region": row.region,
        "account_id": row.account_id,
        "subdomain": row.subdomain,
        "pd_user_id": row.pd_user_id,
        "pd_user_name": row.pd_user_name,
        "pd_user_email": row.pd_user_email,
        "delegation_id": row.delegation_id,
        "scopes": sorted(s for s in row.scopes.split(" ") if s),
        "api_base_url": api_base_urls.get(row.region),
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "last_refreshed_at": iso_time(row.last_refreshed_at),
        "last_used_at": iso_time(row.last_used_at),
        "access_expires_at": iso_time(row.access_expires_at),
        "refresh_expires_at": iso_time(row.refresh_expires_at),
        "token_version": row.token_version,
        "key_id": row.key_id,
        "refresh_lease_until": iso_time(row.lease_until),
        "last_error": error,
    }


def _without_ciphertext(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _without_ciphertext(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.endswith("_ct"))
        }
    if isinstance(value, list | tuple):
        return [_without_ciphertext(v) for v in value]
    return value


def event_view(event: EventRow) -> dict[str, Any]:
    """An audit/outbox event without its ciphertext members (``token_ct`` of a queued revoke)."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso_time(event.created_at),
        "delivered_at": iso_time(event.delivered_at),
        "attempts": event.attempts,
        "last_error": event.last_error,
        "data": _without_ciphertext(event.data),
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
    """How to revoke a grant inside PagerDuty, which has no revocation API (PAGERDUTY.md §4)."""
    lines = [
        "PagerDuty offers no API to revoke a single grant, so it may still be valid on "
        "PagerDuty's side. To revoke it there:"
    ]
    if view["kind"] == "user":
        who = view["pd_user_email"] or view["pd_user_name"] or view["pd_user_id"] or "the user"
        lines.append(
            f"  - {clean(who)} removes the app in PagerDuty under My Profile -> Authorized Apps;"
        )
        if view["pd_user_id"]:
            lines.append(
                "  - or an account admin deletes the user's OAuth delegations: "
                f"DELETE {clean(view['api_base_url'])}/oauth_delegations"
                f"?user_id={clean(view['pd_user_id'])} (REST API, scope "
                "oauth_delegations.write; PagerDuty documents it as signing the user out of "
                "its web and mobile apps as well);"
            )
    lines.append(
        f'  - or the app\'s owner uses "Revoke All Tokens" on the OAuth client screen of app '
        f"{clean(client_id)}: that revokes EVERY connection of the app (each must reconnect)."
    )
    return lines


def account_label(view: Mapping[str, Any]) -> str:
    return f"{view['subdomain'] or view['account_id']} ({view['region']})"


def user_label(view: Mapping[str, Any]) -> str:
    if view["kind"] == "app":
        return "(app token)"
    return str(view["pd_user_email"] or view["pd_user_name"] or view["pd_user_id"] or "-")


def cell_time(iso: str | None) -> str:
    # Views hold RFC 3339 strings; tables want them shorter.
    if iso is None:
        return "-"
    return iso[:16].replace("T", " ") + "Z"
