"""Pending authorizations: created with a per-owner and per-binding cap, consumed exactly once.

A pending authorization is consumed by one ``DELETE … RETURNING``, so of two callbacks racing
with the same state exactly one gets the row; expired rows are purged in bulk.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdauth.store.base import StoreBase, pending_row
from pdauth.store.records import NewPending, PendingRow
from pdauth.store.schema import pending_authorizations

__all__ = ["PendingTable"]

_p = pending_authorizations.c


class PendingTable(StoreBase):
    """The ``pending_authorizations`` table's operations (part of :class:`pdauth.store.Store`)."""

    def create_pending(self, rec: NewPending, now: float) -> None:
        """Store a pending authorization; evict the oldest beyond the per-owner cap.

        The cap (``max_pending_per_owner``) applies per owner and per browser binding, so
        neither a user opening many tabs nor a script can grow the table without bound.
        """
        now = float(now)
        keep_others = self._max_pending - 1
        insert = sa.insert(pending_authorizations).values(
            state_hash=rec.state_hash,
            owner=rec.owner,
            binding_hash=rec.binding_hash,
            verifier_ct=rec.verifier_ct,
            redirect_uri=rec.redirect_uri,
            scopes=rec.scopes,
            return_to=rec.return_to,
            expected_account=rec.expected_account,
            expected_user=rec.expected_user,
            connection_id=rec.connection_id,
            created_at=now,
            expires_at=float(rec.expires_at),
        )
        evictions = []
        for column, value in ((_p.owner, rec.owner), (_p.binding_hash, rec.binding_hash)):
            newest_others = (
                sa.select(_p.state_hash)
                .where(column == value, _p.state_hash != rec.state_hash)
                .order_by(_p.created_at.desc(), _p.state_hash.desc())
                .limit(keep_others)
            )
            evictions.append(
                sa.delete(pending_authorizations).where(
                    column == value,
                    _p.state_hash != rec.state_hash,
                    _p.state_hash.not_in(newest_others),
                )
            )

        def work(conn: sa.Connection) -> None:
            conn.execute(insert)
            for stmt in evictions:
                conn.execute(stmt)

        self._run("create_pending", work, write=True)

    def consume_pending(self, state_hash: str) -> PendingRow | None:
        """Take a pending authorization out, atomically and exactly once.

        Returns the row even when it has expired (check ``row.is_expired(now)`` and the
        binding); None when there is no such row or another caller already consumed it.
        """
        stmt = (
            sa.delete(pending_authorizations)
            .where(_p.state_hash == state_hash)
            .returning(*pending_authorizations.c)
        )

        def work(conn: sa.Connection) -> PendingRow | None:
            row = conn.execute(stmt).first()
            return None if row is None else pending_row(row)

        return self._run("consume_pending", work, write=True)

    def purge_expired_pending(self, now: float) -> int:
        """Delete pending authorizations expired at ``now``; returns how many."""
        stmt = sa.delete(pending_authorizations).where(_p.expires_at <= float(now))
        return self._run(
            "purge_expired_pending", lambda conn: int(conn.execute(stmt).rowcount), write=True
        )
