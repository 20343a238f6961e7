"""``SyncConnector``: the :class:`~pdauth.connections.Connector` for blocking code (Django,
Flask, scripts), without a second copy of its logic.

One :class:`Connector` lives on an event loop in a background *daemon* thread (an anyio
blocking portal) and every method forwards there, so the connect flow, the token refresh
under a row lease, storage and revocation are exactly the async Connector's. Clients it hands
out (:meth:`SyncConnector.client`) are :class:`~pdauth.client.SyncPagerDutyClient` objects
that run on the same loop and share the Connector's HTTP pool and token source. Closing the
SyncConnector (``with`` block or :meth:`close`) closes the Connector and stops the thread; a
SyncConnector that is never closed does not keep the interpreter alive (the thread is a
daemon, and an exit hook closes the Connector), and a ``ResourceWarning`` says it was not
closed. Safe to call from several threads (a web server's worker threads).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from anyio.from_thread import BlockingPortal

from pdauth._portal import BlockingTwin, DaemonPortal
from pdauth.client import PagerDutyClient, SyncPagerDutyClient
from pdauth.config import Settings
from pdauth.connections import Connection, Connector
from pdauth.subscriptions import PagerDutyEventHook

__all__ = ["SyncConnector"]

T = TypeVar("T")
P = ParamSpec("P")


class _PortalClient(SyncPagerDutyClient):
    """A SyncPagerDutyClient on the SyncConnector's loop (closing it leaves the loop running)."""

    def __init__(self, portal: BlockingPortal, client: PagerDutyClient) -> None:
        # Deliberately not calling super().__init__: that would start a second loop, and the
        # connection's client must live on the loop that owns the Connector's pool and tokens.
        self._portal = portal
        self._client = client
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._portal.call(self._client.aclose)


class _Blocking(Generic[P, T]):
    """A SyncConnector method that runs the Connector's coroutine method of the same name on
    the loop and returns its result: same parameters (typed through ``P``), same docstring.

    Written once here instead of a forwarding method per operation, so a new Connector
    operation is one line in :class:`SyncConnector` and can never drift from its signature
    (a test checks that every public coroutine method of the Connector has its twin).
    """

    def __init__(self, method: Callable[Concatenate[Connector, P], Awaitable[T]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__
        # help() and inspect show the Connector's parameters without its ``self``; computed
        # once here, not on every attribute access.
        signature = inspect.signature(method)
        self._signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, instance: SyncConnector, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, instance: SyncConnector | None, owner: type[Any]) -> Self | Callable[P, T]:
        if instance is None:
            return self
        method = self._method

        @functools.wraps(method)
        def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
            return instance.call(lambda: method(instance.connector, *args, **kwargs))

        blocking.__signature__ = self._signature  # type: ignore[attr-defined]
        return blocking


class SyncConnector(BlockingTwin):
    """Blocking twin of :class:`~pdauth.connections.Connector`: same constructor, same methods.

    Use it as a context manager or call :meth:`close` (it owns a thread; closing closes the
    Connector, its store and HTTP pool). Keyword arguments
    go to :class:`Connector` unchanged (``migrate=``, ``transport=``, ``store=``, ``clock=``,
    …); the database schema is checked (or, with ``migrate=True``, migrated) at construction.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._loop = DaemonPortal("SyncConnector", "pdauth-sync-connector")
        self._connector: Connector = self._loop.build(self, _build, settings, kwargs)
        self._closed = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **kwargs: Any) -> Self:
        """A SyncConnector configured from ``PDAUTH_*`` variables (see :class:`Settings`)."""
        return cls(Settings.from_env(env), **kwargs)

    def __repr__(self) -> str:
        return f"SyncConnector(closed={self._closed})"

    @property
    def settings(self) -> Settings:
        return self._connector.settings

    @property
    def connector(self) -> Connector:
        """The async Connector underneath (for :meth:`call`; it lives on another thread)."""
        return self._connector

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the Connector's loop and return its result.

        For async work this class does not wrap, e.g. a :class:`~pdauth.keeper.Keeper` pass.
        """
        if self._closed:
            raise RuntimeError("the SyncConnector is closed")
        if not self._loop.thread.is_alive():
            # After os.fork() the child has no copy of the loop's thread: waiting on it would
            # hang forever (e.g. gunicorn --preload). Create the SyncConnector in each worker.
            raise RuntimeError(
                "the SyncConnector's event loop is gone (created before a fork?); "
                "create it in each worker process"
            )
        return self._loop.portal.call(func, *args)

    # -- the Connector's operations: each runs the Connector's method of the same name ------

    begin = _Blocking(Connector.begin)
    complete = _Blocking(Connector.complete)
    complete_with_return_to = _Blocking(Connector.complete_with_return_to)
    connect_app = _Blocking(Connector.connect_app)
    access_token = _Blocking(Connector.access_token)
    get = _Blocking(Connector.get)
    connections = _Blocking(Connector.connections)
    disconnect = _Blocking(Connector.disconnect)
    ensure_subscription = _Blocking(Connector.ensure_subscription)
    refresh_due = _Blocking(Connector.refresh_due)

    def client(self, connection: str | Connection, **options: Any) -> SyncPagerDutyClient:
        """A blocking REST client for one connection (a context manager); see
        :meth:`Connector.client`. It runs on this SyncConnector's loop: close it before
        closing the SyncConnector."""
        client = self.call(lambda: self._connector.client(connection, **options))
        return _PortalClient(self._loop.portal, client)

    def on_pagerduty_event(self, callback: PagerDutyEventHook) -> Callable[[], None]:
        """See :meth:`Connector.on_pagerduty_event` (the callback runs on the loop's thread)."""
        return self._connector.on_pagerduty_event(callback)


async def _build(settings: Settings, kwargs: dict[str, Any]) -> Connector:
    # Built inside the loop, so every anyio primitive it creates belongs there; opened at once
    # so that an unmigrated database is a clear error here, not on the first request.
    connector = Connector(settings, **kwargs)
    try:
        await connector.open()
    except BaseException:
        await connector.aclose()
        raise
    return connector
