"""The keeper: pdauth's periodic background work, safe to run in several processes at once.

Each :meth:`Keeper.run_once` does three things. (1) It refreshes connections whose refresh
token nears its idle expiry (:meth:`pdauth.connections.Connector.refresh_due`; the per-row
lease makes each refresh happen once however many keepers run). (2) It drains the outbox:
:meth:`pdauth.store.Store.claim_due_events` claims due events of every type in one statement
(``SKIP LOCKED`` on PostgreSQL), so no two keepers hold the same event; the work is then split
by type — a ``revocation.pending`` event is retried against the RFC 7009 revocation endpoint
(its token opened with :meth:`pdauth.sealing.Sealer.open_revocation`; success marks it
delivered, a 5xx/503/timeout reschedules it with capped exponential backoff and jitter, any
other refusal gives up and records why), and every other outbox event goes to the optional
webhook (:mod:`pdauth.webhooks`; at least once, same event id on every attempt, backoff, given
up after three days) or, with no webhook configured, is closed as skipped. Events of one
connection are handled in order; different connections concurrently. A keeper that dies
mid-delivery releases its claim by time, so work is repeated, never lost. (3) It purges
expired pending authorizations. With ``PDAUTH_PAGERDUTY_EVENTS`` set, each pass also reconciles
the PagerDuty webhook subscriptions (:meth:`pdauth.subscriptions.PagerDutyEvents.reconcile`:
active connections without one get one, failures are retried with backoff) before the outbox,
and a ``subscription.delete_pending`` outbox job (a disconnected connection's subscription) is
retried against PagerDuty instead of being sent to the webhook. :meth:`Keeper.run_forever`
repeats this every ``PDAUTH_KEEPER_INTERVAL`` seconds (jittered) until stopped;
:meth:`Keeper.running` is the same as an async context manager for a service's lifespan.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
import httpx

from pdauth._portal import AsyncClosing
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.crypto import KeyRing
from pdauth.errors import (
    CryptoError,
    KeyNotFoundError,
    OAuthError,
    PdauthError,
    TransportError,
)
from pdauth.logs import log_context
from pdauth.metrics import observe_outbox
from pdauth.sealing import Sealer
from pdauth.store import EventRow
from pdauth.subscriptions import UNSUBSCRIBE_EVENT, events_of
from pdauth.tokens import RefreshDueReport
from pdauth.webhooks import WebhookSender

__all__ = ["Keeper", "KeeperReport"]

log = logging.getLogger("pdauth.keeper")

REVOCATION_EVENT = "revocation.pending"
#: Outbox events claimed per statement, and at most this many statements per run.
CLAIM_BATCH = 20
MAX_BATCHES_PER_RUN = 10
#: Connections whose events are handled at the same time.
CONCURRENCY = 4
REVOCATION_RETRY_BASE = 30.0
WEBHOOK_RETRY_BASE = 10.0
RETRY_CAP = 3600.0
#: A webhook event still undelivered this long after it happened is given up.
WEBHOOK_MAX_AGE = 3 * 86_400.0
#: Revocation answers that mean "try again later" (5xx, 503, 429); anything else is final.
TRANSIENT_REVOCATION_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
DEFAULT_REFRESH_LIMIT = 100
STOP_GRACE = 10.0


@dataclass(frozen=True)
class KeeperReport:
    """What one :meth:`Keeper.run_once` did. ``problems`` names failures (no secrets)."""

    refresh: RefreshDueReport | None = None
    revoked: int = 0
    revocations_retrying: int = 0
    revocations_abandoned: int = 0
    webhooks_delivered: int = 0
    webhooks_retrying: int = 0
    webhooks_abandoned: int = 0
    skipped: int = 0
    pending_purged: int = 0
    subscriptions_checked: int = 0
    unsubscribed: int = 0
    problems: tuple[str, ...] = ()


@dataclass
class _Tally:
    refresh: RefreshDueReport | None = None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def problem(self, where: str, exc: BaseException) -> None:
        code = exc.error if isinstance(exc, OAuthError) else type(exc).__name__
        self.problems.append(f"{where}: {code}")

    def report(self) -> KeeperReport:
        c = self.counts
        return KeeperReport(
            refresh=self.refresh,
            revoked=c.get("revoked", 0),
            revocations_retrying=c.get("revocations_retrying", 0),
            revocations_abandoned=c.get("revocations_abandoned", 0),
            webhooks_delivered=c.get("webhooks_delivered", 0),
            webhooks_retrying=c.get("webhooks_retrying", 0),
            webhooks_abandoned=c.get("webhooks_abandoned", 0),
            skipped=c.get("skipped", 0),
            pending_purged=c.get("pending_purged", 0),
            subscriptions_checked=c.get("subscriptions_checked", 0),
            unsubscribed=c.get("unsubscribed", 0),
            problems=tuple(self.problems),
        )


Outcome = Literal["delivered", "retry", "abandoned", "skipped"]


class Keeper(AsyncClosing):
    """Runs the background work for one :class:`~pdauth.connections.Connector`.

    ``settings`` defaults to the connector's. ``http`` / ``transport`` route the webhook
    deliveries (the revocation calls go through the connector's own client). ``clock``
    stamps deliveries and schedules retries. Use as an async context manager, or call
    :meth:`aclose`.
    """

    def __init__(
        self,
        connector: Connector,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key_ring: KeyRing | None = None,
        rng: random.Random | None = None,
        batch_size: int = CLAIM_BATCH,
        refresh_limit: int = DEFAULT_REFRESH_LIMIT,
        concurrency: int = CONCURRENCY,
    ) -> None:
        if batch_size < 1 or refresh_limit < 1 or concurrency < 1:
            raise ValueError("batch_size, refresh_limit and concurrency must be at least 1")
        self._connector = connector
        self._settings = settings if settings is not None else connector.settings
        self._clock: Clock = clock or SystemClock()
        self._seal = Sealer(key_ring or self._settings.key_ring())
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._store = connector.store
        self._batch = batch_size
        self._refresh_limit = refresh_limit
        self._concurrency = concurrency
        self._webhook: WebhookSender | None = None
        s = self._settings
        if s.webhook_url is not None and s.webhook_secret is not None:
            self._webhook = WebhookSender(
                s.webhook_url,
                s.webhook_secret,
                timeout=s.webhook_timeout,
                http=http,
                transport=None if http is not None else transport,
            )
        # A claim must outlast the work on its batch: each connection's events one after
        # another, at most `concurrency` connections at once, each call bounded by a timeout
        # (a revocation may try twice when the connection is refused).
        per_event = max(s.webhook_timeout, 2 * s.http_timeout) + 5.0
        self._hold_for = math.ceil(batch_size / concurrency) * per_event + 60.0

    async def aclose(self) -> None:
        if self._webhook is not None:
            await self._webhook.aclose()

    # -- the loop --------------------------------------------------------------------------

    async def run_once(self) -> KeeperReport:
        """One pass: due refreshes, the outbox, expired pending authorizations.

        Never raises for a failure of one part (it is logged and named in ``problems``);
        cancellation propagates.
        """
        tally = _Tally()
        await self._refresh_due(tally)
        await self._reconcile_subscriptions(tally)
        await self._drain_outbox(tally)
        await self._purge_pending(tally)
        report = tally.report()
        if report.problems:
            log.warning("keeper run had problems: %s", "; ".join(report.problems))
        return report

    async def run_forever(
        self, interval: float | None = None, stop_event: anyio.Event | None = None
    ) -> None:
        """Run, wait ``interval`` seconds (default ``PDAUTH_KEEPER_INTERVAL``, ±10 % jitter so
        several instances drift apart), and again, until ``stop_event`` is set."""
        every = self._settings.keeper_interval if interval is None else float(interval)
        if not (math.isfinite(every) and every > 0):
            raise ValueError("interval must be a positive number of seconds")
        stop = stop_event if stop_event is not None else anyio.Event()
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except Exception as exc:  # a background loop must outlive any one bad run
                    log.error("keeper run failed (%s)", type(exc).__name__)
                with anyio.move_on_after(every * (0.9 + 0.2 * self._rng.random())):
                    await stop.wait()
        finally:
            # Also on cancellation: an operator (and a test) can tell the loop has ended.
            log.info("keeper loop stopped")

    @asynccontextmanager
    async def running(
        self, interval: float | None = None, *, grace: float = STOP_GRACE
    ) -> AsyncIterator[Keeper]:
        """Run :meth:`run_forever` in the background while the block runs (a service's
        lifespan). On exit the current pass may finish for ``grace`` seconds, then it is
        cancelled (claimed work is simply retried later)."""
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run_forever, interval, stop)
            try:
                yield self
            finally:
                stop.set()
                tg.cancel_scope.deadline = anyio.current_time() + grace

    # -- (1) refreshes ---------------------------------------------------------------------

    async def _refresh_due(self, tally: _Tally) -> None:
        try:
            tally.refresh = await self._connector.refresh_due(
                horizon=self._settings.refresh_horizon, limit=self._refresh_limit
            )
        except PdauthError as exc:  # InvalidClientError: configuration; StoreError
            tally.problem("refresh", exc)

    # -- (2) the outbox --------------------------------------------------------------------

    async def _drain_outbox(self, tally: _Tally) -> None:
        for _ in range(MAX_BATCHES_PER_RUN):
            try:
                events = await self._store.claim_due_events(
                    now=self._clock.now(), limit=self._batch, hold_for=self._hold_for
                )
            except PdauthError as exc:
                tally.problem("outbox", exc)
                return
            if not events:
                return
            # Per connection in order (a host app sees created before needs_reauth on the
            # first attempt); connections concurrently, at most `concurrency` at once.
            groups: dict[str | None, list[EventRow]] = {}
            for event in events:
                groups.setdefault(event.connection_id, []).append(event)
            limiter = anyio.CapacityLimiter(self._concurrency)
            async with anyio.create_task_group() as tg:
                for group in groups.values():
                    tg.start_soon(self._handle_group, group, tally, limiter)
            if len(events) < self._batch:
                return

    async def _handle_group(
        self, events: list[EventRow], tally: _Tally, limiter: anyio.CapacityLimiter
    ) -> None:
        async with limiter:
            for event in events:
                with log_context(connection_id=event.connection_id, owner=event.owner):
                    try:
                        await self._handle(event, tally)
                    except Exception as exc:
                        # The claim expires by itself and the event is tried again later.
                        tally.problem(f"event {event.id}", exc)

    async def _handle(self, event: EventRow, tally: _Tally) -> None:
        if event.type == REVOCATION_EVENT:
            await self._revoke(event, tally)
        elif event.type == UNSUBSCRIBE_EVENT:
            await self._unsubscribe(event, tally)
        elif self._webhook is None:
            await self._store.schedule_retry(
                event.id, next_attempt_at=None, error="not delivered: no webhook is configured"
            )
            tally.add("skipped")
            observe_outbox("webhook", "skipped")
        else:
            await self._deliver(self._webhook, event, tally)

    async def _deliver(self, webhook: WebhookSender, event: EventRow, tally: _Tally) -> None:
        now = self._clock.now()
        result = await webhook.deliver(event, now)
        if result.delivered:
            await self._store.mark_delivered(event.id, self._clock.now())
            await self._settle(event, tally, "webhook", "delivered", None)
            return
        error = result.error or "delivery failed"
        if now - event.created_at >= WEBHOOK_MAX_AGE:
            await self._settle(event, tally, "webhook", "abandoned", f"gave up: {error}")
        else:
            await self._settle(event, tally, "webhook", "retry", error, base=WEBHOOK_RETRY_BASE)

    async def _revoke(self, event: EventRow, tally: _Tally) -> None:
        cid = event.connection_id
        hint = event.data.get("token_type_hint")
        ciphertext = event.data.get("token_ct")
        if (
            cid is None
            or hint not in ("refresh_token", "access_token")
            or not isinstance(ciphertext, str)
            or not ciphertext
        ):
            await self._settle(event, tally, "revocation", "abandoned", "malformed event")
            return
        if self._settings.revocation_endpoint is None:
            # Configuration may bring it back; keep the event, look again rarely.
            await self._settle(
                event, tally, "revocation", "retry", "no revocation endpoint is configured",
                delay=RETRY_CAP,
            )  # fmt: skip
            return
        try:
            token = self._seal.open_revocation(cid, hint, ciphertext)
        except KeyNotFoundError:
            # The key was dropped too early (see pdauth.rotation): putting it back fixes it.
            await self._settle(
                event, tally, "revocation", "retry",
                "its encryption key is not in PDAUTH_ENCRYPTION_KEYS", delay=RETRY_CAP,
            )  # fmt: skip
            return
        except CryptoError:
            await self._settle(event, tally, "revocation", "abandoned", "does not decrypt")
            return
        try:
            await self._connector.identity.revoke(token, hint)
        except TransportError as exc:
            await self._settle(
                event, tally, "revocation", "retry", f"unreachable ({type(exc).__name__})",
                base=REVOCATION_RETRY_BASE,
            )  # fmt: skip
            return
        except OAuthError as exc:
            if exc.error in TRANSIENT_REVOCATION_ERRORS:
                await self._settle(
                    event, tally, "revocation", "retry", exc.error, base=REVOCATION_RETRY_BASE
                )
            else:
                await self._settle(event, tally, "revocation", "abandoned", f"refused: {exc.error}")
            return
        await self._store.mark_delivered(event.id, self._clock.now())
        await self._settle(event, tally, "revocation", "delivered", None)

    async def _settle(
        self,
        event: EventRow,
        tally: _Tally,
        kind: Literal["webhook", "revocation"],
        outcome: Outcome,
        error: str | None,
        *,
        base: float = WEBHOOK_RETRY_BASE,
        delay: float | None = None,
    ) -> None:
        """Record the outcome: reschedule (backoff) or give up in the store, count, log."""
        attempt = event.attempts + 1
        if outcome == "retry":
            wait = self._backoff(event.attempts, base) if delay is None else delay
            await self._store.schedule_retry(
                event.id, next_attempt_at=self._clock.now() + wait, error=error or "failed"
            )
            log.info(
                "%s of event %d failed (attempt %d: %s); retry in %.0fs",
                kind, event.id, attempt, error, wait,
            )  # fmt: skip
        elif outcome == "abandoned":
            await self._store.schedule_retry(
                event.id, next_attempt_at=None, error=error or "gave up"
            )
            log.warning("%s of event %d given up (attempt %d: %s)", kind, event.id, attempt, error)
        counter = {
            ("revocation", "delivered"): "revoked",
            ("revocation", "retry"): "revocations_retrying",
            ("revocation", "abandoned"): "revocations_abandoned",
            ("webhook", "delivered"): "webhooks_delivered",
            ("webhook", "retry"): "webhooks_retrying",
            ("webhook", "abandoned"): "webhooks_abandoned",
        }.get((kind, outcome), "skipped")
        tally.add(counter)
        observe_outbox(kind, outcome)

    def _backoff(self, failures: int, base: float) -> float:
        """Exponential, capped at ``RETRY_CAP``, with jitter in [ceiling/2, ceiling]."""
        ceiling = min(RETRY_CAP, base * 2.0 ** min(max(failures, 0), 30))
        return ceiling / 2 + self._rng.random() * ceiling / 2

    # -- PagerDuty's events per connection (pdauth.subscriptions) ------------------------------

    async def _reconcile_subscriptions(self, tally: _Tally) -> None:
        try:
            tally.add("subscriptions_checked", await events_of(self._connector).reconcile())
        except PdauthError as exc:
            tally.problem("subscriptions", exc)

    async def _unsubscribe(self, event: EventRow, tally: _Tally) -> None:
        """A queued deletion of a disconnected connection's PagerDuty webhook subscription."""
        outcome, error = await events_of(self._connector).run_unsubscribe(event)
        if outcome == "delivered":
            await self._store.mark_delivered(event.id, self._clock.now())
            tally.add("unsubscribed")
        elif outcome == "retry":
            wait = self._backoff(event.attempts, REVOCATION_RETRY_BASE)
            await self._store.schedule_retry(
                event.id, next_attempt_at=self._clock.now() + wait, error=error or "failed"
            )
            tally.add("skipped")
        else:
            await self._store.schedule_retry(event.id, next_attempt_at=None, error=error or "")
            log.warning("PagerDuty subscription deletion given up (%s)", error)
            tally.add("skipped")

    # -- (3) housekeeping ------------------------------------------------------------------

    async def _purge_pending(self, tally: _Tally) -> None:
        try:
            tally.add("pending_purged", await self._store.purge_expired_pending(self._clock.now()))
        except PdauthError as exc:
            tally.problem("purge", exc)
