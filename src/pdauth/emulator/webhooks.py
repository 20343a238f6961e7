"""PagerDuty's v3 webhooks in the emulator: subscriptions, signed events and their delivery.

:class:`WebhookHub` (one per :class:`~pdauth.emulator.state.EmulatorState`, as
``state.webhooks``) keeps the webhook subscriptions, turns incident changes into v3 events
(PagerDuty/developer-docs ``docs/webhooks/01-Overview.md``), signs each delivery with
``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>`` — one ``v1=`` entry per live
secret, comma-separated, so a rotation has an overlap (``04-Signatures.md``) — and posts it from a
background task over httpx. Retries, backoff and temporary disablement follow ``02-Behavior.md``:
no answer, a timeout, a connection failure, an expired server certificate, a 5xx or a 429 is
retried "periodically … for up to 48 hours"; any other 4xx and other TLS errors drop the webhook
at once; after 3 consecutive dropped webhooks (permanent errors or exhausted retries) the
subscription is disabled for 24 hours (``temporarily_disabled``, lifted early by
``POST /webhook_subscriptions/{id}/enable``) and its queue is dropped. Webhooks of one
subscription and resource (incident) go out in order: a retrying one holds back the later ones
for the same incident, not the others.

Time is the emulator's: a webhook due at emulator time T goes out once the clock passes T, so a
test moves a retry forward with ``POST /_emulator/clock``. Where PagerDuty is silent (the exact
backoff schedule, the ``User-Agent``, the ping payload, redirects, the queue limit) the choice is
labelled "Assumption" and is a knob of :class:`~pdauth.emulator.config.EmulatorConfig` where it
matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from pdauth.emulator.rest_support import iso

if TYPE_CHECKING:
    from pdauth.emulator.data import Incident, User
    from pdauth.emulator.rest_views import Links
    from pdauth.emulator.state import EmulatorState

__all__ = ["EVENT_TYPES", "Subscription", "WebhookHub", "signature_header"]

logger = logging.getLogger(__name__)

# 01-Overview.md "Event Types" (PagerDuty adds types over time; unknown ones are refused).
EVENT_TYPES = (
    "incident.acknowledged",
    "incident.annotated",
    "incident.delegated",
    "incident.escalated",
    "incident.priority_updated",
    "incident.reassigned",
    "incident.reopened",
    "incident.resolved",
    "incident.responder.added",
    "incident.responder.replied",
    "incident.status_update_published",
    "incident.triggered",
    "incident.unacknowledged",
    "service.created",
    "service.deleted",
    "service.updated",
)
STATS_KEYS = ("events", "attempts", "delivered", "failed", "retries", "disabled", "dropped")
MAX_WAIT = 1.0  # the worker re-reads the clock at least this often (a clock moved elsewhere)


def signature_header(secrets_: list[str], body: bytes) -> str:
    """``v1=<hex>`` per secret, comma-separated, as 04-Signatures.md specifies."""
    return ",".join(
        "v1=" + hmac.new(s.encode("utf-8"), body, hashlib.sha256).hexdigest() for s in secrets_
    )


@dataclass
class Subscription:
    """One v3 webhook subscription of an account. ``secrets[0]`` is the current secret; more
    than one while a rotation overlaps (each signs its own ``v1=`` entry)."""

    id: str
    account_id: str
    url: str
    events: tuple[str, ...]
    filter_type: str
    filter_id: str
    delivery_method_id: str
    secrets: list[str] = field(repr=False)
    custom_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    description: str = ""
    active: bool = True
    client_id: str | None = None
    disabled_until: float | None = None
    consecutive_failures: int = 0

    def temporarily_disabled(self, now: float) -> bool:
        return self.disabled_until is not None and now < self.disabled_until


@dataclass
class _Delivery:
    webhook_id: str
    subscription_id: str
    body: bytes = field(repr=False)
    due_at: float
    attempt: int = 1
    first_attempt_at: float | None = None


# One delivery queue per subscription and resource (02-Behavior.md: later webhooks "for this
# extension or subscription and resource ID will be queued" behind a retrying one).
QueueKey = tuple[str, str]


class WebhookHub:
    """Subscriptions, queued deliveries and the task that sends them, over one emulator state.

    ``transport`` (an ``httpx.AsyncBaseTransport``) is where deliveries go: ``None`` posts over
    the network; a test sets an ``httpx.ASGITransport`` around an in-process receiver before the
    first delivery. Mutations happen on the event loop; counters are read under a lock.
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.subscriptions: dict[str, Subscription] = {}
        self.transport: httpx.AsyncBaseTransport | None = None
        self.bad_signatures = 0  # the next N attempts carry a wrong signature (control API)
        self._queues: dict[QueueKey, deque[_Delivery]] = {}
        self._busy: set[QueueKey] = set()
        self._inflight: set[asyncio.Task[None]] = set()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        state.clock.on_advance(self._nudge)

    # -- subscriptions ---------------------------------------------------------------------

    def add(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.id] = subscription

    def remove(self, subscription_id: str) -> bool:
        self._drop_queues(subscription_id)
        return self.subscriptions.pop(subscription_id, None) is not None

    def of_account(self, account_id: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.account_id == account_id]

    def enable(self, subscription: Subscription) -> None:
        """PagerDuty's ``POST /webhook_subscriptions/{id}/enable``: lift a temporary disable."""
        subscription.disabled_until = None
        subscription.consecutive_failures = 0

    def rotate_secret(self, subscription: Subscription, *, keep_old: bool = True) -> str:
        """A new current secret; with ``keep_old`` the old ones keep signing (overlap)."""
        new = new_secret()
        subscription.secrets = [new, *subscription.secrets] if keep_old else [new]
        return new

    def retire_secrets(self, subscription: Subscription) -> None:
        """End a rotation's overlap: only the newest secret signs from now on."""
        subscription.secrets = subscription.secrets[:1]

    def reset(self) -> None:
        self.subscriptions.clear()
        self._queues.clear()
        self.bad_signatures = 0
        with self._lock:
            self._counts.clear()

    def stats(self) -> dict[str, int]:
        """The ``webhooks`` entry of ``GET /_emulator/stats``."""
        with self._lock:
            counts = {key: self._counts[key] for key in STATS_KEYS}
        counts["pending"] = sum(len(q) for q in list(self._queues.values()))
        counts["subscriptions"] = len(self.subscriptions)
        return counts

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # -- events ----------------------------------------------------------------------------

    def emit_incident(
        self, links: Links, incident: Incident, event_type: str, agent: User | None
    ) -> int:
        """Queue ``event_type`` about ``incident`` for every matching subscription; returns how
        many webhooks were queued."""
        service = links.directory.services[incident.service_id]
        targets = [
            s
            for s in self.of_account(incident.account_id)
            if event_type in s.events
            and (
                s.filter_type == "account_reference"
                or (s.filter_type == "service_reference" and s.filter_id == service.id)
                or (s.filter_type == "team_reference" and s.filter_id in service.team_ids)
            )
        ]
        if not targets:
            return 0
        event = {
            "id": str(uuid.uuid4()),
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": iso(self.state.clock.now(), millis=True),
            "agent": links.user_ref(agent.id) if agent is not None else None,
            # Assumption: changes made through the REST API name no client; PagerDuty's
            # example shows {"name": "PagerDuty"} for changes made in its own UI.
            "client": None,
            "data": incident_data(links, incident),
        }
        self._count("events")
        return sum(self._enqueue(s, incident.id, {"event": event}) for s in targets)

    def ping(self, subscription: Subscription) -> bool:
        """``pagey.ping`` (``POST /webhook_subscriptions/{id}/ping``), whatever the events list.
        Assumption: the payload shape PagerDuty's pings are commonly seen with."""
        event = {
            "id": str(uuid.uuid4()),
            "event_type": "pagey.ping",
            "resource_type": "pagey",
            "occurred_at": iso(self.state.clock.now(), millis=True),
            "agent": None,
            "client": None,
            "data": {"message": "Hello from your friend Pagey!", "type": "ping"},
        }
        self._count("events")
        return self._enqueue(subscription, "pagey", {"event": event})

    def _enqueue(self, subscription: Subscription, resource: str, payload: dict[str, Any]) -> bool:
        now = self.state.clock.now()
        if not subscription.active:
            return False
        if subscription.temporarily_disabled(now):
            # 02-Behavior.md: "While an extension is disabled, no new webhooks will be enqueued"
            self._count("dropped")
            return False
        if subscription.disabled_until is not None:  # the 24 hours are over
            self.enable(subscription)
        queue = self._queues.setdefault((subscription.id, resource), deque())
        if len(queue) >= self.state.config.webhook_queue_limit:
            self._count("dropped")
            return False
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        queue.append(_Delivery(str(uuid.uuid4()), subscription.id, body, due_at=now))
        self._kick()
        return True

    # -- the delivery task -----------------------------------------------------------------

    def _kick(self) -> None:
        """Start the delivery task on the running loop if it is not running there; wake it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop: the next call on it starts the task
            return
        if self._task is None or self._task.done() or self._loop is not loop:
            # A task on a loop that is gone left its attempts unfinished: forget them.
            if self._loop is not loop:
                self._busy.clear()
                self._inflight.clear()
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._run(), name="pdauth-emulator-webhooks")
        assert self._wake is not None
        self._wake.set()

    def _nudge(self) -> None:
        """The clock moved (from any thread): let the task look at what became due."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    async def aclose(self) -> None:
        """Stop the delivery task (queued webhooks stay queued)."""
        task, self._task = self._task, None
        for pending in [task, *self._inflight]:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    async def _run(self) -> None:
        config = self.state.config
        async with httpx.AsyncClient(
            transport=self.transport, timeout=config.webhook_timeout, follow_redirects=False
        ) as client:
            while True:
                wake = self._wake
                assert wake is not None
                wake.clear()
                wait = self._start_due(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)

    def _start_due(self, client: httpx.AsyncClient) -> float | None:
        """Start one attempt per queue whose head is due; seconds until the next is due."""
        now = self.state.clock.now()
        next_due: float | None = None
        for key, queue in list(self._queues.items()):
            if not queue:
                del self._queues[key]
                continue
            if key in self._busy:
                continue
            if queue[0].due_at <= now:
                self._busy.add(key)
                task = asyncio.get_running_loop().create_task(self._attempt(client, key))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            else:
                next_due = queue[0].due_at if next_due is None else min(next_due, queue[0].due_at)
        if next_due is None:
            return None
        return min(max(next_due - now, 0.0), MAX_WAIT)

    async def _attempt(self, client: httpx.AsyncClient, key: QueueKey) -> None:
        """Send the queue's webhooks in order while they are due (one at a time)."""
        try:
            while True:
                queue = self._queues.get(key)
                subscription = self.subscriptions.get(key[0])
                if not queue or subscription is None or queue[0].due_at > self.state.clock.now():
                    return
                delivery = queue[0]
                if delivery.first_attempt_at is None:
                    delivery.first_attempt_at = self.state.clock.now()
                outcome = await self._post(client, subscription, delivery)
                self._settle(subscription, queue, outcome)
        except Exception:
            logger.exception("emulator webhook delivery failed unexpectedly")
        finally:
            self._busy.discard(key)
            left = self._queues.get(key)
            if left is not None and not left:
                del self._queues[key]
            elif left and self._wake is not None:
                self._wake.set()  # a retry is scheduled: the task times it

    async def _post(
        self, client: httpx.AsyncClient, subscription: Subscription, delivery: _Delivery
    ) -> str:
        """One attempt: ``ok``, ``retry`` or ``drop`` (02-Behavior.md's rules)."""
        config = self.state.config
        keys = subscription.secrets
        if config.webhook_bad_signatures or self.bad_signatures > 0:
            self.bad_signatures = max(0, self.bad_signatures - 1)
            keys = [new_secret() for _ in keys]  # well-formed, but signed with the wrong key
        headers = {
            **dict(subscription.custom_headers),
            "Content-Type": "application/json",
            "User-Agent": config.webhook_user_agent,
            "X-PagerDuty-Signature": signature_header(keys, delivery.body),
            "X-Webhook-Id": delivery.webhook_id,
            "X-Webhook-Subscription": subscription.id,
        }
        self._count("attempts")
        try:
            response = await client.post(subscription.url, content=delivery.body, headers=headers)
        except httpx.ConnectError as exc:
            # 02-Behavior.md: a connection that cannot be established is retried, and so is an
            # expired server certificate; other TLS errors are permanent.
            return _connect_outcome(exc)
        except httpx.TransportError:
            return "retry"  # timeouts, resets, protocol errors: "no response / timeout"
        if 200 <= response.status_code < 300:
            return "ok"
        if response.status_code == 429 or response.status_code >= 500:
            return "retry"
        # Assumption: 3xx (redirects are not followed) are dropped like a 4xx.
        return "drop"

    def _settle(self, subscription: Subscription, queue: deque[_Delivery], outcome: str) -> None:
        config = self.state.config
        delivery = queue[0]
        now = self.state.clock.now()
        if outcome == "ok":
            self._count("delivered")
            subscription.consecutive_failures = 0
        elif outcome == "retry" and self._may_retry(delivery, now):
            delays = config.webhook_retry_delays
            delay = delays[min(delivery.attempt, len(delays)) - 1] * config.webhook_retry_scale
            delivery.attempt += 1
            delivery.due_at = now + delay
            self._count("retries")
            return  # stays at the head: later webhooks for this resource wait (ordering)
        else:
            self._count("failed")
            # 02-Behavior.md: permanent errors and exhausted retries both count.
            subscription.consecutive_failures += 1
            if subscription.consecutive_failures >= config.webhook_disable_after:
                self._disable(subscription, now)
                return
        if queue and queue[0] is delivery:
            queue.popleft()

    def _may_retry(self, delivery: _Delivery, now: float) -> bool:
        """Within the attempt cap (if any) and the retry window (48 h) from the first try."""
        config = self.state.config
        if (
            config.webhook_max_attempts is not None
            and delivery.attempt >= config.webhook_max_attempts
        ):
            return False
        delays = config.webhook_retry_delays
        delay = delays[min(delivery.attempt, len(delays)) - 1] * config.webhook_retry_scale
        first = delivery.first_attempt_at if delivery.first_attempt_at is not None else now
        return now + delay <= first + config.webhook_retry_window * config.webhook_retry_scale

    def _drop_queues(self, subscription_id: str) -> int:
        keys = [k for k in self._queues if k[0] == subscription_id]
        return sum(len(self._queues.pop(k)) for k in keys)

    def _disable(self, subscription: Subscription, now: float) -> None:
        subscription.disabled_until = now + self.state.config.webhook_disable_for
        self._count("disabled")
        dropped = self._drop_queues(subscription.id)
        self._count("dropped", max(0, dropped - 1))  # the head was counted as failed
        logger.info("webhook subscription %s temporarily disabled", subscription.id)


