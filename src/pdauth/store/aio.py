"""AsyncStore: the Store's methods as coroutines, each run in a worker thread.

The database layer is synchronous (SQLAlchemy Core on a thread-safe pool); async callers
(the TokenManager, the service) await these wrappers, which hand each call to
``anyio.to_thread.run_sync`` under a CapacityLimiter sized to the connection pool, so a
burst of requests queues in the event loop instead of exhausting the pool. The semantics,
arguments and errors are exactly those of :class:`pdauth.store.Store`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

from pdauth.store.database import Store
from pdauth.store.records import (
    ConnectionRow,
    EventRow,
    NewConnection,
    NewEvent,
    NewPending,
    PendingRow,
)

__all__ = ["AsyncStore"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_THREADS = 8


class AsyncStore:
    """Async facade over a :class:`Store`; ``max_threads`` bounds concurrent database calls."""

    def __init__(self, store: Store, *, max_threads: int = DEFAULT_MAX_THREADS) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._store = store
        self._max_threads = max_threads
        self._limiter: anyio.CapacityLimiter | None = None
        # The schema gate (see require_schema): None = no check; else "upgrade if behind".
        self._gate_upgrade: bool | None = None
        self._gate_passed = False
        self._gate_lock: anyio.Lock | None = None

    @classmethod
    def open(
        cls, url: str, *, echo: bool = False, max_threads: int = DEFAULT_MAX_THREADS
    ) -> AsyncStore:
        """Create the underlying Store from a URL (see :class:`Store`)."""
        return cls(Store(url, echo=echo), max_threads=max_threads)

    def __repr__(self) -> str:
        return f"AsyncStore({self._store!r})"

    @property
    def store(self) -> Store:
        return self._store

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def dialect(self) -> str:
        return self._store.dialect

    def require_schema(self, *, upgrade: bool = False) -> None:
        """Check the schema once, before the first data call (:meth:`Store.ensure_schema`).

        Schema calls (``upgrade``, ``current_revision``, ``is_up_to_date``) and ``aclose``
        are never gated, so a readiness check still reports a database that is behind.
        """
        if self._gate_upgrade is None or upgrade:
            self._gate_upgrade = upgrade
            self._gate_passed = False

    async def ensure_schema(self, *, upgrade: bool = False) -> None:
        """:meth:`Store.ensure_schema` in a worker thread."""
        await self._thread(self._store.ensure_schema, upgrade=upgrade)

    async def check_schema(self) -> None:
        """Pass the schema gate now (if :meth:`require_schema` set one); idempotent."""
        if self._gate_upgrade is not None and not self._gate_passed:
            await self._pass_gate()

    async def _pass_gate(self) -> None:
        if self._gate_lock is None:
            self._gate_lock = anyio.Lock()
        async with self._gate_lock:  # one check per store, however many first callers
            if not self._gate_passed:
                await self.ensure_schema(upgrade=bool(self._gate_upgrade))
                self._gate_passed = True

    async def _call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        await self.check_schema()
        return await self._thread(fn, *args, **kwargs)

    async def _thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._limiter is None:
            # Created on first use, inside the event loop that will use it.
            self._limiter = anyio.CapacityLimiter(self._max_threads)
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    async def aclose(self) -> None:
        """Dispose of the pool (in a thread: closing connections may block)."""
        await self._thread(self._store.dispose)

    async def dispose(self) -> None:
        await self.aclose()

    # -- schema ---------------------------------------------------------------------------

    async def upgrade(self) -> None:
        await self._thread(self._store.upgrade)

    async def current_revision(self) -> str | None:
        return await self._thread(self._store.current_revision)

    async def is_up_to_date(self) -> bool:
        return await self._thread(self._store.is_up_to_date)

    # -- connections ----------------------------------------------------------------------

    async def upsert_connection(
        self, rec: NewConnection, now: float, event: NewEvent | None = None
    ) -> ConnectionRow:
        return await self._call(self._store.upsert_connection, rec, now, event)

    async def get_connection(self, connection_id: str) -> ConnectionRow | None:
        return await self._call(self._store.get_connection, connection_id)

    async def list_connections(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[ConnectionRow]:
        return await self._call(
            self._store.list_connections,
            owner=owner,
            status=status,
            limit=limit,
            after_id=after_id,
        )

    async def count_by_status(self) -> dict[str, int]:
        return await self._call(self._store.count_by_status)

    async def delete_connection(self, connection_id: str) -> bool:
        return await self._call(self._store.delete_connection, connection_id)

    async def try_acquire_lease(
        self, connection_id: str, lease_owner: str, now: float, ttl: float
    ) -> ConnectionRow | None:
        return await self._call(self._store.try_acquire_lease, connection_id, lease_owner, now, ttl)

    async def release_lease(self, connection_id: str, lease_owner: str) -> None:
        await self._call(self._store.release_lease, connection_id, lease_owner)

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
        return await self._call(
            self._store.store_tokens,
            connection_id,
            lease_owner=lease_owner,
            expected_version=expected_version,
            access_token_ct=access_token_ct,
            refresh_token_ct=refresh_token_ct,
            key_id=key_id,
            access_expires_at=access_expires_at,
            refresh_expires_at=refresh_expires_at,
            now=now,
            event=event,
        )

    async def mark_needs_reauth(
        self,
        connection_id: str,
        *,
        code: str,
        message: str,
        now: float,
        expected_version: int | None = None,
        event: NewEvent | None = None,
    ) -> bool:
        return await self._call(
            self._store.mark_needs_reauth,
            connection_id,
            code=code,
            message=message,
            now=now,
            expected_version=expected_version,
            event=event,
        )

    async def mark_revoked(
        self,
        connection_id: str,
        *,
        now: float,
        expected_version: int | None = None,
        event: NewEvent | None = None,
    ) -> bool:
        return await self._call(
            self._store.mark_revoked,
            connection_id,
            now=now,
            expected_version=expected_version,
            event=event,
        )

    async def record_error(
        self, connection_id: str, *, code: str, message: str, now: float
    ) -> None:
        await self._call(
            self._store.record_error, connection_id, code=code, message=message, now=now
        )

    async def touch_used(
        self, connection_id: str, now: float, *, min_interval: float = 60.0
    ) -> None:
        await self._call(self._store.touch_used, connection_id, now, min_interval=min_interval)

    async def due_for_refresh(
        self, *, now: float, refresh_expires_before: float, limit: int
    ) -> list[ConnectionRow]:
        return await self._call(
            self._store.due_for_refresh,
            now=now,
            refresh_expires_before=refresh_expires_before,
            limit=limit,
        )

    async def rows_needing_reencryption(
        self, *, primary_key_id: str, limit: int, after_id: str | None = None
    ) -> list[ConnectionRow]:
        return await self._call(
            self._store.rows_needing_reencryption,
            primary_key_id=primary_key_id,
            limit=limit,
            after_id=after_id,
        )

    async def replace_ciphertexts(
        self,
        connection_id: str,
        *,
        expected_version: int,
        access_token_ct: str | None,
        refresh_token_ct: str | None,
        key_id: str,
        now: float,
    ) -> bool:
        return await self._call(
            self._store.replace_ciphertexts,
            connection_id,
            expected_version=expected_version,
            access_token_ct=access_token_ct,
            refresh_token_ct=refresh_token_ct,
            key_id=key_id,
            now=now,
        )

    # -- pending authorizations -----------------------------------------------------------

    async def create_pending(self, rec: NewPending, now: float) -> None:
        await self._call(self._store.create_pending, rec, now)

    async def consume_pending(self, state_hash: str) -> PendingRow | None:
        return await self._call(self._store.consume_pending, state_hash)

    async def purge_expired_pending(self, now: float) -> int:
        return await self._call(self._store.purge_expired_pending, now)

    # -- events ---------------------------------------------------------------------------

    async def add_event(self, ev: NewEvent, now: float) -> int:
        return await self._call(self._store.add_event, ev, now)

    async def list_events(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        owner: str | None = None,
        type: str | None = None,
    ) -> list[EventRow]:
        return await self._call(
            self._store.list_events, after_id=after_id, limit=limit, owner=owner, type=type
        )

    async def due_events(self, *, now: float, limit: int) -> list[EventRow]:
        return await self._call(self._store.due_events, now=now, limit=limit)

    async def claim_due_events(self, *, now: float, limit: int, hold_for: float) -> list[EventRow]:
        return await self._call(
            self._store.claim_due_events, now=now, limit=limit, hold_for=hold_for
        )

    async def mark_delivered(self, event_id: int, now: float) -> None:
        await self._call(self._store.mark_delivered, event_id, now)

    async def schedule_retry(
        self, event_id: int, *, next_attempt_at: float | None, error: str
    ) -> None:
        await self._call(
            self._store.schedule_retry, event_id, next_attempt_at=next_attempt_at, error=error
        )
