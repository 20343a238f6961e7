"""pdauth's database layer: connections, pending authorizations and the event log.

SQLAlchemy 2 Core over SQLite (default, ``sqlite:///./pdauth.db``) or PostgreSQL via psycopg 3
(``postgresql+psycopg://…``), with Alembic migrations shipped inside the package. Only
ciphertext is ever written for tokens and PKCE verifiers. :class:`Store` is synchronous;
:class:`AsyncStore` runs the same methods in worker threads for async callers.
"""

from __future__ import annotations

from pdauth.store.aio import AsyncStore
from pdauth.store.database import Store
from pdauth.store.pd_events import AsyncPagerDutyEventStore, PagerDutyEventStore, SubscriptionRow
from pdauth.store.records import (
    ConnectionRow,
    EventRow,
    NewConnection,
    NewEvent,
    NewPending,
    PendingRow,
)

__all__ = [
    "AsyncPagerDutyEventStore",
    "AsyncStore",
    "ConnectionRow",
    "EventRow",
    "NewConnection",
    "NewEvent",
    "NewPending",
    "PagerDutyEventStore",
    "PendingRow",
    "Store",
    "SubscriptionRow",
    "upgrade",
]


def upgrade(url: str) -> None:
    """Migrate the database at ``url`` to the newest schema (what ``pdauth db upgrade`` runs)."""
    store = Store(url)
    try:
        store.upgrade()
    finally:
        store.dispose()
