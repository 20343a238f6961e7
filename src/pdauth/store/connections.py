"""Connections: upsert, read, the refresh lease, fenced token writes, terminal states, rotation.

Concurrency never relies on a transaction held open across network calls: the refresh lease
is one compare-and-set UPDATE and token writes are fenced by the lease owner and
``token_version``, so of two racing callers exactly one wins. Terminal changes (needs_reauth,
revoked) wipe the ciphertexts and return True only to the caller that changed the status, so
concurrent callers write exactly one event between them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa

from pdauth.store.base import (
    StoreBase,
    connection_row,
    error_code,
    error_message,
    page_limit,
)
from pdauth.store.records import CONNECTION_STATUSES, ConnectionRow, NewConnection, NewEvent
from pdauth.store.schema import connections

__all__ = ["CONNECTION_ID_PREFIX", "ConnectionsTable", "new_connection_id"]

CONNECTION_ID_PREFIX: Final = "pdc_"

_c = connections.c


def new_connection_id() -> str:
    """An unguessable connection id (128 random bits)."""
    return CONNECTION_ID_PREFIX + secrets.token_urlsafe(16)


def _lease_owner(lease_owner: str) -> str:
    if not isinstance(lease_owner, str) or not lease_owner or len(lease_owner) > 255:
        raise ValueError("lease_owner must be a non-empty string of at most 255 characters")
    return lease_owner


_WIPED_TOKENS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "access_token_ct": None,
        "refresh_token_ct": None,
        "key_id": None,
        "access_expires_at": None,
        "refresh_expires_at": None,
        "lease_owner": None,
        "lease_until": None,
    }
)


class ConnectionsTable(StoreBase):
    """The ``connections`` table's operations (part of :class:`pdauth.store.Store`)."""

    def upsert_connection(
        self, rec: NewConnection, now: float, event: NewEvent | None = None
    ) -> ConnectionRow:
        """Insert a connection, or update the owner's row for the same PagerDuty grant.

        The same grant is the same (owner, kind, account_id, pd_user_id); an update stores
        the new tokens, sets status active, bumps token_version, and clears the lease and
        the last error. ``event`` is appended in the same transaction, with this row's id.
        """
        now = float(now)
        token_values: dict[str, Any] = {
            "region": rec.region,
            "subdomain": rec.subdomain,
            "pd_user_name": rec.pd_user_name,
            "pd_user_email": rec.pd_user_email,
            "delegation_id": rec.delegation_id,
            "scopes": rec.scopes,
            "status": "active",
            "access_token_ct": rec.access_token_ct,
            "refresh_token_ct": rec.refresh_token_ct,
            "key_id": rec.key_id,
            "access_expires_at": rec.access_expires_at,
            "refresh_expires_at": rec.refresh_expires_at,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
            "last_error_code": None,
            "last_error_message": None,
            "last_error_at": None,
            # A new grant answers whatever scopes PagerDuty said were missing.
            "missing_scopes": None,
        }
        stmt = self._insert(connections).values(
            id=new_connection_id(),
            owner=rec.owner,
            kind=rec.kind,
            account_id=rec.account_id,
            pd_user_id=rec.pd_user_id,
            token_version=1,
            created_at=now,
            last_refreshed_at=None,
            last_used_at=None,
            **token_values,
        )
        if rec.pd_user_id is None:
            target = [_c.owner, _c.kind, _c.account_id]
            where = _c.pd_user_id.is_(None)
        else:
            target = [_c.owner, _c.kind, _c.account_id, _c.pd_user_id]
            where = _c.pd_user_id.is_not(None)
        stmt = stmt.on_conflict_do_update(
            index_elements=target,
            index_where=where,
            set_={**token_values, "token_version": _c.token_version + 1},
        ).returning(*connections.c)

        def work(conn: sa.Connection) -> ConnectionRow:
            row = connection_row(conn.execute(stmt).one())
            if event is not None:
                self._append_event(conn, event, now, connection_id=row.id, owner=row.owner)
            return row

        return self._run("upsert_connection", work, write=True)

    def get_connection(self, connection_id: str) -> ConnectionRow | None:
        stmt = sa.select(connections).where(_c.id == connection_id)

        def work(conn: sa.Connection) -> ConnectionRow | None:
            row = conn.execute(stmt).first()
            return None if row is None else connection_row(row)

        return self._run("get_connection", work, write=False)

    def list_connections(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[ConnectionRow]:
        """Connections ordered by id; page with ``after_id`` = the last id of the previous page."""
        stmt = sa.select(connections).order_by(_c.id).limit(page_limit(limit))
        if owner is not None:
            stmt = stmt.where(_c.owner == owner)
        if status is not None:
            if status not in CONNECTION_STATUSES:
                raise ValueError(f"status must be one of {', '.join(CONNECTION_STATUSES)}")
            stmt = stmt.where(_c.status == status)
        return self._rows("list_connections", stmt, after_id=after_id)

    def _rows(
        self, operation: str, stmt: sa.Select[Any], *, after_id: str | None = None
    ) -> list[ConnectionRow]:
        """The connection rows ``stmt`` selects, from after ``after_id`` on when one is given."""
        if after_id is not None:
            stmt = stmt.where(_c.id > after_id)
        return self._run(
            operation, lambda conn: [connection_row(r) for r in conn.execute(stmt)], write=False
        )

    def count_by_status(self) -> dict[str, int]:
        """Connections per status; every status is present, zero included."""
        stmt = sa.select(_c.status, sa.func.count()).group_by(_c.status)

        def work(conn: sa.Connection) -> dict[str, int]:
            counts = dict.fromkeys(CONNECTION_STATUSES, 0)
            for status, count in conn.execute(stmt):
                counts[str(status)] = int(count)
            return counts

        return self._run("count_by_status", work, write=False)

    def delete_connection(self, connection_id: str) -> bool:
        """Remove the row for good (purging a deleted host-app user); events are kept."""
        stmt = sa.delete(connections).where(_c.id == connection_id)
        return self._run(
            "delete_connection", lambda conn: conn.execute(stmt).rowcount == 1, write=True
        )

    def try_acquire_lease(
        self, connection_id: str, lease_owner: str, now: float, ttl: float
    ) -> ConnectionRow | None:
        """Take the refresh lease with one compare-and-set; the row as of now, or None.

        Only an active connection whose lease is free or expired can be leased. Use a fresh
        ``lease_owner`` per attempt (e.g. ``secrets.token_hex(8)``): the lease is not
        re-entrant, so two callers sharing one owner string would both pass the fence.
        """
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        now = float(now)
        stmt = (
            sa.update(connections)
            .where(
                _c.id == connection_id,
                _c.status == "active",
                sa.or_(_c.lease_until.is_(None), _c.lease_until <= now),
            )
            .values(lease_owner=_lease_owner(lease_owner), lease_until=now + float(ttl))
            .returning(*connections.c)
        )

        def work(conn: sa.Connection) -> ConnectionRow | None:
            row = conn.execute(stmt).first()
            return None if row is None else connection_row(row)

        return self._run("try_acquire_lease", work, write=True)

    def release_lease(self, connection_id: str, lease_owner: str) -> None:
        """Give the lease back; does nothing if ``lease_owner`` no longer holds it."""
        stmt = (
            sa.update(connections)
            .where(_c.id == connection_id, _c.lease_owner == lease_owner)
            .values(lease_owner=None, lease_until=None)
        )
        self._run("release_lease", lambda conn: conn.execute(stmt), write=True)

    def store_tokens(
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
        """Persist a refreshed token pair, fenced by the lease owner and ``token_version``.

        One UPDATE: it only applies while ``lease_owner`` still holds the lease (expired or
        not: if nobody took it over, these are still the newest tokens and must be kept)
        and the row is still at ``expected_version`` and active. It bumps token_version,
        releases the lease, sets last_refreshed_at and clears the last error. Returns the
        new row, or None when the fence failed (nothing changed; re-read the row).

        ``refresh_token_ct=None`` keeps the stored refresh-token ciphertext (a refresh
        response without a new refresh token, RFC 6749 §6). The row has one ``key_id`` for
        both ciphertexts, so prefer passing the kept token re-encrypted under ``key_id``.
        """
        if not access_token_ct:
            raise ValueError("access_token_ct must be a non-empty ciphertext")
        if not key_id:
            raise ValueError("key_id must be non-empty")
        now = float(now)
        values: dict[str, Any] = {
            "access_token_ct": access_token_ct,
            "key_id": key_id,
            "access_expires_at": access_expires_at,
            "refresh_expires_at": refresh_expires_at,
            "token_version": _c.token_version + 1,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
            "last_refreshed_at": now,
            "last_error_code": None,
            "last_error_message": None,
            "last_error_at": None,
        }
        if refresh_token_ct is not None:
            values["refresh_token_ct"] = refresh_token_ct
        stmt = (
            sa.update(connections)
            .where(
                _c.id == connection_id,
                _c.lease_owner == lease_owner,
                _c.token_version == expected_version,
                _c.status == "active",
            )
            .values(**values)
            .returning(*connections.c)
        )

        def work(conn: sa.Connection) -> ConnectionRow | None:
            row = conn.execute(stmt).first()
            if row is None:
                return None
            stored = connection_row(row)
            if event is not None:
                self._append_event(conn, event, now, connection_id=stored.id, owner=stored.owner)
            return stored

        return self._run("store_tokens", work, write=True)

    def _end_connection(
        self,
        operation: str,
        connection_id: str,
        *,
        from_statuses: tuple[str, ...],
        values: Mapping[str, Any],
        now: float,
        expected_version: int | None,
        event: NewEvent | None,
    ) -> bool:
        """Move an active/dead connection to a terminal state, wiping its tokens.

        True only when this call changed the status, so concurrent callers write exactly
        one event between them.
        """
        conditions = [_c.id == connection_id, _c.status.in_(from_statuses)]
        if expected_version is not None:
            conditions.append(_c.token_version == expected_version)
        stmt = (
            sa.update(connections)
            .where(*conditions)
            .values(
                **_WIPED_TOKENS,
                **values,
                token_version=_c.token_version + 1,
                updated_at=now,
            )
            .returning(_c.id, _c.owner)
        )

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(stmt).first()
            if row is None:
                return False
            if event is not None:
                self._append_event(conn, event, now, connection_id=row.id, owner=row.owner)
            return True

        return self._run(operation, work, write=True)

    def mark_needs_reauth(
        self,
        connection_id: str,
        *,
        code: str,
        message: str,
        now: float,
        expected_version: int | None = None,
        event: NewEvent | None = None,
    ) -> bool:
        """Declare an active connection dead: wipe tokens, status needs_reauth, drop lease.

        With ``expected_version`` it only applies if no refresh moved the tokens meanwhile
        (a race is not a dead grant). True only if this call changed the status; ``event``
        is appended in the same transaction, and only then.
        """
        now = float(now)
        return self._end_connection(
            "mark_needs_reauth",
            connection_id,
            from_statuses=("active",),
            values={
                "status": "needs_reauth",
                "last_error_code": error_code(code),
                "last_error_message": error_message(message),
                "last_error_at": now,
            },
            now=now,
            expected_version=expected_version,
            event=event,
        )

    def mark_revoked(
        self,
        connection_id: str,
        *,
        now: float,
        expected_version: int | None = None,
        event: NewEvent | None = None,
    ) -> bool:
        """Disconnect: wipe tokens at once and set status revoked (from active or needs_reauth).

        True only if this call changed the status; ``event`` is appended in the same
        transaction, and only then. To revoke at PagerDuty through the outbox, read the row,
        put its refresh-token ciphertext in a ``revocation.pending`` event and pass the
        row's ``token_version`` as ``expected_version``, so the snapshot is the token wiped.
        """
        now = float(now)
        return self._end_connection(
            "mark_revoked",
            connection_id,
            from_statuses=("active", "needs_reauth"),
            values={"status": "revoked"},
            now=now,
            expected_version=expected_version,
            event=event,
        )

    def record_error(self, connection_id: str, *, code: str, message: str, now: float) -> None:
        """Note a transient failure (the connection stays as it is); message is truncated."""
        now = float(now)
        stmt = (
            sa.update(connections)
            .where(_c.id == connection_id)
            .values(
                last_error_code=error_code(code),
                last_error_message=error_message(message),
                last_error_at=now,
                updated_at=now,
            )
        )
        self._run("record_error", lambda conn: conn.execute(stmt), write=True)

    def mark_missing_scopes(
        self, connection_id: str, scopes: str, *, now: float, event: NewEvent | None = None
    ) -> bool:
        """Record the scopes PagerDuty said a call needs (space-separated); once.

        True, and ``event`` appended in the same transaction, only when the recorded value
        changes; False when it was already so (or there is no such connection).
        """
        if not isinstance(scopes, str) or not scopes.strip():
            raise ValueError("scopes must be a non-empty space-separated string")
        now = float(now)
        stmt = (
            sa.update(connections)
            .where(
                _c.id == connection_id,
                sa.or_(_c.missing_scopes.is_(None), _c.missing_scopes != scopes),
            )
            .values(missing_scopes=scopes, updated_at=now)
            .returning(_c.owner)
        )

        def work(conn: sa.Connection) -> bool:
            owner = conn.execute(stmt).scalar()
            if owner is None:
                return False
            if event is not None:
                self._append_event(conn, event, now, connection_id=connection_id, owner=owner)
            return True

        return self._run("mark_missing_scopes", work, write=True)

    def touch_used(self, connection_id: str, now: float, *, min_interval: float = 60.0) -> None:
        """Record use, at most once per ``min_interval`` seconds (keeps hot paths write-free)."""
        now = float(now)
        stmt = (
            sa.update(connections)
            .where(
                _c.id == connection_id,
                sa.or_(_c.last_used_at.is_(None), _c.last_used_at <= now - float(min_interval)),
            )
            .values(last_used_at=now)
        )
        self._run("touch_used", lambda conn: conn.execute(stmt), write=True)

    def due_for_refresh(
        self, *, now: float, refresh_expires_before: float, limit: int
    ) -> list[ConnectionRow]:
        """Active connections whose refresh token nears its (estimated) idle expiry.

        Oldest deadline first; rows whose lease is currently held are left out.
        """
        now = float(now)
        stmt = (
            sa.select(connections)
            .where(
                _c.status == "active",
                _c.refresh_token_ct.is_not(None),
                _c.refresh_expires_at.is_not(None),
                _c.refresh_expires_at < float(refresh_expires_before),
                sa.or_(_c.lease_until.is_(None), _c.lease_until <= now),
            )
            .order_by(_c.refresh_expires_at, _c.id)
            .limit(page_limit(limit))
        )
        return self._rows("due_for_refresh", stmt)

    def rows_needing_reencryption(
        self, *, primary_key_id: str, limit: int, after_id: str | None = None
    ) -> list[ConnectionRow]:
        """Rows holding ciphertext under a key other than ``primary_key_id``, by id."""
        stmt = (
            sa.select(connections)
            .where(
                _c.key_id.is_not(None),
                _c.key_id != primary_key_id,
                sa.or_(_c.access_token_ct.is_not(None), _c.refresh_token_ct.is_not(None)),
            )
            .order_by(_c.id)
            .limit(page_limit(limit))
        )
        return self._rows("rows_needing_reencryption", stmt, after_id=after_id)

    def replace_ciphertexts(
        self,
        connection_id: str,
        *,
        expected_version: int,
        access_token_ct: str | None,
        refresh_token_ct: str | None,
        key_id: str,
        now: float,
    ) -> bool:
        """Key rotation: store the same tokens re-encrypted under ``key_id``.

        Fenced by ``token_version`` (a refresh, reconnect or revoke in between wins; re-read
        and retry). It does not bump token_version: the plaintext did not change, so caches
        and an in-flight refresh holding that version stay valid. Pass None for a column
        that is empty in the row you re-encrypted. True if the row was updated.
        """
        if not key_id:
            raise ValueError("key_id must be non-empty")
        stmt = (
            sa.update(connections)
            .where(_c.id == connection_id, _c.token_version == expected_version)
            .values(
                access_token_ct=access_token_ct,
                refresh_token_ct=refresh_token_ct,
                key_id=key_id,
                updated_at=float(now),
            )
        )
        return self._run(
            "replace_ciphertexts", lambda conn: conn.execute(stmt).rowcount == 1, write=True
        )
