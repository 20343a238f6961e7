"""A store double for negative controls: its refresh lease always succeeds.

``NoLeaseStore`` is an :class:`~pdauth.store.AsyncStore` given to a Connector (or a
TokenManager) through its ordinary ``store`` parameter. ``try_acquire_lease`` hands back the
row without taking anything, so every worker believes it holds the lease and refreshes with the
same refresh token, as a client without a lease would. At write time it takes the real lease
(waiting while another writer holds it) and writes over whatever is there (last write wins),
so the store's fenced write lets the naive refresh through. Production code never sees it.
"""

from __future__ import annotations

import anyio

from pdauth.store import AsyncStore, ConnectionRow, NewEvent

__all__ = ["NoLeaseStore"]


class NoLeaseStore(AsyncStore):
    """An AsyncStore whose lease never refuses (see the module docstring)."""

    async def try_acquire_lease(
        self, connection_id: str, lease_owner: str, now: float, ttl: float
    ) -> ConnectionRow | None:
        row = await self.get_connection(connection_id)
        return row if row is not None and row.status == "active" else None

    async def store_tokens(
        self,
        connection_id: str,
        *,
        lease_owner: str,
        expected_version: int,
        access_token_ct: str,
        refresh_token_ct: str | None,
        key_id: str,
        access_expires_at: float | None,
        refresh_expires_at: float | None,
        now: float,
        event: NewEvent | None = None,
    ) -> ConnectionRow | None:
        while True:
            leased = await super().try_acquire_lease(connection_id, lease_owner, now, 30.0)
            if leased is not None:
                break
            current = await self.get_connection(connection_id)
            if current is None or current.status != "active":
                return None
            await anyio.sleep(0.05)  # another naive writer is mid-write: last write wins
        return await super().store_tokens(
            connection_id,
            lease_owner=lease_owner,
            expected_version=leased.token_version,
            access_token_ct=access_token_ct,
            refresh_token_ct=refresh_token_ct,
            key_id=key_id,
            access_expires_at=access_expires_at,
            refresh_expires_at=refresh_expires_at,
            now=now,
            event=event,
        )
