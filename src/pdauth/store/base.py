"""The Store's plumbing: the engine, one-transaction runs with retries, row conversion, schema.

:class:`StoreBase` owns what every table's operations share: the engine (SQLite or PostgreSQL),
``_run`` (one short transaction, PostgreSQL deadlocks retried, every error a StoreError naming
the operation), the event append that must close a transaction, and the schema calls
(upgrade, revision, :meth:`StoreBase.ensure_schema`). The operations themselves live in
:mod:`~pdauth.store.connections`, :mod:`~pdauth.store.pending` and :mod:`~pdauth.store.events`,
and :class:`pdauth.store.Store` puts them together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self, TypeVar

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
from pdauth.store.records import ConnectionRow, EventRow, NewEvent, PendingRow
from pdauth.store.schema import connections, events, pending_authorizations

__all__ = [
    "DEFAULT_MAX_PENDING",
    "MAX_ERROR_MESSAGE",
    "MAX_PAGE",
    "StoreBase",
    "connection_row",
    "error_code",
    "error_message",
    "event_row",
    "page_limit",
    "pending_row",
]

T = TypeVar("T")

MAX_PAGE: Final = 1000
MAX_ERROR_MESSAGE: Final = 1000
DEFAULT_MAX_PENDING: Final = 20
# Held (transaction-scoped) by every PostgreSQL transaction that appends an event, as its
# last statement: ids then become visible in id order, so a reader following the cursor
# never skips an event that commits late with a smaller id.
_EVENTS_LOCK_KEY: Final = 0x7064_6175_7468_0002
_TRANSIENT_RETRIES: Final = 3

_e = events.c


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


def connection_row(row: sa.Row[Any]) -> ConnectionRow:
    return ConnectionRow(**_values(connections, row))


def pending_row(row: sa.Row[Any]) -> PendingRow:
    return PendingRow(**_values(pending_authorizations, row))


def event_row(row: sa.Row[Any]) -> EventRow:
    values = _values(events, row)
    values["data"] = MappingProxyType(json.loads(values["data"]))
    return EventRow(**values)


def page_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit


def error_code(code: str) -> str:
    if not isinstance(code, str) or not code or len(code) > 64:
        raise ValueError("error code must be a non-empty string of at most 64 characters")
    return code


def error_message(message: str) -> str:
    return message[:MAX_ERROR_MESSAGE]


class StoreBase:
    """The shared plumbing of :class:`pdauth.store.Store` (see the module docstring).

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
        return f"{type(self).__name__}(url={self.url!r})"

    def __enter__(self) -> Self:
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
