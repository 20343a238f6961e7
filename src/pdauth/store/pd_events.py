"""PagerDuty's events per connection: the webhook subscription of each connection and the
deliveries received from PagerDuty (de-duplicated by ``X-Webhook-Id``).

``pd_subscriptions`` holds one row per connection: an unguessable ``key`` (the receiver URL's
last segment), PagerDuty's subscription id, the signing secret sealed (``secret_ct``), a
``state`` and the retry schedule of the keeper's reconciliation. ``pd_deliveries`` keeps the
id of every delivery accepted; recording one appends its pdauth event in the *same*
transaction, so a repeated delivery can never become a second event (the insert loses the
race and nothing is appended). :class:`PagerDutyEventStore` runs inside the
:class:`~pdauth.store.Store`'s own transactions (same engine, same error mapping and retries);
:class:`AsyncPagerDutyEventStore` is its coroutine form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from pdauth.store.aio import AsyncStore
from pdauth.store.base import error_message, page_limit
from pdauth.store.database import Store
from pdauth.store.records import NewEvent
from pdauth.store.schema import connections, metadata
from pdauth.store.snapshots import pd_deliveries_0003, pd_subscriptions_0003

__all__ = [
    "SUBSCRIPTION_STATES",
    "AsyncPagerDutyEventStore",
    "PagerDutyEventStore",
    "SubscriptionRow",
    "pd_deliveries",
    "pd_subscriptions",
]

T = TypeVar("T")

#: pending: to create; active; no_scope: the grant lacks the scope to create it; failed: the
#: last attempt failed (retried); needs_reauth: kept, but its connection needs re-consent;
#: disabled: PagerDuty disabled it after failed deliveries; deleting: a deletion is queued;
#: deleted: gone at PagerDuty (or never existed) after a disconnect.
SUBSCRIPTION_STATES: Final = (
    "pending",
    "active",
    "no_scope",
    "failed",
    "needs_reauth",
    "disabled",
    "deleting",
    "deleted",
)

pd_subscriptions = sa.Table("pd_subscriptions", metadata, *pd_subscriptions_0003())
pd_deliveries = sa.Table("pd_deliveries", metadata, *pd_deliveries_0003())

_s = pd_subscriptions.c
_d = pd_deliveries.c
_c = connections.c


@dataclass(frozen=True, kw_only=True)
class SubscriptionRow:
    """One row of ``pd_subscriptions`` (``secret_ct`` is ciphertext, kept out of ``repr``)."""

    connection_id: str
    key: str = field(repr=False)
    state: str
    pd_subscription_id: str | None
    secret_ct: str | None = field(repr=False)
    events: str
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float


def _row(row: sa.Row[Any]) -> SubscriptionRow:
    values = dict(row._mapping)
    for name in ("next_attempt_at", "created_at", "updated_at"):
        if values[name] is not None:
            values[name] = float(values[name])
    return SubscriptionRow(**values)


class PagerDutyEventStore:
    """The two tables' operations, run through ``store``'s transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        return self._store

    def _run(self, operation: str, work: Callable[[sa.Connection], T], *, write: bool) -> T:
        return self._store._run(operation, work, write=write)

    # -- subscriptions --------------------------------------------------------------------

    def get_subscription(self, connection_id: str) -> SubscriptionRow | None:
        stmt = sa.select(pd_subscriptions).where(_s.connection_id == connection_id)
        return self._run("get_subscription", lambda c: _first(c, stmt), write=False)

    def subscription_by_key(self, key: str) -> SubscriptionRow | None:
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            return None
        stmt = sa.select(pd_subscriptions).where(_s.key == key)
        return self._run("subscription_by_key", lambda c: _first(c, stmt), write=False)

    def save_subscription(self, row: SubscriptionRow) -> None:
        """Insert or replace the connection's row (all columns)."""
        values = {name: getattr(row, name) for name in pd_subscriptions.c.keys()}  # noqa: SIM118
        values["last_error"] = None if row.last_error is None else error_message(row.last_error)
        stmt = (
            self._store._insert(pd_subscriptions)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["connection_id"],
                set_={k: v for k, v in values.items() if k != "connection_id"},
            )
        )
        self._run("save_subscription", lambda c: c.execute(stmt), write=True)

    def claim_subscription(self, row: SubscriptionRow, seen: SubscriptionRow | None) -> bool:
        """Write ``row`` only if the stored row is still ``seen`` (None: there is none yet).

        The compare-and-set that lets one of several keepers (or API calls) work on a
        connection's subscription at a time: each read the row, only one write wins, and the
        others leave the work to it. True if this call's write won.
        """
        values = {name: getattr(row, name) for name in pd_subscriptions.c.keys()}  # noqa: SIM118
        values["last_error"] = None if row.last_error is None else error_message(row.last_error)
        stmt: Any
        if seen is None:
            stmt = (
                self._store._insert(pd_subscriptions)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["connection_id"])
                .returning(_s.connection_id)
            )
        else:
            due = seen.next_attempt_at
            stmt = (
                sa.update(pd_subscriptions)
                .where(
                    _s.connection_id == seen.connection_id,
                    _s.key == seen.key,
                    _s.state == seen.state,
                    _s.updated_at == seen.updated_at,
                    _s.next_attempt_at.is_(None) if due is None else _s.next_attempt_at == due,
                )
                .values(**{k: v for k, v in values.items() if k != "connection_id"})
                .returning(_s.connection_id)
            )
        # RETURNING, not rowcount: psycopg reports no rowcount for an INSERT … DO NOTHING.
        won = self._run(
            "claim_subscription", lambda c: c.execute(stmt).first() is not None, write=True
        )
        return bool(won)

    def update_subscription(
        self, connection_id: str, *, if_key: str | None = None, **values: Any
    ) -> bool:
        """Set ``values`` on the connection's row; with ``if_key``, only while the row still
        has that key (the work of a claim is not written over a newer one's row)."""
        if "last_error" in values and values["last_error"] is not None:
            values["last_error"] = error_message(values["last_error"])
        stmt = sa.update(pd_subscriptions).where(_s.connection_id == connection_id)
        if if_key is not None:
            stmt = stmt.where(_s.key == if_key)
        stmt = stmt.values(**values)
        return bool(
            self._run("update_subscription", lambda c: c.execute(stmt).rowcount, write=True)
        )

    def secrets_not_under(self, key_id: str, *, limit: int = 500) -> list[SubscriptionRow]:
        """Subscriptions whose sealed signing secret is not under key ``key_id`` (rotation)."""
        stmt = (
            sa.select(pd_subscriptions)
            .where(
                _s.secret_ct.is_not(None),
                sa.not_(_s.secret_ct.startswith(f"v1.{key_id}.", autoescape=True)),
            )
            .order_by(_s.connection_id)
            .limit(limit)
        )
        return self._run(
            "secrets_not_under", lambda c: [_row(r) for r in c.execute(stmt)], write=False
        )

    def replace_secret(self, connection_id: str, *, old: str, new: str) -> bool:
        """Swap one sealed secret for its re-sealed copy, only if it did not change meanwhile."""
        stmt = (
            sa.update(pd_subscriptions)
            .where(_s.connection_id == connection_id, _s.secret_ct == old)
            .values(secret_ct=new)
        )
        return bool(self._run("replace_secret", lambda c: c.execute(stmt).rowcount, write=True))

    def subscriptions_due(self, *, now: float, limit: int = 100) -> list[str]:
        """Active connections whose subscription needs work: none yet, a retry due, marked
        needs_reauth or deleted (reconnected since), or no_scope (its grant changed since)."""
        joined = connections.outerjoin(pd_subscriptions, _s.connection_id == _c.id)
        stmt = (
            sa.select(_c.id)
            .select_from(joined)
            .where(
                _c.status == "active",
                sa.or_(
                    _s.connection_id.is_(None),
                    sa.and_(
                        _s.state.in_(("pending", "failed")),
                        sa.or_(_s.next_attempt_at.is_(None), _s.next_attempt_at <= float(now)),
                    ),
                    _s.state == "needs_reauth",
                    # Deleted or refused for scope, then reconnected: only a connection row
                    # written after the subscription's (a disconnect deletes the subscription
                    # before it marks the connection revoked; in between it is not due).
                    sa.and_(_s.state.in_(("deleted", "no_scope")), _c.updated_at > _s.updated_at),
                ),
            )
            .order_by(_c.id)
            .limit(page_limit(limit))
        )
        return self._run(
            "subscriptions_due", lambda c: [r[0] for r in c.execute(stmt)], write=False
        )

    def mark_needs_reauth(self, *, now: float) -> int:
        """Mark active subscriptions of connections that need re-consent; returns how many."""
        stale = sa.select(_c.id).where(_c.status == "needs_reauth")
        stmt = (
            sa.update(pd_subscriptions)
            .where(_s.state == "active", _s.connection_id.in_(stale))
            .values(state="needs_reauth", updated_at=float(now))
        )
        return int(self._run("mark_needs_reauth", lambda c: c.execute(stmt).rowcount, write=True))

    # -- deliveries -----------------------------------------------------------------------

    def record_delivery(
        self, webhook_id: str, subscription: SubscriptionRow, event: NewEvent, now: float
    ) -> int | None:
        """Record delivery ``webhook_id`` and append ``event`` in one transaction; the event's
        id, or None when this delivery id was recorded before (nothing appended)."""
        insert = (
            self._store._insert(pd_deliveries)
            .values(
                webhook_id=webhook_id,
                subscription_key=subscription.key,
                connection_id=subscription.connection_id,
                received_at=float(now),
            )
            .on_conflict_do_nothing(index_elements=["webhook_id"])
            .returning(_d.webhook_id)
        )

        def work(conn: sa.Connection) -> int | None:
            if conn.execute(insert).first() is None:
                return None
            return self._store._append_event(conn, event, float(now))  # last statement

        return self._run("record_delivery", work, write=True)

    def purge_deliveries(self, *, before: float) -> int:
        """Forget delivery ids received before ``before`` (PagerDuty retries for minutes)."""
        stmt = sa.delete(pd_deliveries).where(_d.received_at < float(before))
        return int(self._run("purge_deliveries", lambda c: c.execute(stmt).rowcount, write=True))


