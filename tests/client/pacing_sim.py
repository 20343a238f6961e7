"""A discrete-event simulation of concurrent workers pacing against a fixed-window rate limiter.

No real time passes: the simulation drives :class:`pdauth.client.pacing.PacingState` with its
own clock, a server that counts requests per window and reports ``ratelimit-*`` headers with a
chosen rounding of ``reset``, and random network delays (so requests may overtake each other).
Used by the pacing tests to check "never a 429 while headers are present" and the achieved
rate over many configurations.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pdauth.client.pacing import PacingState, RateLimitHeaders, Ticket

Rounding = Literal["ceil", "floor", "round", "float"]


class Pacing(Protocol):
    """What the simulation drives: :class:`PacingState` or an adapter with the same rules."""

    @property
    def in_flight(self) -> int: ...

    def try_acquire(self, now: float) -> Ticket | float: ...

    def observe(
        self, ticket: Ticket, now: float, headers: RateLimitHeaders | None, status: int
    ) -> None: ...

    def block(self, until: float) -> None: ...


@dataclass
class FixedWindowServer:
    """Counts requests per window; ``aligned`` windows tick on multiples of ``window`` (plus
    ``phase``), otherwise a window starts with the first request after the previous one ended."""

    limit: int
    window: float
    rounding: Rounding = "ceil"
    aligned: bool = False
    phase: float = 0.0
    drop_headers_on_429: bool = False
    window_end: float = -math.inf
    count: int = 0
    rejected: int = 0
    accepted: int = 0

    def handle(self, t: float) -> tuple[int, RateLimitHeaders | None]:
        if t >= self.window_end:
            if self.aligned:
                k = math.floor((t - self.phase) / self.window) + 1
                self.window_end = self.phase + k * self.window
            else:
                self.window_end = t + self.window
            self.count = 0
        if self.count >= self.limit:
            self.rejected += 1
            status = 429
        else:
            self.count += 1
            self.accepted += 1
            status = 200
        if status == 429 and self.drop_headers_on_429:
            return status, None
        left = self.window_end - t
        reset: float
        if self.rounding == "ceil":
            reset = float(math.ceil(left))
        elif self.rounding == "floor":
            reset = float(math.floor(left))
        elif self.rounding == "round":
            reset = float(round(left))
        else:
            reset = round(left, 3)
        return status, RateLimitHeaders(self.limit, self.limit - self.count, reset)


@dataclass
class SimResult:
    completed: int
    rejected: int
    started: float
    finished: float
    longest_wait: float
    longest_sleep: float
    done_at: list[float] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    def steady_rate(self, limit: int) -> float:
        """Requests per second between the first and the last completed full window of
        ``limit`` requests (start-up and the tail are left out)."""
        first, last = self.done_at[limit - 1], self.done_at[-1]
        n = len(self.done_at) - limit
        return n / (last - first) if last > first else math.inf


def simulate(
    server: FixedWindowServer,
    *,
    workers: int,
    requests: int,
    latency: tuple[float, float] = (0.0005, 0.002),
    seed: int = 0,
    start: float = 1000.0,
    state: Pacing | None = None,
    backoff: float = 0.5,
) -> SimResult:
    """Run ``requests`` successful requests through ``workers`` concurrent workers.

    Waiting workers queue in FIFO order and only the head asks the pacer, as the real pacer
    does with its per-credential lock. A 429 is retried the way the client does: wait
    ``ratelimit-reset`` (or ``backoff``), then queue again.
    """
    rng = random.Random(seed)
    pacing: Pacing = state if state is not None else PacingState()
    events: list[tuple[float, int, str, int, Ticket | None]] = []
    order = 0
    head_generation = 0
    queue: list[tuple[int, float]] = []  # (worker, queued at), FIFO
    longest_wait = 0.0
    longest_sleep = 0.0
    completed = 0
    issued = 0
    finished = start
    done_at: list[float] = []

    def push(t: float, kind: str, worker: int, ticket: Ticket | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, worker, ticket))

    def wake_head(t: float) -> None:
        nonlocal head_generation
        head_generation += 1
        if queue:
            push(t, "try", head_generation)

    pending_results: dict[int, tuple[int, RateLimitHeaders | None]] = {}
    for w in range(workers):
        queue.append((w, start))
    wake_head(start)
    while events:
        t, _, kind, w, ticket = heapq.heappop(events)
        if kind == "try":
            if w != head_generation or not queue:
                continue  # a stale wake-up
            worker, queued_at = queue[0]
            if issued >= requests:
                queue.clear()
                continue
            decision = pacing.try_acquire(t)
            if isinstance(decision, Ticket):
                queue.pop(0)
                issued += 1
                longest_wait = max(longest_wait, t - queued_at)
                push(t + rng.uniform(*latency), "arrive", worker, decision)
                wake_head(t)
            elif math.isfinite(decision):
                longest_sleep = max(longest_sleep, decision)
                push(t + decision, "try", head_generation)
            else:
                assert pacing.in_flight > 0, "waiting for an answer that cannot come"
        elif kind == "arrive":
            assert ticket is not None
            pending_results[ticket.seq] = server.handle(t)
            push(t + rng.uniform(*latency), "response", w, ticket)
        else:
            assert ticket is not None
            status, headers = pending_results.pop(ticket.seq)
            pacing.observe(ticket, t, headers, status)
            if status == 429:
                issued -= 1
                wait = headers.reset if headers is not None else backoff
                pacing.block(t + wait)
            else:
                completed += 1
                finished = t
                done_at.append(t)
            queue.append((w, t))
            wake_head(t)  # an answer may unblock the head of the queue
    return SimResult(
        completed=completed,
        rejected=server.rejected,
        started=start,
        finished=finished,
        longest_wait=longest_wait,
        longest_sleep=longest_sleep,
        done_at=done_at,
    )
