"""Pacing shared by every client of a process: the :class:`Pacer` port and :class:`LocalPacer`.

PagerDuty counts requests per credential, so pacing state is kept per ``pacing_key`` and shared
by all clients using that key; many short-lived clients for one connection then share one
budget instead of each believing it has the whole of it. :data:`DEFAULT_PACER` is that
process-wide registry; :class:`~pdauth.client.redis_pacer.RedisPacer` extends the sharing to
other processes and machines.

:class:`LocalPacer` wraps the pure :class:`~pdauth.client.pacing.PacingState` with the waiting:
callers for one key queue fairly (an ``anyio.Lock`` is FIFO) and only the head of the queue
sleeps, woken early when a response changes the picture. The per-credential concurrency limit
is enforced with the same in-flight accounting. The state itself sits behind a
``threading.Lock`` so that clients on different event loops (the sync facade runs its own)
still share it, limit included; wake-ups are per event loop, and waiters on other loops
notice changes within :data:`POLL_INTERVAL`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.lowlevel import RunVar

from pdauth.client.pacing import PacingState, RateLimitHeaders, Ticket
from pdauth.clock import Clock, SystemClock
from pdauth.errors import DeadlineExceededError

__all__ = [
    "DEFAULT_PACER",
    "POLL_INTERVAL",
    "LocalPacer",
    "Pacer",
    "SleepFn",
    "concurrency_limiter",
]

SleepFn = Callable[[float], Awaitable[None]]

#: Longest a waiter sleeps without looking at the state again (changes made on another event
#: loop, or by another process through Redis, do not wake it).
POLL_INTERVAL = 0.25


class Pacer(Protocol):
    """Decides when a request for a credential may go out, from what responses reported."""

    async def acquire(
        self, key: str, *, max_wait: float, max_concurrency: int | None = None
    ) -> Ticket:
        """Wait for a send slot (and one of ``max_concurrency`` concurrent requests on ``key``);
        raise DeadlineExceededError rather than wait past ``max_wait`` seconds."""
        ...

    async def complete(
        self, key: str, ticket: Ticket, *, status: int, headers: RateLimitHeaders | None
    ) -> None:
        """The request of ``ticket`` got an answer with this status and these headers."""
        ...

    async def abandon(self, key: str, ticket: Ticket) -> None:
        """The request of ``ticket`` got no answer (its budget stays spent)."""
        ...

    async def block(self, key: str, seconds: float) -> None:
        """Send nothing on ``key`` for ``seconds`` (after a 429 that did not say when)."""
        ...


@dataclass
class _LoopLocal:
    """Per event loop, per key: the FIFO queue lock and the "something changed" event."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class LocalPacer:
    """Header-driven pacing for all clients of this process (see :mod:`pdauth.client.pacing`).

    ``clock`` and ``sleep`` are injectable so tests can move time themselves; with a custom
    ``sleep`` a waiter is not woken early by responses (it re-checks after each sleep).
    """

    def __init__(self, *, clock: Clock | None = None, sleep: SleepFn | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._mutex = threading.Lock()
        self._states: dict[str, PacingState] = {}
        self._queued: dict[str, int] = {}  # callers waiting per key, on any event loop
        self._local: RunVar[dict[str, _LoopLocal]] = RunVar(f"pdauth-pacer-{id(self)}")

    def state(self, key: str) -> PacingState:
        """The pacing state of ``key`` (created empty); for inspection and tests."""
        state = self._states.get(key)
        if state is None:
            with self._mutex:
                state = self._states.setdefault(key, PacingState())
        return state

    def clear(self) -> None:
        """Forget every credential's pacing state (tests that reuse credentials against a
        fresh server; in production the state heals by itself within one window)."""
        with self._mutex:
            self._states.clear()

    def _loop_local(self, key: str) -> _LoopLocal:
        try:
            table = self._local.get()
        except LookupError:
            table = {}
            self._local.set(table)
        local = table.get(key)
        if local is None:
            local = table[key] = _LoopLocal()
        return local

    async def acquire(
        self, key: str, *, max_wait: float, max_concurrency: int | None = None
    ) -> Ticket:
        state = self.state(key)
        now = self._clock.monotonic()
        if not self._queued.get(key):
            # Nobody is queued: no fairness to keep, so try without queueing.
            with self._mutex:
                decision = state.try_acquire(now, max_concurrency)
            if isinstance(decision, Ticket):
                return decision
        deadline = now + max(0.0, max_wait)
        local = self._loop_local(key)
        with self._mutex:
            self._queued[key] = self._queued.get(key, 0) + 1
        try:
            return await self._queue(state, local, deadline, max_concurrency)
        finally:
            with self._mutex:
                self._queued[key] -= 1

    async def _queue(
        self, state: PacingState, local: _LoopLocal, deadline: float, max_concurrency: int | None
    ) -> Ticket:
        async with local.lock:
            while True:
                now = self._clock.monotonic()
                with self._mutex:
                    decision = state.try_acquire(now, max_concurrency)
                if isinstance(decision, Ticket):
                    return decision
                left = deadline - now
                if decision > left:
                    if math.isfinite(decision):
                        raise DeadlineExceededError(
                            f"rate-limit pacing needs {decision:.2f}s before the next request "
                            f"but the call's deadline leaves {max(left, 0.0):.2f}s"
                        )
                    if left <= 0:
                        raise DeadlineExceededError(
                            "the call's deadline passed while waiting for PagerDuty to report "
                            "its rate limit"
                        )
                await self._wait(local, min(decision, left, POLL_INTERVAL))

    async def _wait(self, local: _LoopLocal, seconds: float) -> None:
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        with anyio.move_on_after(seconds):
            await local.changed.wait()

    async def complete(
        self, key: str, ticket: Ticket, *, status: int, headers: RateLimitHeaders | None
    ) -> None:
        state = self.state(key)
        with self._mutex:
            state.observe(ticket, self._clock.monotonic(), headers, status)
        self._wake(key)

    async def abandon(self, key: str, ticket: Ticket) -> None:
        state = self.state(key)
        with self._mutex:
            state.forget(ticket)
        self._wake(key)

    def _wake(self, key: str) -> None:
        if self._queued.get(key):  # only a queued caller ever waits on the event
            self._loop_local(key).notify()

    async def block(self, key: str, seconds: float) -> None:
        state = self.state(key)
        with self._mutex:
            state.block(self._clock.monotonic() + max(0.0, seconds))


#: The process-wide pacer clients use unless given another.
DEFAULT_PACER = LocalPacer()

_LIMITERS: RunVar[dict[str, anyio.CapacityLimiter]] = RunVar("pdauth-concurrency")


def concurrency_limiter(key: str, limit: int) -> anyio.CapacityLimiter:
    """A per-credential concurrency limiter of the running event loop (for pacers whose state
    is elsewhere, like Redis; :class:`LocalPacer` counts in-flight requests in its state).

    The first caller for a key sets the limit; later callers share the existing limiter.
    """
    try:
        table = _LIMITERS.get()
    except LookupError:
        table = {}
        _LIMITERS.set(table)
    limiter = table.get(key)
    if limiter is None:
        limiter = table[key] = anyio.CapacityLimiter(limit)
    return limiter
