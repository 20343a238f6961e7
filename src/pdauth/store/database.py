"""The Store: every read and write of connections, pending authorizations and events.

One synchronous class over SQLAlchemy Core, identical on SQLite and PostgreSQL. Each method
is one short transaction; every change that spans several statements (a token write plus its
audit event, a pending row plus eviction of the oldest) commits or fails as a whole.
Concurrency never relies on a transaction held open across network calls: the refresh lease
is one compare-and-set UPDATE, token writes are fenced by the lease owner and
``token_version``, and a pending authorization is consumed by one ``DELETE … RETURNING``, so
of two racing callers exactly one wins. The store never reads the clock; callers pass
``now`` from their injected :class:`pdauth.clock.Clock`. See ARCHITECTURE.md, "Refresh".
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pdauth.errors import ConfigurationError
from pdauth.store import migrate
from pdauth.store.engine import (
    WRITE_OPTION,
    create_store_engine,
    is_transient,
    normalize_url,
    store_errors,
)
from pdauth.store.records import (
    CONNECTION_STATUSES,
    ConnectionRow,
    EventRow,
    NewConnection,
    NewEvent,
    NewPending,
    PendingRow,
)
from pdauth.store.schema import connections, events, pending_authorizations

__all__ = ["Store"]

T = TypeVar("T")

CONNECTION_ID_PREFIX: Final = "pdc_"
MAX_PAGE: Final = 1000
MAX_ERROR_MESSAGE: Final = 1000
DEFAULT_MAX_PENDING: Final = 20
# Held (transaction-scoped) by every PostgreSQL transaction that appends an event, as its
# last statement: ids then become visible in id order, so a reader following the cursor
# never skips an event that commits late with a smaller id.
_EVENTS_LOCK_KEY: Final = 0x7064_6175_7468_0002
_TRANSIENT_RETRIES: Final = 3

_c = connections.c
_p = pending_authorizations.c
_e = events.c


def new_connection_id() -> str:
    """An unguessable connection id (128 random bits)."""
    return CONNECTION_ID_PREFIX + secrets.token_urlsafe(16)


def _time_columns(table: sa.Table) -> frozenset[str]:
    return frozenset(col.name for col in table.c if isinstance(col.type, sa.Double))


_TIME_COLUMNS: Final = {
    table.name: _time_columns(table) for table in (connections, pending_authorizations, events)
}


def _values(table: sa.Table, row: sa.Row[Any]) -> dict[str, Any]:
    # SQLite's RETURNING hands back integral REALs as ints (1.0 -> 1); rows promise floats.
    values = dict(row._mapping)
    for name in _TIME_COLUMNS[table.name]:
        if values[name] is not None:
            values[name] = float(values[name])
    return values


def _connection(row: sa.Row[Any]) -> ConnectionRow:
    return ConnectionRow(**_values(connections, row))


def _pending(row: sa.Row[Any]) -> PendingRow:
    return PendingRow(**_values(pending_authorizations, row))


def _event(row: sa.Row[Any]) -> EventRow:
    values = _values(events, row)
    values["data"] = MappingProxyType(json.loads(values["data"]))
    return EventRow(**values)


def _page(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit


def _error_code(code: str) -> str:
    if not isinstance(code, str) or not code or len(code) > 64:
        raise ValueError("error code must be a non-empty string of at most 64 characters")
    return code


def _error_message(message: str) -> str:
    return message[:MAX_ERROR_MESSAGE]


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


class Store:
    """pdauth's database: connections, pending authorizations and the event log.

    ``url`` is ``sqlite:///path.db`` (the default backend) or ``postgresql+psycopg://…``.
    ``Store.url`` is the URL with any password masked. Nothing touches the database until
    the first call; call :meth:`upgrade` once (or ``pdauth db upgrade``) before use.
    Every database failure surfaces as :class:`pdauth.errors.StoreError`; invalid arguments
    as ``ValueError``; an unusable URL as :class:`pdauth.errors.ConfigurationError`.
    """

    url: str
    dialect: str

    def __init__(
        self, url: str, *, echo: bool = False, max_pending_per_owner: int = DEFAULT_MAX_PENDING
    ) -> None:
        if max_pending_per_owner < 1:
            raise ValueError("max_pending_per_owner must be at least 1")
        parsed = normalize_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        self._password = parsed.password if isinstance(parsed.password, str) else None
        self._max_pending = max_pending_per_owner
        self._engine = create_store_engine(parsed, echo=echo)

    def __repr__(self) -> str:
        return f"Store(url={self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dispose()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for health checks and tests; queries belong in this class)."""
        return self._engine

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    # -- plumbing -------------------------------------------------------------------------

    def _run(self, operation: str, work: Callable[[sa.Connection], T], *, write: bool) -> T:
        """Run ``work`` in one transaction; retry PostgreSQL deadlocks; map errors."""
        attempt = 0
        with store_errors(operation, self._password, self.url):
            while True:
                attempt += 1
                try:
                    with self._engine.connect() as conn:
                        if write:
                            conn.execution_options(**{WRITE_OPTION: True})
                        with conn.begin():
                            return work(conn)
                except exc.DBAPIError as error:
                    if attempt < _TRANSIENT_RETRIES and is_transient(error):
                        continue
                    raise

    def _insert(self, table: sa.Table) -> Any:
        # Both dialect inserts offer the same on_conflict_do_update(); the generic one does not.
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    def _append_event(
        self,
        conn: sa.Connection,
        ev: NewEvent,
        now: float,
        *,
        connection_id: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Append ``ev``; must be the last statement of its transaction (see _EVENTS_LOCK_KEY)."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENTS_LOCK_KEY})
        stmt = (
            sa.insert(events)
            .values(
                type=ev.type,
                connection_id=connection_id if connection_id is not None else ev.connection_id,
                owner=owner if owner is not None else ev.owner,
                data=ev.data_json(),
                created_at=now,
                delivered_at=None,
                attempts=0,
                next_attempt_at=now if ev.outbox else None,
                last_error=None,
            )
            .returning(_e.id)
        )
        return int(conn.execute(stmt).scalar_one())

    # -- schema ---------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Migrate the database to the newest schema (Alembic ``upgrade head``)."""
        with store_errors("upgrade", self._password, self.url):
            migrate.run_upgrade(self._engine)

    def current_revision(self) -> str | None:
        """The Alembic revision of the database; None if it was never migrated."""
        return self._run("current_revision", migrate.current_revision, write=False)

    def is_up_to_date(self) -> bool:
        return self.current_revision() == migrate.head_revision()

    def ensure_schema(self, *, upgrade: bool = False) -> None:
        """Check (one query) that the schema is current; with ``upgrade`` migrate it if not.

        An unmigrated or older database raises :class:`ConfigurationError` naming
        ``pdauth db upgrade`` instead of a "no such table" from the first query; a database
        migrated by a newer pdauth is refused either way. Concurrent upgraders are safe
        (see :func:`pdauth.store.migrate.run_upgrade`).
        """
        current = self.current_revision()
        if current == migrate.head_revision():
            return
        if current is not None and not migrate.is_known_revision(current):
            raise ConfigurationError(
                f"the database at {self.url} was migrated by a newer pdauth "
                f"(revision {current}); upgrade pdauth before using it"
            )
        if upgrade:
            self.upgrade()
            return
        state = "has no pdauth schema" if current is None else f"is at old revision {current}"
        raise ConfigurationError(
            f"the database at {self.url} {state}: run `pdauth db upgrade` "
            "(or open the Connector with migrate=True)"
        )

    # -- connections ----------------------------------------------------------------------

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
            row = _connection(conn.execute(stmt).one())
            if event is not None:
                self._append_event(conn, event, now, connection_id=row.id, owner=row.owner)
            return row

        return self._run("upsert_connection", work, write=True)

    def get_connection(self, connection_id: str) -> ConnectionRow | None:
        stmt = sa.select(connections).where(_c.id == connection_id)

        def work(conn: sa.Connection) -> ConnectionRow | None:
            row = conn.execute(stmt).first()
            return None if row is None else _connection(row)

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
        stmt = sa.select(connections).order_by(_c.id).limit(_page(limit))
        if owner is not None:
            stmt = stmt.where(_c.owner == owner)
        if status is not None:
            if status not in CONNECTION_STATUSES:
                raise ValueError(f"status must be one of {', '.join(CONNECTION_STATUSES)}")
            stmt = stmt.where(_c.status == status)
        if after_id is not None:
            stmt = stmt.where(_c.id > after_id)
        return self._run(
            "list_connections",
            lambda conn: [_connection(r) for r in conn.execute(stmt)],
            write=False,
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
            return None if row is None else _connection(row)

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
            stored = _connection(row)
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
                "last_error_code": _error_code(code),
                "last_error_message": _error_message(message),
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
                last_error_code=_error_code(code),
                last_error_message=_error_message(message),
                last_error_at=now,
                updated_at=now,
            )
        )
        self._run("record_error", lambda conn: conn.execute(stmt), write=True)

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
            .limit(_page(limit))
        )
        return self._run(
            "due_for_refresh",
            lambda conn: [_connection(r) for r in conn.execute(stmt)],
            write=False,
        )

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
            .limit(_page(limit))
        )
        if after_id is not None:
            stmt = stmt.where(_c.id > after_id)
        return self._run(
            "rows_needing_reencryption",
            lambda conn: [_connection(r) for r in conn.execute(stmt)],
            write=False,
        )

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

    # -- pending authorizations -----------------------------------------------------------

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
            return None if row is None else _pending(row)

        return self._run("consume_pending", work, write=True)

    def purge_expired_pending(self, now: float) -> int:
        """Delete pending authorizations expired at ``now``; returns how many."""
        stmt = sa.delete(pending_authorizations).where(_p.expires_at <= float(now))
        return self._run(
            "purge_expired_pending", lambda conn: int(conn.execute(stmt).rowcount), write=True
        )

    # -- events ---------------------------------------------------------------------------

    def add_event(self, ev: NewEvent, now: float) -> int:
        """Append an event; returns its id (the cursor)."""
        return self._run(
            "add_event", lambda conn: self._append_event(conn, ev, float(now)), write=True
        )

    def list_events(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        owner: str | None = None,
        type: str | None = None,
    ) -> list[EventRow]:
        """Events with id > ``after_id``, oldest first; pass the last id back to page on."""
        stmt = sa.select(events).where(_e.id > after_id).order_by(_e.id).limit(_page(limit))
        if owner is not None:
            stmt = stmt.where(_e.owner == owner)
        if type is not None:
            stmt = stmt.where(_e.type == type)
        return self._run(
            "list_events", lambda conn: [_event(r) for r in conn.execute(stmt)], write=False
        )

    def due_events(self, *, now: float, limit: int) -> list[EventRow]:
        """Undelivered outbox events whose next attempt is due, oldest first."""
        stmt = (
            sa.select(events)
            .where(
                _e.delivered_at.is_(None),
                _e.next_attempt_at.is_not(None),
                _e.next_attempt_at <= float(now),
            )
            .order_by(_e.id)
            .limit(_page(limit))
        )
        return self._run(
            "due_events", lambda conn: [_event(r) for r in conn.execute(stmt)], write=False
        )

    def claim_due_events(self, *, now: float, limit: int, hold_for: float) -> list[EventRow]:
        """Like :meth:`due_events`, but claims them: pushes ``next_attempt_at`` to
        ``now + hold_for`` in the same statement, so workers in other processes skip them.

        A worker that dies mid-delivery releases its claim by time. Deliver, then call
        :meth:`mark_delivered` or :meth:`schedule_retry`.
        """
        if not hold_for > 0:
            raise ValueError("hold_for must be positive")
        now = float(now)
        due = (
            sa.select(_e.id)
            .where(
                _e.delivered_at.is_(None),
                _e.next_attempt_at.is_not(None),
                _e.next_attempt_at <= now,
            )
            .order_by(_e.id)
            .limit(_page(limit))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers
        )
        stmt = (
            sa.update(events)
            .where(_e.id.in_(due))
            .values(next_attempt_at=now + float(hold_for))
            .returning(*events.c)
        )

        def work(conn: sa.Connection) -> list[EventRow]:
            return sorted((_event(r) for r in conn.execute(stmt)), key=lambda ev: ev.id)

        return self._run("claim_due_events", work, write=True)

    def mark_delivered(self, event_id: int, now: float) -> None:
        """Record delivery; a second call keeps the first time."""
        stmt = (
            sa.update(events)
            .where(_e.id == event_id, _e.delivered_at.is_(None))
            .values(delivered_at=float(now), next_attempt_at=None)
        )
        self._run("mark_delivered", lambda conn: conn.execute(stmt), write=True)

    def schedule_retry(self, event_id: int, *, next_attempt_at: float | None, error: str) -> None:
        """Record a failed delivery attempt; ``next_attempt_at=None`` gives up on the event."""
        stmt = (
            sa.update(events)
            .where(_e.id == event_id, _e.delivered_at.is_(None))
            .values(
                attempts=_e.attempts + 1,
                next_attempt_at=None if next_attempt_at is None else float(next_attempt_at),
                last_error=_error_message(error),
            )
        )
        self._run("schedule_retry", lambda conn: conn.execute(stmt), write=True)
