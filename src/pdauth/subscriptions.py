"""PagerDuty's own events per connection: v3 webhook subscriptions, kept and received.

With ``PDAUTH_PAGERDUTY_EVENTS`` set, every active connection gets one v3 webhook subscription
for its account (``POST /webhook_subscriptions``, an ``http_delivery_method`` to
``<public base>/pagerduty/webhooks/<key>``, an ``account_reference`` filter), made through the
connection's own paced client. ``key`` is 256 random bits of ours, so the receiver URL names
the subscription without naming the connection and cannot be guessed. PagerDuty returns the
signing secret once, in the create answer; it is sealed at once (:mod:`pdauth.sealing`).
Creation is idempotent: the key is stored *before* the call, so a retry after a lost answer
finds the subscription PagerDuty made by its URL; one whose secret we never learned is deleted
and made again (the secret is not readable later), so there is never a second one.

The keeper drives it (:meth:`PagerDutyEvents.reconcile`: active connections without a
subscription, failures due for a retry with backoff, connections back from needs_reauth);
:meth:`PagerDutyEvents.ensure` does one at once. Scoped apps need
``webhook_subscriptions.write`` (Classic: ``write``); without it the state is ``no_scope``.
A disconnect deletes the subscription synchronously while the token still works and, if that
fails, queues a ``subscription.delete_pending`` outbox job holding the access token sealed,
which the keeper retries (:meth:`PagerDutyEvents.run_unsubscribe`).

:meth:`PagerDutyEvents.receive` checks a delivery (size, key, ``X-PagerDuty-Signature``,
``X-Webhook-Id``, body) and records it with its pdauth event (``pagerduty.<event type>``, in
the outbox: the host's signed webhook and the events feed) in one transaction, de-duplicated
by ``X-Webhook-Id``; the Python hooks (:meth:`PagerDutyEvents.on_event`) run after the answer.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from pdauth.client import PagerDutyClient
from pdauth.errors import (
    AuthenticationError,
    ConnectionNotFoundError,
    CryptoError,
    PagerDutyAPIError,
    PdauthError,
    ScopeError,
    StoreError,
)
from pdauth.oauth import parse_scopes
from pdauth.pagerduty_webhooks import (
    MAX_BODY,
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    PagerDutyEvent,
    parse_event,
    valid_webhook_id,
    verify,
)
from pdauth.store import AsyncPagerDutyEventStore, ConnectionRow, EventRow, NewEvent
from pdauth.store.pd_events import SubscriptionRow
from pdauth.store.records import SECRET_KEYS

if TYPE_CHECKING:
    from pdauth.config import Settings
    from pdauth.connections import Connector

__all__ = [
    "RECEIVER_PATH",
    "UNSUBSCRIBE_EVENT",
    "PagerDutyEventHook",
    "PagerDutyEvents",
    "PagerDutyNotice",
    "Received",
    "SubscriptionStatus",
    "events_of",
    "receiver_url",
    "required_scope",
]

log = logging.getLogger("pdauth.subscriptions")

RECEIVER_PATH: Final = "/pagerduty/webhooks/"
UNSUBSCRIBE_EVENT: Final = "subscription.delete_pending"
RETRY_BASE: Final = 30.0
RETRY_CAP: Final = 3600.0
#: Delivery ids are remembered this long (PagerDuty retries for about 20 minutes).
DEDUPE_WINDOW: Final = 7 * 86_400.0
_SYNC_DEADLINE: Final = 15.0
# How long a claimed subscription is left to the worker that claimed it (longer than its
# calls to PagerDuty may take, so a live worker never loses it; a dead one's is retried).
_CLAIM_HOLD: Final = 4 * _SYNC_DEADLINE

PagerDutyEventHook = Callable[["PagerDutyNotice"], Awaitable[None] | None]


def receiver_url(settings: Settings, key: str) -> str:
    """Where PagerDuty delivers the events of the subscription named ``key``: the receiver
    route under the service's public base (the one the service mounts it under)."""
    return settings.service_base_url + RECEIVER_PATH + key


def required_scope(settings: Settings) -> str:
    """The scope creating a subscription takes: Scoped apps name it; Classic apps need write."""
    return "webhook_subscriptions.write" if settings.app_kind == "scoped" else "write"


