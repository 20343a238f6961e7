"""Per-credential request budget for the emulated REST API (PagerDuty/developer-docs,
REST-API 04-Rate-Limits.md).

PagerDuty allows 960 requests per minute and reports the budget on every response in
``ratelimit-limit``, ``ratelimit-remaining`` and ``ratelimit-reset`` (seconds until the budget
refills); over it, ``429`` with ``{"error": {"message": "Rate Limit Exceeded", "code": 2020}}``,
and "in exceptional scenarios" a 429 with neither headers nor body. PagerDuty does not say how
its window moves; the emulator uses a **fixed window** that opens at a credential's first
request and lasts ``rate_window`` seconds (assumption), timed by the emulator clock so tests can
jump it. Buckets are keyed by a SHA-256 digest of the presented credential, never the
credential itself. Refused requests do not consume budget.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateDecision", "RateLimiter"]


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one request against its bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds until the window closes, at least 1
    headerless: bool = False  # a refused request served without headers or body

    def headers(self) -> dict[str, str]:
        return {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(self.reset),
        }


@dataclass
class _Window:
    opened_at: float
    count: int


class RateLimiter:
    """Fixed-window counters, one per credential.

    ``drop_headers`` is the fraction of refusals served header-less; which ones is drawn from a
    ``random.Random(seed)``, so a run is reproducible.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        clock: Callable[[], float],
        drop_headers: float = 0.0,
        seed: int = 1,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("window must be a positive number of seconds")
        if not 0.0 <= drop_headers <= 1.0:
            raise ValueError("drop_headers must be a fraction in [0, 1]")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._drop_headers = drop_headers
        self._rng = random.Random(f"ratelimit-{seed}")  # noqa: S311 - reproducible, not secret
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key_for(credential: str) -> str:
        return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()

    def hit(self, credential: str) -> RateDecision:
        """Count one request for ``credential`` and say whether it may proceed."""
        key = self.key_for(credential)
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window.opened_at + self.window:
                if len(self._windows) > 10_000:
                    self._forget_closed(now)
                window = _Window(opened_at=now, count=0)
                self._windows[key] = window
            reset = max(1, math.ceil(window.opened_at + self.window - now))
            if window.count >= self.limit:
                headerless = self._drop_headers > 0 and self._rng.random() < self._drop_headers
                return RateDecision(False, self.limit, 0, reset, headerless=headerless)
            window.count += 1
            return RateDecision(True, self.limit, self.limit - window.count, reset)

    def reset(self) -> None:
        """Forget every bucket (a fresh emulator budget)."""
        with self._lock:
            self._windows.clear()

    def _forget_closed(self, now: float) -> None:
        # Keep memory bounded when many throwaway credentials are presented.
        closed = [k for k, w in self._windows.items() if now >= w.opened_at + self.window]
        for k in closed:
            del self._windows[k]
