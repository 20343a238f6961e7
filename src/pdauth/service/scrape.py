"""``/metrics`` for the service: pdauth's process metrics plus the connections per status.

:class:`ConnectionStatusCollector` reads ``Store.count_by_status()`` at scrape time, cached a
few seconds so a busy Prometheus does not become a database load; it lives here, above the
store, because :mod:`pdauth.metrics` (which every layer records into) must not import the
database layer. :class:`MetricsEndpoint` builds the registry on the first scrape (the Connector,
and so the store, is created lazily) and answers 501 naming ``pdauth[metrics]`` when
prometheus-client is not installed.

Who may scrape (docs/SECURITY.md item 49): with ``PDAUTH_METRICS_TOKEN`` set, only a
request carrying ``Authorization: Bearer <token>`` (compared in constant time; 401 otherwise);
without it, only a client on loopback — the socket peer, or the address a trusted proxy
forwarded for (``PDAUTH_TRUSTED_PROXIES``) — and everyone else gets 403 naming the setting.
Prometheus' scrape config then carries ``authorization: {credentials: <token>}``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pdauth.clock import Clock, SystemClock
from pdauth.errors import StoreError
from pdauth.metrics import AVAILABLE, CONNECTION_STATUSES, metrics_app, metrics_registry
from pdauth.service.apikeys import ApiKeyVerifier
from pdauth.store import AsyncStore, Store

# Without pdauth[metrics] the name stays undefined and the collector is never built.
with contextlib.suppress(ImportError):
    from prometheus_client.core import GaugeMetricFamily

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry
    from starlette.types import ASGIApp, Receive, Scope, Send

    from pdauth.service.core import Service

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "ConnectionStatusCollector",
    "MetricsEndpoint",
    "service_registry",
]

DEFAULT_CACHE_SECONDS = 5.0
_CONNECTIONS_HELP = "Connections by status (read from the database, cached a few seconds)."
_STORE_UP_HELP = "1 if the last read of the connection counts succeeded, else 0."


class ConnectionStatusCollector:
    """``pdauth_connections{status}`` read with ``Store.count_by_status()`` at scrape time.

    The counts are cached ``cache_seconds`` (by ``clock.monotonic()``). When the database
    cannot be read the gauge is left out and ``pdauth_store_up`` is 0, so the scrape still
    succeeds and an alert can fire on it. Needs prometheus-client (``pdauth[metrics]``).
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        *,
        clock: Clock | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        # Called from the scrape's worker thread, so the synchronous Store is the one to use.
        sync = store.store if isinstance(store, AsyncStore) else store
        self._count: Callable[[], dict[str, int]] = sync.count_by_status
        self._clock: Clock = clock or SystemClock()
        self._ttl = float(cache_seconds)
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, int] | None] | None = None

    def _counts(self) -> dict[str, int] | None:
        with self._lock:
            now = self._clock.monotonic()
            if self._cached is not None and now - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                counts: dict[str, int] | None = self._count()
            except StoreError:
                counts = None
            self._cached = (now, counts)
            return counts

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("pdauth_connections", _CONNECTIONS_HELP, labels=["status"])
        yield GaugeMetricFamily("pdauth_store_up", _STORE_UP_HELP)

    def collect(self) -> Iterable[Metric]:
        counts = self._counts()
        yield GaugeMetricFamily("pdauth_store_up", _STORE_UP_HELP, value=0 if counts is None else 1)
        if counts is None:
            return
        gauge = GaugeMetricFamily("pdauth_connections", _CONNECTIONS_HELP, labels=["status"])
        for status in sorted({*CONNECTION_STATUSES, *counts}):
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge


def service_registry(
    store: Store | AsyncStore | None = None,
    *,
    clock: Clock | None = None,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> CollectorRegistry:
    """pdauth's process metrics plus, with ``store``, the connections by status (what
    ``metrics_registry(store)`` was before the collector moved up here)."""
    if store is None:
        return metrics_registry()
    return metrics_registry(
        ConnectionStatusCollector(store, clock=clock, cache_seconds=cache_seconds)
    )


class MetricsEndpoint:
    """``/metrics``, built on the first scrape: the Connector (and its store) is lazy too."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._app: ASGIApp | None = None
        token = service.settings.metrics_token
        self._token = ApiKeyVerifier([token.get_secret_value()]) if token is not None else None

    def refusal(self, conn: HTTPConnection) -> Response | None:
        """The answer for a scraper that may not read the metrics, or ``None``."""
        if self._token is not None:
            if self._token.verify(conn.headers.get("authorization")):
                return None
            return PlainTextResponse(
                "a bearer token is required (PDAUTH_METRICS_TOKEN)\n",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        if _is_loopback(self._service.client_key(conn)):
            return None
        return PlainTextResponse(
            "metrics are served to loopback only; set PDAUTH_METRICS_TOKEN to scrape remotely\n",
            status_code=403,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self.refusal(HTTPConnection(scope))
        if refused is not None:
            await refused(scope, receive, send)
            return
        if self._app is None:
            registry: CollectorRegistry | None = None
            if AVAILABLE:
                connector = await self._service.connector()
                registry = service_registry(connector.store, clock=self._service.clock)
            self._app = metrics_app(registry)
        await self._app(scope, receive, send)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