@dataclass(frozen=True)
class SubscriptionStatus:
    """What ``pdauth connections show`` and the pages show of a connection's subscription.
    ``state``: ``off`` (events not configured), ``missing`` (none yet, or gone at PagerDuty),
    or one of :data:`pdauth.store.pd_events.SUBSCRIPTION_STATES`."""

    state: str
    pd_subscription_id: str | None = None
    events: tuple[str, ...] = ()
    last_error: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pd_subscription_id": self.pd_subscription_id,
            "events": list(self.events),
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class PagerDutyNotice:
    """One PagerDuty event as the Python hook sees it, tied to its connection and owner."""

    connection_id: str
    owner: str
    event: PagerDutyEvent
    event_id: int
    webhook_id: str


@dataclass(frozen=True)
class Received:
    """The receiver's answer to one delivery: ``status`` (2xx accepted, 4xx refused for good,
    5xx retried by PagerDuty), a short reason, and the notice for the hooks if it was new."""

    status: int
    reason: str
    notice: PagerDutyNotice | None = None


_BY_CONNECTOR: weakref.WeakKeyDictionary[Connector, PagerDutyEvents] = weakref.WeakKeyDictionary()


def events_of(connector: Connector) -> PagerDutyEvents:
    """The one :class:`PagerDutyEvents` of ``connector`` (made on first use)."""
    found = _BY_CONNECTOR.get(connector)
    if found is None:
        found = _BY_CONNECTOR[connector] = PagerDutyEvents(connector)
    return found


def _scrub(value: Any) -> Any:
    """``value`` without members whose names the event log refuses (they would be secrets)."""
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items() if str(k).lower() not in SECRET_KEYS}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, PagerDutyAPIError):
        return f"PagerDuty answered {exc.status}: {exc.message}"[:300]
    return type(exc).__name__