def _first(conn: sa.Connection, stmt: sa.Select[Any]) -> SubscriptionRow | None:
    found = conn.execute(stmt).first()
    return None if found is None else _row(found)


class AsyncPagerDutyEventStore:
    """:class:`PagerDutyEventStore`'s methods as coroutines, run like the
    :class:`~pdauth.store.AsyncStore`'s own: behind its schema gate and within its worker-thread
    limit (sized to the connection pool), so a burst of deliveries cannot starve the rest."""

    def __init__(self, store: AsyncStore) -> None:
        self.sync = PagerDutyEventStore(store.store)
        self._store = store

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._store._call(fn, *args)

    async def get_subscription(self, connection_id: str) -> SubscriptionRow | None:
        return await self._call(self.sync.get_subscription, connection_id)

    async def subscription_by_key(self, key: str) -> SubscriptionRow | None:
        return await self._call(self.sync.subscription_by_key, key)

    async def save_subscription(self, row: SubscriptionRow) -> None:
        await self._call(self.sync.save_subscription, row)

    async def update_subscription(
        self, connection_id: str, *, if_key: str | None = None, **values: Any
    ) -> bool:
        return await self._call(
            functools.partial(self.sync.update_subscription, if_key=if_key, **values),
            connection_id,
        )

    async def claim_subscription(self, row: SubscriptionRow, seen: SubscriptionRow | None) -> bool:
        return await self._call(self.sync.claim_subscription, row, seen)

    async def subscriptions_due(self, *, now: float, limit: int = 100) -> list[str]:
        return await self._call(
            functools.partial(self.sync.subscriptions_due, now=now, limit=limit)
        )

    async def mark_needs_reauth(self, *, now: float) -> int:
        return await self._call(functools.partial(self.sync.mark_needs_reauth, now=now))

    async def record_delivery(
        self, webhook_id: str, subscription: SubscriptionRow, event: NewEvent, now: float
    ) -> int | None:
        return await self._call(self.sync.record_delivery, webhook_id, subscription, event, now)

    async def purge_deliveries(self, *, before: float) -> int:
        return await self._call(functools.partial(self.sync.purge_deliveries, before=before))
