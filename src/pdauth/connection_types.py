"""What a host application sees of a connection: :class:`Connection` and its one serializer.

:class:`Connection` is a frozen, secret-free view of a stored connection row
(:meth:`Connection.from_row`); :meth:`Connection.to_json` is the one JSON shape of a
connection, for the API and the CLI alike — an allowlist. :class:`AuthorizationStart` is
what ``Connector.begin`` returns. All are re-exported by :mod:`pdauth.connections`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pdauth.oauth import missing_scopes as scopes_not_in
from pdauth.store import ConnectionRow

__all__ = ["AuthorizationStart", "Connection", "LastError", "iso_time"]


@dataclass(frozen=True)
class AuthorizationStart:
    """What ``begin`` returns: send the browser to ``url``; put ``binding`` in a cookie.

    Nothing of it is in the repr: the URL carries the state.
    """

    url: str = field(repr=False)
    state: str = field(repr=False)
    binding: str = field(repr=False)
    expires_at: float = 0.0


@dataclass(frozen=True)
class LastError:
    """The last failure recorded on a connection (no secrets)."""

    code: str
    message: str | None
    at: float | None


# The fields of :class:`Connection` copied unchanged from the :class:`ConnectionRow` column
# of the same name; ``from_row`` sets the renamed and derived ones itself. Never a secret
# column here (``*_ct``, ``lease_owner``): the view is secret-free.
_SAME_NAME_FIELDS: Final = (
    "id",
    "owner",
    "kind",
    "region",
    "account_id",
    "subdomain",
    "status",
    "created_at",
    "updated_at",
    "last_refreshed_at",
    "access_expires_at",
    "delegation_id",
    "last_used_at",
    "refresh_expires_at",
    "token_version",
    "key_id",
)


@dataclass(frozen=True)
class Connection:
    """A connected PagerDuty account (user or app), as a host application sees it. No secrets."""

    id: str
    owner: str
    kind: str
    region: str
    account_id: str
    subdomain: str | None
    user_id: str | None
    user_name: str | None
    user_email: str | None
    scopes: frozenset[str]
    status: str
    api_base_url: str
    created_at: float
    updated_at: float
    last_refreshed_at: float | None
    access_expires_at: float | None
    last_error: LastError | None
    # Operator detail (not in to_json; the CLI shows it beside it); never a secret either.
    delegation_id: str | None = None
    last_used_at: float | None = None
    refresh_expires_at: float | None = None
    # Out of the repr so that no word "token" appears there (a test checks it).
    token_version: int | None = field(default=None, repr=False)
    key_id: str | None = None
    refresh_lease_until: float | None = None
    # Scopes the app needs and this grant lacks: the configured scopes it was not granted,
    # plus any PagerDuty named in a 403 "Token missing required scopes". Non-empty means
    # "needs_scopes": offer a re-consent (``Connector.begin(..., connection_id=…)``).
    missing_scopes: frozenset[str] = frozenset()

    @property
    def needs_scopes(self) -> bool:
        return bool(self.missing_scopes)

    @classmethod
    def from_row(
        cls,
        row: ConnectionRow,
        api_base_urls: Mapping[str, str],
        required_scopes: Iterable[str] = (),
    ) -> Connection:
        """The view of a row; ``required_scopes`` (the app's configured scopes) feed
        :attr:`missing_scopes` along with what PagerDuty reported missing."""
        granted = frozenset(s for s in row.scopes.split(" ") if s)
        reported = frozenset((row.missing_scopes or "").split()) - granted
        missing = scopes_not_in(tuple(required_scopes), granted) | reported
        error = (
            LastError(row.last_error_code, row.last_error_message, row.last_error_at)
            if row.last_error_code is not None
            else None
        )
        same_name: dict[str, Any] = {name: getattr(row, name) for name in _SAME_NAME_FIELDS}
        return cls(
            **same_name,
            user_id=row.pd_user_id,
            user_name=row.pd_user_name,
            user_email=row.pd_user_email,
            scopes=granted,
            # From the validated region only, never from request input (docs/SECURITY.md item 21).
            api_base_url=api_base_urls[row.region],
            last_error=error,
            refresh_lease_until=row.lease_until,
            missing_scopes=missing if row.kind == "user" else frozenset(),
        )

    def to_json(self) -> dict[str, Any]:
        """The connection as the JSON API returns it (times RFC 3339 UTC). No secret field.

        The one serializer of a connection: the service's API and pages and the CLI build
        on it. It is an allowlist — a new field on the dataclass appears only when added here.
        """
        user = None
        if self.user_id is not None:
            user = {"id": self.user_id, "name": self.user_name, "email": self.user_email}
        return {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "status": self.status,
            "region": self.region,
            "account_id": self.account_id,
            "subdomain": self.subdomain,
            "user": user,
            "scopes": sorted(self.scopes),
            "missing_scopes": sorted(self.missing_scopes),
            "api_base_url": self.api_base_url,
            "created_at": iso_time(self.created_at),
            "updated_at": iso_time(self.updated_at),
            "last_refreshed_at": iso_time(self.last_refreshed_at),
            "access_expires_at": iso_time(self.access_expires_at),
            "last_error": self._error_json(),
        }

    def _error_json(self) -> dict[str, Any] | None:
        error = self.last_error
        if error is None:
            return None
        return {"code": error.code, "message": error.message, "at": iso_time(error.at)}


def iso_time(value: float | None) -> str | None:
    """RFC 3339 UTC timestamp (``2026-11-27T20:58:00Z``) for JSON; ``None`` stays ``None``."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
