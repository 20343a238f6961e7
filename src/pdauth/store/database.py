"""The Store: every read and write of connections, pending authorizations and events.

One synchronous class over SQLAlchemy Core, identical on SQLite and PostgreSQL. Each method
is one short transaction; every change that spans several statements (a token write plus its
audit event, a pending row plus eviction of the oldest) commits or fails as a whole.
Concurrency never relies on a transaction held open across network calls: the refresh lease
is one compare-and-set UPDATE, token writes are fenced by the lease owner and
``token_version``, and a pending authorization is consumed by one ``DELETE … RETURNING``, so
of two racing callers exactly one wins. The store never reads the clock; callers pass
``now`` from their injected :class:`pdauth.clock.Clock`. See docs/ARCHITECTURE.md, "Refresh".
"""

from __future__ import annotations

from pdauth.store.admin_sessions import AdminSessionTable
from pdauth.store.connections import ConnectionsTable, new_connection_id
from pdauth.store.events import EventLog
from pdauth.store.pending import PendingTable

__all__ = ["Store", "new_connection_id"]


class Store(ConnectionsTable, PendingTable, EventLog, AdminSessionTable):
    """pdauth's database: connections, pending authorizations and the event log.

    ``url`` is ``sqlite:///path.db`` (the default backend) or ``postgresql+psycopg://…``.
    ``Store.url`` is the URL with any password masked. Nothing touches the database until
    the first call; call :meth:`upgrade` once (or ``pdauth db upgrade``) before use.
    Every database failure surfaces as :class:`pdauth.errors.StoreError`; invalid arguments
    as ``ValueError``; an unusable URL as :class:`pdauth.errors.ConfigurationError`.
    The operations live with their table (:mod:`~pdauth.store.connections`,
    :mod:`~pdauth.store.pending`, :mod:`~pdauth.store.events`,
    :mod:`~pdauth.store.admin_sessions`); the plumbing in
    :mod:`~pdauth.store.base`.
    """
