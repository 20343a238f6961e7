"""The event log and outbox: append, read by cursor, claim due deliveries, record outcomes.

Events are read in id order (the cursor); on PostgreSQL every append takes a transaction-scoped
lock as its last statement so ids become visible in order. Outbox events carry
``next_attempt_at``; workers claim due ones by pushing it forward in the same statement.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdauth.store.base import StoreBase, error_message, event_row, page_limit
from pdauth.store.records import EventRow, NewEvent
from pdauth.store.schema import events

__all__ = ["EventLog"]

_e = events.c


class EventLog(StoreBase):
    """The ``events`` table's operations (part of :class:`pdauth.store.Store`)."""

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
        stmt = sa.select(events).where(_e.id > after_id).order_by(_e.id).limit(page_limit(limit))
        if owner is not None:
            stmt = stmt.where(_e.owner == owner)
        if type is not None:
            stmt = stmt.where(_e.type == type)
        return self._run(
            "list_events", lambda conn: [event_row(r) for r in conn.execute(stmt)], write=False
        )

    def recent_connection_events(
        self, connection_id: str, *, type_prefix: str, limit: int = 10
    ) -> list[EventRow]:
        """The newest events of one connection whose type starts with ``type_prefix``, newest
        first (the connection page's live list of PagerDuty incidents)."""
        stmt = (
            sa.select(events)
            .where(
                _e.connection_id == connection_id,
                _e.type.startswith(type_prefix, autoescape=True),
            )
            .order_by(_e.id.desc())
            .limit(page_limit(limit))
        )
        return self._run(
            "recent_connection_events",
            lambda conn: [event_row(r) for r in conn.execute(stmt)],
            write=False,
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
            .limit(page_limit(limit))
        )
        return self._run(
            "due_events", lambda conn: [event_row(r) for r in conn.execute(stmt)], write=False
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
            .limit(page_limit(limit))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers
        )
        stmt = (
            sa.update(events)
            .where(_e.id.in_(due))
            .values(next_attempt_at=now + float(hold_for))
            .returning(*events.c)
        )

        def work(conn: sa.Connection) -> list[EventRow]:
            return sorted((event_row(r) for r in conn.execute(stmt)), key=lambda ev: ev.id)

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
                last_error=error_message(error),
            )
        )
        self._run("schedule_retry", lambda conn: conn.execute(stmt), write=True)
