"""When to try a PagerDuty call again and how long to wait first, as pure functions.

Rules (RFC 9110 §9.2.2 for idempotency, §10.2.3 for ``Retry-After``):

- A connection that was never established (connect error, connect or pool timeout) means the
  request surely was not sent: any method may be retried.
- A timeout or broken connection after sending, or a 5xx answer, leaves the outcome unknown:
  only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) are retried, unless the caller
  marks the call idempotent (or explicitly not).
- A 429 waits ``ratelimit-reset`` when PagerDuty sent it, else ``Retry-After``, else a capped
  exponential backoff with jitter; never longer than ``throttle_cap`` (PagerDuty's window).
- Every backoff is "equal jitter": half fixed, half random, so that a crowd of clients spreads
  out but nobody retries at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

from pdauth.client.pacing import RateLimitHeaders

__all__ = [
    "IDEMPOTENT_METHODS",
    "FailureKind",
    "RetryPolicy",
    "parse_retry_after",
    "should_retry",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: ``not_sent``: the connection was never made; ``unknown``: sent, but no complete answer;
#: ``server_error``: PagerDuty (or a proxy in front of it) answered 5xx.
FailureKind = Literal["not_sent", "unknown", "server_error"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``retries`` bounds the extra attempts after 5xx answers and transport failures. 429s are
    bounded by the call's deadline instead (each wait is capped by ``throttle_cap``).
    """

    retries: int = 3
    backoff_base: float = 0.25
    backoff_cap: float = 8.0
    throttle_base: float = 1.0
    throttle_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        for name in ("backoff_base", "backoff_cap", "throttle_base", "throttle_cap"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (0-based) after a failure; ``rand`` in [0, 1)."""
        return _equal_jitter(self.backoff_base, self.backoff_cap, attempt, rand)

    def throttle_delay(
        self,
        headers: RateLimitHeaders | None,
        retry_after: float | None,
        attempt: int,
        rand: float,
    ) -> float:
        """Delay after a 429: ``ratelimit-reset``, else ``Retry-After``, else backoff."""
        if headers is not None:
            delay = headers.reset
        elif retry_after is not None:
            delay = retry_after
        else:
            delay = _equal_jitter(self.throttle_base, self.throttle_cap, attempt, rand)
        return min(max(delay, 0.0), self.throttle_cap)


def _equal_jitter(base: float, cap: float, attempt: int, rand: float) -> float:
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return ceiling / 2.0 + ceiling / 2.0 * min(max(rand, 0.0), 1.0)


def should_retry(method: str, kind: FailureKind, idempotent: bool | None = None) -> bool:
    """Whether a failed attempt may be sent again (the attempt budget is checked elsewhere)."""
    if kind == "not_sent":
        return True
    if idempotent is not None:
        return idempotent
    return method.upper() in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date, RFC 9110
    §10.2.3) at wall-clock time ``now``; None when absent or malformed."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - now)