def new_secret() -> str:
    """A strong unique signing secret (04-Signatures.md); its format is our assumption."""
    return secrets.token_urlsafe(48)


# OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED: the one TLS failure PagerDuty retries.
_CERT_EXPIRED = 10


def _connect_outcome(exc: BaseException) -> str:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "retry" if seen.verify_code == _CERT_EXPIRED else "drop"
        if isinstance(seen, ssl.SSLError):
            return "drop"
        seen = seen.__cause__ or seen.__context__
    return "retry"


def incident_data(links: Links, incident: Incident) -> dict[str, object]:
    """The ``incident`` event data type of 01-Overview.md."""
    service = links.directory.services[incident.service_id]
    return {
        "id": incident.id,
        "type": "incident",
        "self": f"{links.api}/incidents/{incident.id}",
        "html_url": f"{links.web}/incidents/{incident.id}",
        "number": incident.incident_number,
        "status": incident.status,
        "incident_key": incident.incident_key,
        "created_at": iso(incident.created_at),
        "title": incident.title,
        "service": links.service_ref(service.id),
        "assignees": [links.user_ref(u) for u in incident.assignee_ids],
        "escalation_policy": links.policy_ref(incident.escalation_policy_id),
        "teams": [links.team_ref(t) for t in service.team_ids],
        "priority": None,
        "urgency": incident.urgency,
        "conference_bridge": None,
        "resolve_reason": None,
    }
