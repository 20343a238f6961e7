"""Prometheus metrics for pdauth: what the other layers observe, and the ``/metrics`` endpoint.

The counters and histograms live in pdauth's own :class:`~prometheus_client.CollectorRegistry`
(never prometheus-client's global one), created once per process; the layers that observe
call the module's small functions (:func:`observe_refresh`, :func:`observe_token_latency`,
:func:`observe_api`, :func:`observe_rate_limited`, :func:`observe_pacing_delay`,
:func:`observe_callback`, :func:`observe_outbox`), which never raise and never take an id, a
path or a token: every label comes from a short fixed list, so cardinality stays bounded and
nothing secret can reach a scrape. :func:`metrics_registry` builds, per app, a registry that
exposes those process metrics plus any collectors the app adds (the service adds the connection
counts it reads from the database; this module never touches the database), and
:func:`metrics_app` serves a registry in the Prometheus text format as an ASGI app, so several
apps in one process (or one test) never clash over metric names.

prometheus-client is an optional extra (``pip install 'pdauth[metrics]'``): without it
:data:`AVAILABLE` is false, every ``observe_*`` function does nothing, and the metrics app
answers 501 with a body that names the extra. Importing this module never fails for its lack.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import anyio.to_thread

from pdauth.clock import Clock
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    CallbackError,
    ConfigurationError,
    FlowExpiredError,
    UnknownStateError,
)

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import Collector
except ImportError:  # the optional extra is missing: recording is a no-op, /metrics says so
    AVAILABLE = False
else:
    AVAILABLE = True

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from starlette.types import Receive, Scope, Send

__all__ = [
    "AVAILABLE",
    "CALLBACK_OUTCOMES",
    "CONNECTION_STATUSES",
    "MISSING_EXTRA",
    "REFRESH_OUTCOMES",
    "REFRESH_REASONS",
    "MetricsApp",
    "metrics_app",
    "metrics_registry",
    "observe_api",
    "observe_callback",
    "observe_callback_outcome",
    "observe_outbox",
    "observe_pacing_delay",
    "observe_rate_limited",
    "observe_redis_outage",
    "observe_refresh",
    "observe_token_latency",
    "refresh_reason",
    "refreshing_because",
    "token_request_timer",
]

P = ParamSpec("P")
T = TypeVar("T")

CALLBACK_OUTCOMES: Final = ("success", "denied", "expired", "binding_mismatch", "invalid", "error")
REFRESH_OUTCOMES: Final = ("success", "invalid_grant", "invalid_client", "error")
#: Why a refresh happened: the access token neared expiry, PagerDuty answered 401, someone
#: asked (CLI), or the refresh token neared its idle expiry (the keeper, ``refresh --due``).
REFRESH_REASONS: Final = ("expiry", "rejected", "forced", "idle")
GRANT_TYPES: Final = ("authorization_code", "refresh_token", "client_credentials")
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "error")
OUTBOX_KINDS: Final = ("webhook", "revocation")
OUTBOX_OUTCOMES: Final = ("delivered", "retry", "abandoned", "skipped")
CONNECTION_STATUSES: Final = ("active", "needs_reauth", "revoked")
MISSING_EXTRA: Final = (
    "metrics are not available: prometheus-client is not installed; pip install 'pdauth[metrics]'"
)

_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)
_DELAY_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

_REASON: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pdauth_refresh_reason", default=None
)


class _ProcessMetrics:
    """The process-wide instruments, in pdauth's own registry (created once, at import)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.refreshes = Counter(
            "pdauth_refreshes",
            "Token refreshes by outcome (success, invalid_grant, invalid_client, error) and "
            "reason (expiry, rejected, forced, idle).",
            ("outcome", "reason"),
            registry=r,
        )
        self.token_latency = Histogram(
            "pdauth_token_request_duration_seconds",
            "Latency of calls to PagerDuty's token endpoint, by grant type.",
            ("grant_type",),
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "pdauth_api_requests",
            "PagerDuty REST API requests by method and status class (error: no answer).",
            ("method", "status_class"),
            registry=r,
        )
        self.rate_limited = Counter(
            "pdauth_api_rate_limited",
            "HTTP 429 answers received from PagerDuty's REST API.",
            registry=r,
        )
        self.pacing_delay = Histogram(
            "pdauth_api_pacing_delay_seconds",
            "Time spent waiting before a REST call: after a 429 (cause=429) or to stay under "
            "the rate limit (cause=pacer).",
            ("cause",),
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.callbacks = Counter(
            "pdauth_callbacks",
            "Connect callbacks by outcome (success, denied, expired, binding_mismatch, "
            "invalid, error).",
            ("outcome",),
            registry=r,
        )
        self.outbox = Counter(
            "pdauth_outbox_deliveries",
            "Outbox work done by the keeper: webhook deliveries and revocations, by outcome "
            "(delivered, retry, abandoned, skipped).",
            ("kind", "outcome"),
            registry=r,
        )
        # Every known series exists from the start (at zero): dashboards and rate() queries
        # should not depend on the first occurrence of an event.
        for outcome in REFRESH_OUTCOMES:
            for reason in REFRESH_REASONS:
                self.refreshes.labels(outcome, reason)
        for grant in GRANT_TYPES:
            self.token_latency.labels(grant)
        self.redis_degraded = Gauge(
            "pdauth_redis_pacing_degraded",
            "1 while Redis is unreachable and rate-limit pacing is per process, else 0.",
            registry=r,
        )
        self.redis_outages = Counter(
            "pdauth_redis_outages",
            "Times Redis became unreachable for shared rate-limit pacing.",
            registry=r,
        )
        self._make_hot_series()
        for outcome in CALLBACK_OUTCOMES:
            self.callbacks.labels(outcome)
        for kind in OUTBOX_KINDS:
            for outcome in OUTBOX_OUTCOMES:
                self.outbox.labels(kind, outcome)

    def _make_hot_series(self) -> None:
        # The hot path (one REST call) looks its series up in dicts made here instead of
        # asking prometheus-client's labels() each time (a few microseconds per request).
        self.delay_429 = self.pacing_delay.labels("429")
        self.delay_pacer = self.pacing_delay.labels("pacer")
        self.api_series = {
            (method, status_class): self.api_requests.labels(method, status_class)
            for method in (*METHODS, "OTHER")
            for status_class in STATUS_CLASSES
        }


_PROCESS: Final = _ProcessMetrics() if AVAILABLE else None


def _one_of(value: object, allowed: tuple[str, ...], fallback: str) -> str:
    return value if isinstance(value, str) and value in allowed else fallback


def _seconds(value: float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if seconds >= 0 and seconds == seconds else 0.0  # negative or NaN: 0


# -- what the other layers call ------------------------------------------------------------


def observe_refresh(outcome: str, reason: str) -> None:
    """One refresh attempt (one lease, retries included) and how it ended.

    ``outcome``: one of :data:`REFRESH_OUTCOMES` (anything else counts as ``error``);
    ``reason``: one of :data:`REFRESH_REASONS` (see :func:`refresh_reason`).
    """
    if _PROCESS is None:
        return
    _PROCESS.refreshes.labels(
        _one_of(outcome, REFRESH_OUTCOMES, "error"), _one_of(reason, REFRESH_REASONS, "expiry")
    ).inc()


def refresh_reason(rejected: object, force: bool) -> str:
    """The reason label for a refresh: ``rejected`` (after a 401) wins, then the reason set
    by :func:`refreshing_because` (``idle``), then ``forced`` or ``expiry``."""
    if rejected is not None:
        return "rejected"
    scoped = _REASON.get()
    if scoped is not None:
        return scoped
    return "forced" if force else "expiry"


@contextmanager
def refreshing_because(reason: str) -> Iterator[None]:
    """Label the refreshes done inside (this task only) with ``reason`` (e.g. ``idle``)."""
    token = _REASON.set(_one_of(reason, REFRESH_REASONS, "forced"))
    try:
        yield
    finally:
        _REASON.reset(token)


def observe_token_latency(grant_type: str, seconds: float) -> None:
    """One token-endpoint call of ``grant_type`` took ``seconds`` (failed calls included)."""
    if _PROCESS is None:
        return
    _PROCESS.token_latency.labels(_one_of(grant_type, GRANT_TYPES, "other")).observe(
        _seconds(seconds)
    )


@contextmanager
def token_request_timer(grant_type: str, clock: Clock) -> Iterator[None]:
    """Time the token-endpoint call inside with ``clock`` (the injected clock: real time in
    production, no time at all under a frozen test clock)."""
    started = clock.monotonic()
    try:
        yield
    finally:
        observe_token_latency(grant_type, clock.monotonic() - started)


def observe_api(method: str, status: int | None) -> None:
    """One REST request: its method and the answer's status (None: no answer arrived).

    Only the status *class* is kept, and never the path (paths carry ids).
    """
    verb = method.upper() if isinstance(method, str) else ""
    if status is None or isinstance(status, bool) or not isinstance(status, int):
        status_class = "error"
    else:
        status_class = _one_of(f"{status // 100}xx", STATUS_CLASSES, "error")
    if _PROCESS is None:
        return
    _PROCESS.api_series[(_one_of(verb, METHODS, "OTHER"), status_class)].inc()


def observe_rate_limited(delay_s: float) -> None:
    """A 429 was received; the client will wait ``delay_s`` seconds before trying again."""
    if _PROCESS is None:
        return
    _PROCESS.rate_limited.inc()
    _PROCESS.delay_429.observe(_seconds(delay_s))


def observe_pacing_delay(delay_s: float) -> None:
    """The pacer held a request back ``delay_s`` seconds to stay under the rate limit."""
    if _PROCESS is None:
        return
    _PROCESS.delay_pacer.observe(_seconds(delay_s))


def observe_redis_outage(down: bool) -> None:
    """Redis was lost (``down``) or is back, for the pacing shared through it."""
    if _PROCESS is None:
        return
    _PROCESS.redis_degraded.set(1 if down else 0)
    if down:
        _PROCESS.redis_outages.inc()


def observe_callback(outcome: str) -> None:
    """One connect callback and its outcome (one of :data:`CALLBACK_OUTCOMES`)."""
    if _PROCESS is None:
        return
    _PROCESS.callbacks.labels(_one_of(outcome, CALLBACK_OUTCOMES, "error")).inc()


def callback_outcome_of(exc: BaseException) -> str:
    """The callback outcome label for the error a callback raised."""
    if isinstance(exc, AuthorizationDeniedError):
        return "denied"
    if isinstance(exc, FlowExpiredError):
        return "expired"
    if isinstance(exc, BindingMismatchError):
        return "binding_mismatch"
    if isinstance(exc, CallbackError | UnknownStateError):
        return "invalid"
    return "error"


def observe_callback_outcome(
    fn: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate the coroutine that completes a connect flow: count its outcome."""

    @functools.wraps(fn)
    async def observed(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            observe_callback(callback_outcome_of(exc))
            raise
        observe_callback("success")
        return result

    return observed


def observe_outbox(kind: str, outcome: str) -> None:
    """The keeper handled one outbox event: ``kind`` webhook or revocation; ``outcome`` one of
    delivered, retry, abandoned, skipped."""
    if _PROCESS is None:
        return
    _PROCESS.outbox.labels(
        _one_of(kind, OUTBOX_KINDS, "webhook"), _one_of(outcome, OUTBOX_OUTCOMES, "retry")
    ).inc()


# -- the registry an app serves ------------------------------------------------------------


class _ProcessCollector:
    """Exposes the process-wide instruments through another registry."""

    def collect(self) -> Iterable[Metric]:
        return _PROCESS.registry.collect() if _PROCESS is not None else ()

    def describe(self) -> Iterable[Metric]:
        return self.collect()  # instruments only: no I/O


def metrics_registry(*collectors: Collector) -> CollectorRegistry:
    """A new registry for one app: pdauth's process metrics plus ``collectors`` (e.g. the
    service's connection counts). Serve it with :func:`metrics_app`. Without prometheus-client
    a :class:`~pdauth.errors.ConfigurationError` names the extra (``pdauth[metrics]``)."""
    if not AVAILABLE:
        raise ConfigurationError(MISSING_EXTRA)
    registry = CollectorRegistry()
    registry.register(_ProcessCollector())
    for collector in collectors:
        registry.register(collector)
    return registry


class MetricsApp:
    """An ASGI app answering GET/HEAD with ``registry`` in the Prometheus text format.

    A class instance, not a function, so Starlette's ``Route("/metrics", app)`` passes it
    the raw ASGI call. The scrape runs in a worker thread: collecting may read the database.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
            return
        if self._registry is None:
            body = (MISSING_EXTRA + "\n").encode("utf-8")
            await _answer(send, 501, body, "text/plain; charset=utf-8", head=method == "HEAD")
            return
        body = await anyio.to_thread.run_sync(generate_latest, self._registry)
        await _answer(send, 200, body, CONTENT_TYPE_LATEST, head=method == "HEAD")


async def _answer(send: Send, status: int, body: bytes, media: str, *, head: bool = False) -> None:
    headers = [
        (b"content-type", media.encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def metrics_app(registry: CollectorRegistry | None = None) -> MetricsApp:
    """The ASGI app to mount at ``/metrics`` (default: process metrics only); without
    prometheus-client it answers 501 naming ``pdauth[metrics]``."""
    if registry is None and AVAILABLE:
        registry = metrics_registry()
    return MetricsApp(registry)
