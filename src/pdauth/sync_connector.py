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

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Self, TypeVar

from anyio.from_thread import BlockingPortal

from pdauth._portal import BlockingTwin, DaemonPortal
from pdauth.client import PagerDutyClient, SyncPagerDutyClient
from pdauth.config import Settings
from pdauth.connections import AuthorizationStart, Connection, Connector
from pdauth.oauth import CallbackQuery
from pdauth.subscriptions import PagerDutyEventHook, SubscriptionStatus
from pdauth.tokens import RefreshDueReport

__all__ = ["SyncConnector"]

T = TypeVar("T")


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

    # -- the Connector's operations --------------------------------------------------------

    def begin(
        self,
        owner: str,
        return_to: str | None = None,
        *,
        scopes: Iterable[str] | None = None,
        expect_account: str | None = None,
        expect_user: str | None = None,
        connection_id: str | None = None,
    ) -> AuthorizationStart:
        """See :meth:`Connector.begin`."""
        return self.call(
            lambda: self._connector.begin(
                owner,
                return_to,
                scopes=scopes,
                expect_account=expect_account,
                expect_user=expect_user,
                connection_id=connection_id,
            )
        )

    def complete(
        self, query: CallbackQuery, binding: str | None, *, owner: str | None = None
    ) -> Connection:
        """See :meth:`Connector.complete`."""
        return self.call(lambda: self._connector.complete(query, binding, owner=owner))

    def complete_with_return_to(
        self, query: CallbackQuery, binding: str | None, *, owner: str | None = None
    ) -> tuple[Connection, str | None]:
        """See :meth:`Connector.complete_with_return_to`."""
        return self.call(
            lambda: self._connector.complete_with_return_to(query, binding, owner=owner)
        )

    def connect_app(
        self,
        owner: str,
        *,
        region: Literal["us", "eu"],
        subdomain: str,
        scopes: Iterable[str] | None = None,
    ) -> Connection:
        """See :meth:`Connector.connect_app`."""
        return self.call(
            lambda: self._connector.connect_app(
                owner, region=region, subdomain=subdomain, scopes=scopes
            )
        )

    def access_token(self, connection_id: str) -> str:
        """See :meth:`Connector.access_token`."""
        return self.call(self._connector.access_token, connection_id)

    def client(self, connection: str | Connection, **options: Any) -> SyncPagerDutyClient:
        """A blocking REST client for one connection (a context manager); see
        :meth:`Connector.client`. It runs on this SyncConnector's loop: close it before
        closing the SyncConnector."""
        client = self.call(lambda: self._connector.client(connection, **options))
        return _PortalClient(self._loop.portal, client)

    def get(self, connection_id: str, *, owner: str | None = None) -> Connection:
        """See :meth:`Connector.get`."""
        return self.call(lambda: self._connector.get(connection_id, owner=owner))

    def connections(
        self, owner: str | None = None, *, status: str | None = None, limit: int = 1000
    ) -> list[Connection]:
        """See :meth:`Connector.connections`."""
        return self.call(lambda: self._connector.connections(owner, status=status, limit=limit))

    def disconnect(self, connection_id: str, *, owner: str | None = None) -> Connection:
        """See :meth:`Connector.disconnect`."""
        return self.call(lambda: self._connector.disconnect(connection_id, owner=owner))

    def ensure_subscription(self, connection_id: str) -> SubscriptionStatus:
        """See :meth:`Connector.ensure_subscription`."""
        return self.call(lambda: self._connector.ensure_subscription(connection_id))

    def on_pagerduty_event(self, callback: PagerDutyEventHook) -> Callable[[], None]:
        """See :meth:`Connector.on_pagerduty_event` (the callback runs on the loop's thread)."""
        return self._connector.on_pagerduty_event(callback)

    def refresh_due(self, *, horizon: float | None = None, limit: int = 100) -> RefreshDueReport:
        """See :meth:`Connector.refresh_due`."""
        return self.call(lambda: self._connector.refresh_due(horizon=horizon, limit=limit))


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
