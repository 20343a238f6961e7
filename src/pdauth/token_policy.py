"""Token policy: when a token is refreshed, how long tokens live, how failures are classified.

The numbers and small rules the :class:`pdauth.tokens.TokenManager` applies (its docstring is
the spec): refresh after ``REFRESH_FRACTION`` of a token's measured lifetime
(:func:`refresh_at`), PagerDuty's documented lifetimes per app kind, the polling and retry
bounds, which failures are transient, and the error codes recorded on a connection (never a
token). Also :class:`ConnectionTokenSource`, the REST client's ``TokenSource`` over a manager.
Re-exported by :mod:`pdauth.tokens`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from pdauth.errors import NeedsReauthError, OAuthError, TransportError
from pdauth.oauth import TokenSet, format_scopes
from pdauth.store import ConnectionRow, NewEvent

__all__ = [
    "ACCESS_LIFETIME",
    "REFRESH_DUE_FRACTION",
    "REFRESH_FRACTION",
    "REFRESH_LIFETIME",
    "ConnectionTokenSource",
    "RefreshDueReport",
    "refresh_at",
]

DAY = 86_400.0
#: Refresh once this fraction of a token's lifetime has passed (see the module docstring).
REFRESH_FRACTION = 0.9
#: PagerDuty's documented lifetimes: access and idle refresh-token lifetimes per kind.
ACCESS_LIFETIME = {"classic": 30 * DAY, "scoped": 1 * DAY}
REFRESH_LIFETIME = {"classic": 210 * DAY, "scoped": 30 * DAY}
#: refresh_due() refreshes refresh tokens with less than this fraction of their life left.
REFRESH_DUE_FRACTION = 0.25

# Waiting for another worker's refresh: poll the row every 50-250 ms (jittered).
POLL_MIN = 0.05
POLL_MAX = 0.25
# Transient token-endpoint failures: attempts per lease, and the backoff between them.
RETRY_ATTEMPTS = 3
RETRY_BASE = 0.25
RETRY_CAP = 2.0
# OAuth errors that mean "try again later", not "this grant is dead".
TRANSIENT_OAUTH_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


class _Vendor(Protocol):
    """What :class:`ConnectionTokenSource` needs of a :class:`pdauth.tokens.TokenManager`."""

    async def access_token(self, connection_id: str) -> str: ...

    async def refresh_rejected(self, connection_id: str, rejected: str) -> str: ...


def refresh_at(
    expires_at: float | None, lifetime: float | None, *, nominal_lifetime: float
) -> float:
    """When to stop using a token and refresh it: after ``REFRESH_FRACTION`` of its life.

    ``lifetime`` is the measured ``expires_in`` (None if unknown: the nominal one is used).
    A token with no expiry is never refreshed by time (only after a 401).
    """
    if expires_at is None:
        return math.inf
    life = nominal_lifetime if lifetime is None or lifetime <= 0 else lifetime
    life = min(life, nominal_lifetime)
    return expires_at - (1.0 - REFRESH_FRACTION) * life


@dataclass(frozen=True, slots=True)
class Cached:
    token: str = field(repr=False)
    refresh_at: float  # wall clock: refresh from here on
    expires_at: float | None  # wall clock: unusable from here on
    valid_until: float  # wall clock: re-read the row from here on (cache_ttl)
    token_version: int


@dataclass(frozen=True, slots=True)
class Usable:
    token: str = field(repr=False)
    refresh_at: float
    expires_at: float | None
    token_version: int


def wants_refresh(
    current: Usable,
    now: float,
    *,
    force: bool,
    rejected: str | None,
    seen_version: int | None,
) -> bool:
    """Whether to refresh although ``current`` is still usable."""
    if not force:
        return now >= current.refresh_at
    if rejected is not None and current.token != rejected:
        return False  # it changed since PagerDuty rejected it: try the new one first
    return not (seen_version is not None and current.token_version != seen_version)


def fresh_usable(tokens: TokenSet, token_version: int, nominal_access: float) -> Usable:
    """The access token of a pair just stored at ``token_version``."""
    return Usable(
        tokens.access_token,
        refresh_at(tokens.expires_at, tokens.expires_in, nominal_lifetime=nominal_access),
        tokens.expires_at,
        token_version,
    )


def refreshed_event(row: ConnectionRow, tokens: TokenSet) -> NewEvent:
    """The audit event written with a refreshed pair (no token in it)."""
    return NewEvent(
        type="connection.refreshed",
        data={
            "kind": row.kind,
            "token_version": row.token_version + 1,
            "expires_in": tokens.expires_in,
            "scopes": format_scopes(tokens.scopes) if tokens.scopes else row.scopes,
        },
        outbox=False,
    )


def backoff(attempt: int, rng: random.Random) -> float:
    """Jittered exponential delay before retry ``attempt`` + 1 (50-150 % of the base)."""
    base: float = min(RETRY_CAP, RETRY_BASE * 2.0 ** (attempt - 1))
    return base * (0.5 + rng.random())


@dataclass(frozen=True)
class RefreshDueReport:
    """What :meth:`TokenManager.refresh_due` did."""

    examined: int
    refreshed: int
    needs_reauth: int
    failed: int


@dataclass(frozen=True)
class ConnectionTokenSource:
    """Adapts a :class:`TokenManager` to the REST client's ``TokenSource`` port."""

    manager: _Vendor
    connection_id: str

    @property
    def pacing_key(self) -> str:
        return self.connection_id

    async def authorization(self) -> str:
        return "Bearer " + await self.manager.access_token(self.connection_id)

    async def refresh(self, rejected: str) -> str:
        token = rejected.removeprefix("Bearer ").strip()
        return "Bearer " + await self.manager.refresh_rejected(self.connection_id, token)


def dead_connection_error(row: ConnectionRow) -> NeedsReauthError:
    if row.status == "revoked":
        return NeedsReauthError(row.id, "the connection was disconnected")
    return NeedsReauthError(row.id, "PagerDuty no longer accepts this connection; reconnect it")


def is_transient(exc: Exception) -> bool:
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, OAuthError) and exc.error in TRANSIENT_OAUTH_ERRORS


def error_code(exc: Exception) -> str:
    if isinstance(exc, TransportError):
        return "transport_error"
    if isinstance(exc, OAuthError):
        return exc.error[:64] or "oauth_error"
    return type(exc).__name__[:64]


def error_message(exc: Exception) -> str:
    # Our own error messages never carry tokens (pdauth.errors rule); cap them anyway.
    return str(exc)[:500]
