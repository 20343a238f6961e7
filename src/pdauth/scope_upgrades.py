"""Scope upgrades: noticing that a connection lacks scopes, and asking for them again.

Apps grow: a feature needs a scope existing connections were never granted. A connection
*needs scopes* when the configured ``PDAUTH_SCOPES`` hold some it was not granted (derived by
:meth:`pdauth.connection_types.Connection.from_row`) or when PagerDuty refused a call with 403
"Token missing required scopes": :class:`ScopeWatchingClient` records PagerDuty's
``required_scopes`` on the connection, once, with one ``connection.needs_scopes`` event, and
re-raises the typed :class:`~pdauth.errors.ScopeError`. :func:`reconsent_scopes` is what a
re-consent asks for: the union of what was granted and what is needed, so a narrower second
approval never silently drops a scope the connection had.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from pdauth.client import PagerDutyClient
from pdauth.client.credentials import TokenSource
from pdauth.errors import ScopeError, StoreError
from pdauth.oauth import format_scopes, parse_scopes
from pdauth.oauth.scopes import OPENID_SCOPE, is_app_token_scope
from pdauth.store import AsyncStore, ConnectionRow, NewEvent

__all__ = [
    "NEEDS_SCOPES_EVENT",
    "ScopeWatchingClient",
    "reconsent_scopes",
    "record_missing_scopes",
]

log = logging.getLogger("pdauth.connections")

#: Written once when PagerDuty first names scopes a connection lacks.
NEEDS_SCOPES_EVENT: Final = "connection.needs_scopes"

Params = Mapping[str, Any]


def reconsent_scopes(row: ConnectionRow, wanted: Iterable[str]) -> frozenset[str]:
    """What a re-consent for ``row`` asks for: granted, wanted and what PagerDuty reported."""
    granted = {
        s
        for s in parse_scopes(row.scopes)
        if s != OPENID_SCOPE and not is_app_token_scope(s)  # PagerDuty adds openid itself
    }
    reported = parse_scopes(row.missing_scopes or "")
    return frozenset(granted | set(parse_scopes(tuple(wanted))) | reported)


async def record_missing_scopes(
    store: AsyncStore, connection_id: str, exc: ScopeError, now: float
) -> bool:
    """Mark the connection with the scopes PagerDuty required; True the first time."""
    required = parse_scopes(tuple(exc.required_scopes))
    if not required:
        return False  # PagerDuty named none: nothing to ask the user for
    scopes = format_scopes(required)
    event = NewEvent(type=NEEDS_SCOPES_EVENT, data={"missing_scopes": sorted(required)})
    changed = await store.mark_missing_scopes(connection_id, scopes, now=now, event=event)
    if changed:
        log.info("connection needs scopes: %s", scopes, extra={"connection_id": connection_id})
    return changed


class ScopeWatchingClient(PagerDutyClient):
    """A :class:`PagerDutyClient` that reports a 403 for missing scopes before re-raising it.

    ``on_scope_error`` records the missing scopes (:func:`record_missing_scopes`); a store
    failure there never hides PagerDuty's error from the caller.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        on_scope_error: Callable[[ScopeError], Awaitable[object]],
        **options: Any,
    ) -> None:
        super().__init__(base_url, tokens, **options)
        self._on_scope_error = on_scope_error

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        """:meth:`PagerDutyClient.request`, reporting a :class:`ScopeError` on its way out."""
        try:
            return await super().request(method, path, **kw)
        except ScopeError as exc:
            with contextlib.suppress(StoreError):
                await self._on_scope_error(exc)
            raise
