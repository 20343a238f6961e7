"""AsyncStore: the Store's methods as coroutines, each run in a worker thread.

The database layer is synchronous (SQLAlchemy Core on a thread-safe pool); async callers
(the TokenManager, the service) await these wrappers, which hand each call to
``anyio.to_thread.run_sync`` under a CapacityLimiter sized to the connection pool, so a
burst of requests queues in the event loop instead of exhausting the pool. The semantics,
arguments and errors are exactly those of :class:`pdauth.store.Store`: each coroutine is
*derived* from the Store method of the same name (:func:`_threaded`), so its signature, its
types and its documentation are written once, in the Store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from pdauth.store.database import Store

__all__ = ["AsyncStore"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_THREADS = 8

_AsyncMethod = Callable[Concatenate["AsyncStore", P], Coroutine[Any, Any, T]]


def _threaded(
    method: Callable[Concatenate[Store, P], T], *, gated: bool = True
) -> _AsyncMethod[P, T]:
    """The coroutine form of a Store method: same name, parameters, types and docstring.

    It calls the wrapped Store's method of that name in a worker thread; ``gated`` ones first
    pass the schema gate (see :meth:`AsyncStore.require_schema`).
    """
    name = method.__name__

    @functools.wraps(method)
    async def call(self: AsyncStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, T] = getattr(self.store, name)
        if gated:
            return await self._call(bound, *args, **kwargs)
        return await self._thread(bound, *args, **kwargs)

    return call


class AsyncStore:
    """Async facade over a :class:`Store`; ``max_threads`` bounds concurrent database calls.

    Test doubles (and instrumented stores) subclass it and override the coroutines they need.
    """

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
        await self.dispose()

    # -- schema and pool (never gated) ------------------------------------------------------

    dispose = _threaded(Store.dispose, gated=False)
    upgrade = _threaded(Store.upgrade, gated=False)
    current_revision = _threaded(Store.current_revision, gated=False)
    is_up_to_date = _threaded(Store.is_up_to_date, gated=False)
    ensure_schema = _threaded(Store.ensure_schema, gated=False)

    # -- connections ----------------------------------------------------------------------

    upsert_connection = _threaded(Store.upsert_connection)
    get_connection = _threaded(Store.get_connection)
    list_connections = _threaded(Store.list_connections)
    count_by_status = _threaded(Store.count_by_status)
    delete_connection = _threaded(Store.delete_connection)
    try_acquire_lease = _threaded(Store.try_acquire_lease)
    release_lease = _threaded(Store.release_lease)
    store_tokens = _threaded(Store.store_tokens)
    mark_needs_reauth = _threaded(Store.mark_needs_reauth)
    mark_revoked = _threaded(Store.mark_revoked)
    record_error = _threaded(Store.record_error)
    touch_used = _threaded(Store.touch_used)
    due_for_refresh = _threaded(Store.due_for_refresh)
    rows_needing_reencryption = _threaded(Store.rows_needing_reencryption)
    replace_ciphertexts = _threaded(Store.replace_ciphertexts)
    mark_missing_scopes = _threaded(Store.mark_missing_scopes)

    # -- pending authorizations -----------------------------------------------------------

    create_pending = _threaded(Store.create_pending)
    consume_pending = _threaded(Store.consume_pending)
    purge_expired_pending = _threaded(Store.purge_expired_pending)

    # -- events ---------------------------------------------------------------------------

    add_event = _threaded(Store.add_event)
    list_events = _threaded(Store.list_events)
    recent_connection_events = _threaded(Store.recent_connection_events)
    due_events = _threaded(Store.due_events)
    claim_due_events = _threaded(Store.claim_due_events)
    mark_delivered = _threaded(Store.mark_delivered)
    schedule_retry = _threaded(Store.schedule_retry)

    # -- admin sessions -------------------------------------------------------------------

    create_admin_session = _threaded(Store.create_admin_session)
    check_admin_session = _threaded(Store.check_admin_session)
    delete_admin_session = _threaded(Store.delete_admin_session)
    delete_admin_sessions = _threaded(Store.delete_admin_sessions)