class PagerDutyEvents:
    """Subscriptions and received events of one :class:`~pdauth.connections.Connector`."""

    def __init__(self, connector: Connector) -> None:
        # A weak proxy: events_of() keeps this object in a WeakKeyDictionary keyed by the
        # Connector, and a strong reference back would keep every Connector alive forever.
        self._connector = cast("Connector", weakref.proxy(connector))
        self._settings = connector.settings
        self.store = AsyncPagerDutyEventStore(connector.store)
        self._hooks: list[PagerDutyEventHook] = []
        # The Connector's own clock, sealer and HTTP pool (one of each per Connector).
        self._clock = connector._clock
        self._seal = connector._seal
        self._http = connector._http

    @property
    def enabled(self) -> bool:
        return bool(self._settings.pagerduty_events)

    def on_event(self, callback: PagerDutyEventHook) -> Callable[[], None]:
        """Call ``callback(notice)`` (sync or async) for each new PagerDuty event this
        process receives; returns a function that removes it."""
        self._hooks.append(callback)
        return lambda: self._hooks.remove(callback) if callback in self._hooks else None

    # -- subscribe ---------------------------------------------------------------------------

    async def ensure(self, connection_id: str) -> SubscriptionStatus:
        """Make sure ``connection_id`` has its subscription (create or adopt); never raises
        for PagerDuty's answer (the state and ``last_error`` say what happened)."""
        row = await self._connector.store.get_connection(connection_id)
        if row is None:
            raise ConnectionNotFoundError(f"no connection {connection_id}")
        sub = await self.store.get_subscription(connection_id)
        if not self.enabled:
            return self._status(sub)
        now = self._clock.now()
        if row.status != "active":
            if sub is not None and sub.state == "active" and row.status == "needs_reauth":
                await self.store.update_subscription(
                    connection_id, state="needs_reauth", updated_at=now
                )
            return self._status(await self.store.get_subscription(connection_id))
        if sub is not None and sub.pd_subscription_id and sub.secret_ct:
            if sub.state in ("active", "disabled"):
                return self._status(sub)
            if sub.state == "needs_reauth":  # reconnected: the subscription was kept
                await self.store.update_subscription(connection_id, state="active", updated_at=now)
                return self._status(await self.store.get_subscription(connection_id))
        if required_scope(self._settings) not in parse_scopes(row.scopes):
            lacking = "the grant lacks the scope"
            await self.store.save_subscription(
                self._next_row(row, sub, now, state="no_scope", error=lacking)
            )
            return self._status(await self.store.get_subscription(connection_id))
        return await self._create(row, sub, now)

    def _next_row(
        self,
        row: ConnectionRow,
        sub: SubscriptionRow | None,
        now: float,
        *,
        state: str,
        error: str | None = None,
        hold_until: float | None = None,
    ) -> SubscriptionRow:
        """The row to write next: a new key when there is none to keep (none yet, or deleted)."""
        fresh = sub is None or sub.state in ("deleted", "deleting")
        return SubscriptionRow(
            connection_id=row.id,
            key=secrets.token_urlsafe(32) if fresh or sub is None else sub.key,
            state=state,
            pd_subscription_id=None if fresh or sub is None else sub.pd_subscription_id,
            secret_ct=None if fresh or sub is None else sub.secret_ct,
            events=",".join(self._settings.pagerduty_events),
            attempts=0 if sub is None else sub.attempts,
            next_attempt_at=hold_until,
            last_error=error,
            created_at=now if sub is None else sub.created_at,
            updated_at=now,
        )

    async def _create(
        self, row: ConnectionRow, sub: SubscriptionRow | None, now: float
    ) -> SubscriptionStatus:
        if sub is not None and sub.state == "pending" and (sub.next_attempt_at or 0.0) > now:
            return self._status(sub)  # another keeper (or call) holds it and is at work
        # The key is stored before the call: a retry after a lost answer finds it by URL. The
        # claim holds the row while the work lasts; a worker that dies holding it is
        # replaced once the hold is over (the row is then due again).
        pending = self._next_row(row, sub, now, state="pending", hold_until=now + _CLAIM_HOLD)
        if not await self.store.claim_subscription(pending, sub):
            return self._status(await self.store.get_subscription(row.id))
        url = receiver_url(self._settings, pending.key)
        try:
            async with await self._connector.client(row.id, deadline=_SYNC_DEADLINE) as client:
                # Only a key used before can already be at PagerDuty (an answer lost on the
                # way back): a new key skips listing every subscription of the account.
                retried_key = sub is not None and sub.key == pending.key
                adopted = await self._adopt(client, pending, url) if retried_key else None
                if adopted is None:
                    created = await client.post("/webhook_subscriptions", json=self._spec(url, row))
                    adopted = _entity(created)
        except ScopeError as exc:
            await self._fail(pending, "no_scope", _error_text(exc), retry=False)
        except (PdauthError, ValueError, KeyError, TypeError) as exc:
            await self._fail(pending, "failed", _error_text(exc), retry=True)
        else:
            secret = adopted["secret"]
            await self.store.update_subscription(
                row.id,
                if_key=pending.key,
                state="active",
                pd_subscription_id=adopted["id"],
                secret_ct=self._seal.seal_subscription_secret(row.id, pending.key, secret)
                if secret
                else pending.secret_ct,
                attempts=0,
                next_attempt_at=None,
                last_error=None,
                updated_at=self._clock.now(),
            )
            log.info("PagerDuty webhook subscription active", extra={"connection_id": row.id})
        return self._status(await self.store.get_subscription(row.id))

    def _spec(self, url: str, row: ConnectionRow) -> dict[str, Any]:
        return {
            "webhook_subscription": {
                "type": "webhook_subscription",
                "delivery_method": {"type": "http_delivery_method", "url": url},
                "events": list(self._settings.pagerduty_events),
                "filter": {"type": "account_reference"},
                "description": f"pdauth events for connection {row.id}",
            }
        }

    async def _adopt(
        self, client: PagerDutyClient, sub: SubscriptionRow, url: str
    ) -> dict[str, Any] | None:
        """An existing subscription with our URL: kept if we hold its secret, else deleted
        (its secret cannot be read again) so that the caller makes a new one."""
        found = [
            s
            for s in await client.list_all("/webhook_subscriptions")
            if isinstance(s, Mapping) and (s.get("delivery_method") or {}).get("url") == url
        ]
        for existing in found:
            if existing.get("id") == sub.pd_subscription_id and sub.secret_ct:
                return {"id": existing["id"], "secret": None}
        for existing in found:
            await client.delete(f"/webhook_subscriptions/{existing['id']}")
        return None

    async def _fail(self, sub: SubscriptionRow, state: str, error: str, *, retry: bool) -> None:
        attempts = sub.attempts + 1
        wait = min(RETRY_CAP, RETRY_BASE * 2.0 ** min(attempts - 1, 20))
        await self.store.update_subscription(
            sub.connection_id,
            state=state,
            attempts=attempts,
            next_attempt_at=self._clock.now() + wait if retry else None,
            last_error=error,
            updated_at=self._clock.now(),
        )
        log.info(
            "PagerDuty webhook subscription not made (%s)%s",
            error,
            f"; retry in {wait:.0f}s" if retry else "",
            extra={"connection_id": sub.connection_id},
        )

    async def reconcile(self, *, limit: int = 100) -> int:
        """One keeper pass: mark subscriptions of needs_reauth connections, then ensure every
        active connection that needs work; returns how many were looked at."""
        if not self.enabled:
            return 0
        now = self._clock.now()
        await self.store.mark_needs_reauth(now=now)
        due = await self.store.subscriptions_due(now=now, limit=limit)
        try:
            for connection_id in due:
                try:
                    await self.ensure(connection_id)
                except PdauthError as exc:
                    # One connection (deleted meanwhile, a storage hiccup) must not hold up
                    # the others, which come after it in every pass.
                    log.warning(
                        "PagerDuty webhook subscription not checked (%s)",
                        type(exc).__name__,
                        extra={"connection_id": connection_id},
                    )
        finally:
            await self.store.purge_deliveries(before=now - DEDUPE_WINDOW)
        return len(due)

    # -- status ------------------------------------------------------------------------------

    def _status(self, sub: SubscriptionRow | None) -> SubscriptionStatus:
        if sub is None:
            return SubscriptionStatus("missing" if self.enabled else "off")
        events = tuple(e for e in sub.events.split(",") if e)
        return SubscriptionStatus(
            sub.state, sub.pd_subscription_id, events, sub.last_error, sub.attempts
        )

    async def status(self, connection_id: str, *, live: bool = False) -> SubscriptionStatus:
        """The subscription's state; with ``live``, PagerDuty is asked first (``missing`` if
        it is gone there, ``disabled`` while PagerDuty has disabled it after failures)."""
        sub = await self.store.get_subscription(connection_id)
        if not live or sub is None or sub.pd_subscription_id is None:
            return self._status(sub)
        if sub.state not in ("active", "disabled"):
            return self._status(sub)
        try:
            async with await self._connector.client(connection_id) as client:
                body = await client.get(f"/webhook_subscriptions/{sub.pd_subscription_id}")
        except PagerDutyAPIError as exc:
            if exc.status != 404:
                return self._status(sub)
            await self.store.update_subscription(
                connection_id, state="failed", next_attempt_at=self._clock.now(),
                last_error="missing at PagerDuty", updated_at=self._clock.now(),
            )  # fmt: skip
            return SubscriptionStatus("missing", sub.pd_subscription_id, (), "gone at PagerDuty")
        except PdauthError:
            return self._status(sub)
        disabled = bool(((body or {}).get("webhook_subscription") or {}).get("delivery_method", {})
                        .get("temporarily_disabled"))  # fmt: skip
        state = "disabled" if disabled else "active"
        if state != sub.state:
            await self.store.update_subscription(
                connection_id, state=state, updated_at=self._clock.now()
            )
        return self._status(await self.store.get_subscription(connection_id))

    # -- unsubscribe -------------------------------------------------------------------------

    async def before_disconnect(self, row: ConnectionRow) -> bool:
        """Delete the connection's subscription now (its token still works); if that fails,
        store the outbox job that retries it (holding the access token sealed). True."""
        job = await self._unsubscribe_now(row)
        if job is not None:
            await self._connector.store.add_event(job, self._clock.now())
        return True

    async def _unsubscribe_now(self, row: ConnectionRow) -> NewEvent | None:
        sub = await self.store.get_subscription(row.id)
        if sub is None or sub.state in ("deleted", "deleting"):
            return None
        now = self._clock.now()
        if sub.pd_subscription_id is None:
            await self.store.update_subscription(row.id, state="deleted", updated_at=now)
            return None
        pd_id = sub.pd_subscription_id
        try:
            async with await self._connector.client(row.id, deadline=_SYNC_DEADLINE) as client:
                await client.delete(f"/webhook_subscriptions/{pd_id}")
        except PagerDutyAPIError as exc:
            if exc.status != 404:
                return await self._queue_unsubscribe(row, sub, pd_id, _error_text(exc))
        except PdauthError as exc:
            return await self._queue_unsubscribe(row, sub, pd_id, _error_text(exc))
        await self.store.update_subscription(
            row.id, state="deleted", pd_subscription_id=None, secret_ct=None, updated_at=now
        )
        return None

    async def _queue_unsubscribe(
        self, row: ConnectionRow, sub: SubscriptionRow, pd_id: str, error: str
    ) -> NewEvent | None:
        try:
            token = await self._connector.access_token(row.id)
        except PdauthError:
            token = None
        await self.store.update_subscription(
            row.id, state="deleting", last_error=error, updated_at=self._clock.now()
        )
        if token is None:
            return None
        return NewEvent(
            type=UNSUBSCRIBE_EVENT,
            connection_id=row.id,
            owner=row.owner,
            data={
                "pd_subscription_id": pd_id,
                "region": row.region,
                "token_ct": self._seal.seal_unsubscribe(row.id, pd_id, token),
            },
        )

    async def run_unsubscribe(self, event: EventRow) -> tuple[str, str | None]:
        """The keeper's retry of a queued deletion: ``("delivered"|"retry"|"abandoned",
        error)``. A 404 is success; a 401 (the token expired or was revoked) gives up."""
        cid, pd_id = event.connection_id, event.data.get("pd_subscription_id")
        ct, region = event.data.get("token_ct"), event.data.get("region")
        base = self._settings.api_base_urls.get(region) if isinstance(region, str) else None
        if not (cid and isinstance(pd_id, str) and isinstance(ct, str) and base):
            return "abandoned", "malformed event"
        try:
            token = self._seal.open_unsubscribe(cid, pd_id, ct)
        except CryptoError:
            return "abandoned", "does not decrypt"
        client = PagerDutyClient.from_token(token, base_url=base, http=self._http, deadline=20.0)
        try:
            async with client:
                await client.delete(f"/webhook_subscriptions/{pd_id}")
        except AuthenticationError:
            return "abandoned", "the token no longer works; delete it in PagerDuty"
        except PagerDutyAPIError as exc:
            if exc.status != 404:
                return ("retry" if exc.status >= 500 or exc.status == 429 else "abandoned"), (
                    _error_text(exc)
                )
        except PdauthError as exc:
            return "retry", _error_text(exc)
        current = await self.store.get_subscription(cid)
        if current is not None and current.pd_subscription_id in (pd_id, None):
            # Not when a reconnect has made a new subscription meanwhile.
            await self.store.update_subscription(
                cid, state="deleted", pd_subscription_id=None, secret_ct=None,
                updated_at=self._clock.now(),
            )  # fmt: skip
        return "delivered", None

    # -- receive -----------------------------------------------------------------------------

    async def receive(self, key: str, headers: Mapping[str, str], body: bytes) -> Received:
        """Check one delivery and record it (see the module docstring); never raises."""
        if len(body) > MAX_BODY:
            return Received(413, "body too large")
        try:
            sub = await self.store.subscription_by_key(key)
            row = (
                None
                if sub is None
                else await self._connector.store.get_connection(sub.connection_id)
            )
        except StoreError:
            return Received(503, "store unavailable")
        if sub is None or row is None or sub.secret_ct is None:
            return Received(404, "unknown subscription")
        if sub.state in ("deleted", "deleting") or row.status == "revoked":
            return Received(410, "subscription ended")
        try:
            secret = self._seal.open_subscription_secret(sub.connection_id, sub.key, sub.secret_ct)
        except CryptoError:
            return Received(503, "signing secret unavailable")
        if not verify([secret], headers.get(SIGNATURE_HEADER), body):
            return Received(401, "bad or missing signature")
        webhook_id = headers.get(WEBHOOK_ID_HEADER)
        event = parse_event(body)
        if not valid_webhook_id(webhook_id) or event is None or webhook_id is None:
            return Received(400, "not a v3 webhook delivery")
        return await self._record(sub, row, webhook_id, event)

    async def _record(
        self, sub: SubscriptionRow, row: ConnectionRow, webhook_id: str, event: PagerDutyEvent
    ) -> Received:
        data = {
            "pagerduty_event_id": event.id,
            "event_type": event.event_type,
            "resource_type": event.resource_type,
            "occurred_at": event.occurred_at,
            "webhook_id": webhook_id,
            "pd_subscription_id": sub.pd_subscription_id,
            "agent": _scrub(event.agent) if event.agent is not None else None,
            "resource": _scrub(event.data),
        }
        new = NewEvent(type=event.pdauth_type, connection_id=row.id, owner=row.owner, data=data)
        try:
            event_id = await self.store.record_delivery(webhook_id, sub, new, self._clock.now())
        except StoreError:
            return Received(503, "store unavailable")
        if event_id is None:
            return Received(200, "duplicate")
        return Received(
            202, "accepted", PagerDutyNotice(row.id, row.owner, event, event_id, webhook_id)
        )

    async def dispatch(self, notice: PagerDutyNotice) -> None:
        """Run the hooks for ``notice``; a failing hook is logged and the others still run."""
        for hook in list(self._hooks):
            try:
                result = hook(notice)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a host's bug must not stop the other hooks
                log.error(
                    "PagerDuty event hook failed (%s)",
                    type(exc).__name__,
                    extra={"connection_id": notice.connection_id},
                )


def _entity(body: Any) -> dict[str, Any]:
    sub = body["webhook_subscription"]
    return {"id": str(sub["id"]), "secret": str(sub["delivery_method"]["secret"])}
