"""Rate-limit pacing as pure logic: given PagerDuty's ``ratelimit-*`` headers and clock readings,
decide when the next request for one credential may be sent.

PagerDuty counts requests per credential in fixed windows and reports, on every response,
``ratelimit-limit``, ``ratelimit-remaining`` (after this request) and ``ratelimit-reset``
(seconds until the window resets, usually an integer whose rounding is not documented). This
module turns those reports into an admission decision without doing any I/O or reading the
time itself, so that every rule can be tested with plain numbers.

The model, in four rules:

1. *Accounting, not hope.* Every admitted request gets a sequence number. A response for request
   ``s`` that says ``remaining = R`` means the server will accept requests up to sequence
   ``R + s`` in this window, minus older requests still in flight (they may be counted after
   ``s``). The smallest such *ceiling* seen in a window wins, so a burst of concurrent calls can
   never overshoot what the server said is left.
2. *Bounds on the window's end.* Each response brackets the end of its window between
   ``sent + reset - slack`` and ``received + reset + slack`` (``slack`` is one second when
   ``reset`` is an integer, since the server may floor, ceil or round it). Intersecting the
   brackets of a window gives a tight upper bound; a response whose bracket lies wholly after
   it belongs to a new window and re-bases the ceiling.
3. *Spread, don't burst.* The budget left (minus one reserved request) is spread evenly over the
   time left until the estimated end of the window: "spread what ``ratelimit-remaining``
   allows over ``ratelimit-reset``".
4. *Probe the rollover with the reserve.* When only the reserved request is left, one probe is
   sent at the estimated end of the window. If the window had not rolled over yet, the probe
   still fits (it was reserved) and its answer says exactly how long to wait; if it had, the
   answer re-bases the budget. When even the reserve is spent, the next probe waits for the
   guaranteed end of the window. The estimate is calibrated at every observed rollover, so a
   server that ceils ``reset`` does not cost a second per window; before the first rollover,
   one extra probe goes out where a ceiled ``reset`` would end the window (floor and ceil
   read the same until then) and the budget is spread up to that point, so the first window
   costs a round trip over the ideal, not a second. If the server floors or rounds instead,
   that probe comes back from the old window: the budget then runs out up to a second early,
   once, and no early probe is tried again.

With no headers seen yet, one probe request goes first and the others wait for its answer; if
the server answers successfully without headers, pacing is off and only the concurrency limit
(``max_in_flight``, counted with the same in-flight list) applies. A 429 without headers or
with ``Retry-After`` blocks the credential for a while (:meth:`PacingState.block`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "PacingState",
    "RateLimitHeaders",
    "Ticket",
    "parse_ratelimit_headers",
]

#: How far an integer ``ratelimit-reset`` may be from the true time left (floor, ceil or round).
INTEGER_RESET_SLACK = 1.0
#: For a fractional ``reset`` the server told the exact time left; allow for float noise only.
FRACTIONAL_RESET_SLACK = 0.001
#: A rollover bracket wider than this is too coarse to calibrate the window-end estimate from.
MAX_CALIBRATION_BRACKET = 0.5
#: Bounds of the safety margin added to the estimated window end before probing.
MIN_MARGIN = 0.005
MAX_MARGIN = 0.25
#: Waits shorter than this count as none (float rounding must not leave a caller spinning).
MIN_WAIT = 1e-6
#: How many extra requests to hold back at most after 429s that the accounting did not predict.
MAX_EXTRA_RESERVE = 8


@dataclass(frozen=True)
class RateLimitHeaders:
    """The three ``ratelimit-*`` values of one response."""

    limit: int
    remaining: int
    reset: float


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """Read ``ratelimit-limit``/``-remaining``/``-reset`` (keys in lower case); None if any is
    missing, malformed, negative or non-finite (PagerDuty may send a 429 with no headers)."""
    try:
        limit = int(headers["ratelimit-limit"].strip())
        remaining = int(headers["ratelimit-remaining"].strip())
        reset = float(headers["ratelimit-reset"].strip())
    except (KeyError, ValueError, AttributeError):
        return None
    if limit <= 0 or remaining < 0 or not math.isfinite(reset) or reset < 0:
        return None
    return RateLimitHeaders(limit=limit, remaining=min(remaining, limit), reset=reset)


@dataclass(frozen=True)
class Ticket:
    """One admitted request: its sequence number, when it was admitted, and whether it probes."""

    seq: int
    sent_at: float
    probe: bool = False


@dataclass
class PacingState:
    """The pacing state of one credential (mutable; the caller serialises access).

    Times are seconds on one monotonic clock chosen by the caller. ``try_acquire`` either
    admits (returns a :class:`Ticket`) or says how long to wait (``math.inf``: until some
    response arrives). Every ticket must later be passed to :meth:`observe` (a response
    arrived) or :meth:`forget` (no response).
    """

    limit: int | None = None
    ceiling: int = 0
    last_seq: int = 0
    lo: float = -math.inf
    hi: float = math.inf
    offset: float = 0.0
    margin: float = 0.05
    next_slot: float = -math.inf
    blocked_until: float = -math.inf
    headerless: bool = False
    extra_reserve: int = 0
    probe: int | None = None
    calibrated: bool = False
    integral_reset: bool = False
    early_probed: bool = False
    early_failed: bool = False
    window_last_send: float = -math.inf
    inflight: list[int] = field(default_factory=list)

    # -- admission -------------------------------------------------------------------------

    def try_acquire(self, now: float, max_in_flight: int | None = None) -> Ticket | float:
        """Admit a request now, or return the seconds to wait before asking again.

        ``max_in_flight`` is the per-credential concurrency limit: with that many requests
        unanswered, the next one waits for an answer.
        """
        if self.blocked_until - now > MIN_WAIT:
            return self.blocked_until - now
        if max_in_flight is not None and len(self.inflight) >= max_in_flight:
            return math.inf
        if self.limit is None:
            if self.headerless:
                return self._admit(now, probe=False)
            if self.probe is not None:
                return math.inf
            return self._admit(now, probe=True)
        avail = self.ceiling - self.last_seq - self.extra_reserve
        early = self._early_probe_time()
        if avail >= 1 and self.probe is None and early - now <= MIN_WAIT:
            self.early_probed = True
            return self._admit(now, probe=True)
        if avail >= 2:
            if self.next_slot - now > MIN_WAIT:
                wake = early if MIN_WAIT < early - now < self.next_slot - now else self.next_slot
                return wake - now
            spare = avail - 1  # one request stays in reserve for the rollover probe
            ticket = self._admit(now, probe=False)
            self.next_slot = now + max(0.0, self._spread_end(early) - now) / spare
            return ticket
        if self.probe is not None:
            return math.inf
        if avail == 1:
            target = min(self.estimated_end(), early)
            return target - now if target - now > MIN_WAIT else self._admit(now, probe=True)
        if self.hi - now > MIN_WAIT:
            return self.hi - now
        return self._admit(now, probe=True)

    def estimated_end(self) -> float:
        """Best estimate of when the server's current window ends (never after ``hi``)."""
        if not math.isfinite(self.hi):
            return -math.inf
        return max(self.lo, min(self.hi, self.hi + self.offset + self.margin))

    def _spread_end(self, early: float) -> float:
        """Where the budget is spread to: the estimated end of the window, or, while an early
        probe is still to go, the end it checks. Spreading to the earlier end costs nothing if
        the window lasts longer (the accounting still caps the budget; the probe's answer then
        says how long is left), whereas spreading to the later end would strand a second's
        worth of budget when the window ends early."""
        end = self.estimated_end()
        return min(end, early - self.margin) if math.isfinite(early) else end

    def _early_probe_time(self) -> float:
        """Until a rollover has been seen, an integer ``reset`` leaves the window's end
        uncertain by a second (floor and ceil read the same): one probe at the earliest
        plausible end finds out, at the cost of one request if it was too early."""
        if self.calibrated or self.early_probed or self.early_failed or not self.integral_reset:
            return math.inf
        if not math.isfinite(self.hi):
            return math.inf
        return max(self.lo, self.hi - INTEGER_RESET_SLACK) + self.margin

    def _admit(self, now: float, *, probe: bool) -> Ticket:
        self.last_seq += 1
        self.inflight.append(self.last_seq)  # sequence numbers only grow: stays sorted
        if probe:
            self.probe = self.last_seq
        return Ticket(seq=self.last_seq, sent_at=now, probe=probe)

    # -- feedback --------------------------------------------------------------------------

    def observe(
        self, ticket: Ticket, now: float, headers: RateLimitHeaders | None, status: int
    ) -> None:
        """A response arrived at ``now`` for ``ticket``, with these rate-limit headers."""
        older = self._drop(ticket)
        if headers is None:
            if self.limit is None and 200 <= status < 300:
                self.headerless = True
            return
        first = self.limit is None
        self.limit = headers.limit
        self.headerless = False
        integral = headers.reset.is_integer()
        slack = INTEGER_RESET_SLACK if integral else FRACTIONAL_RESET_SLACK
        obs_lo = ticket.sent_at + headers.reset - slack
        obs_hi = now + headers.reset + slack
        obs_ceiling = headers.remaining + ticket.seq - older
        if status == 429 and ticket.seq <= self.ceiling - self.extra_reserve and not first:
            # Our accounting said this request fitted: someone else shares the credential, or
            # the server counts differently. Hold one more request back from now on.
            self.extra_reserve = min(MAX_EXTRA_RESERVE, self.extra_reserve + 1)
        self.integral_reset = integral
        if first or obs_lo > self.hi or ticket.sent_at >= self.hi:
            if not first:
                self._calibrate(ticket, now)
            self.early_probed = False
            self.ceiling = obs_ceiling
            self.lo, self.hi = obs_lo, obs_hi
            self.window_last_send = ticket.sent_at
            self.next_slot = -math.inf
            return
        if obs_hi < self.lo:
            return  # a late answer from a window that already ended
        if ticket.probe and self.early_probed and not self.calibrated:
            # The early probe came back from the window it meant to see the end of: the server
            # does not round reset up, so the early end is wrong for it; never probe early again.
            self.early_failed = True
        if ticket.probe and headers.remaining == 0 and self.calibrated:
            # The rollover probe went out before the window ended: aim later next time.
            self.margin = min(MAX_MARGIN, 2.0 * self.margin)
        self.lo = max(self.lo, obs_lo)
        self.hi = min(self.hi, obs_hi)
        self.ceiling = min(self.ceiling, obs_ceiling)
        self.window_last_send = max(self.window_last_send, ticket.sent_at)

    def forget(self, ticket: Ticket) -> None:
        """The request got no response (connection error, timeout, cancellation).

        Its budget stays spent: the server may well have counted it.
        """
        self._drop(ticket)

    def block(self, until: float) -> None:
        """Send nothing before ``until`` (a 429 without usable headers, or ``Retry-After``)."""
        self.blocked_until = max(self.blocked_until, until)

    @property
    def in_flight(self) -> int:
        return len(self.inflight)

    def _drop(self, ticket: Ticket) -> int:
        """Remove ``ticket`` from the in-flight list; return how many older requests remain."""
        i = bisect_left(self.inflight, ticket.seq)
        if i < len(self.inflight) and self.inflight[i] == ticket.seq:
            del self.inflight[i]
        if self.probe == ticket.seq:
            self.probe = None
        return i

    def _calibrate(self, ticket: Ticket, now: float) -> None:
        """Learn how far the true window end sits from ``hi`` at an observed rollover.

        The old window ended after the last request observed in it was sent and before this
        response arrived. When that bracket is narrow, its late side, relative to the upper
        bound we had, is the correction to apply to the next windows.
        """
        if not math.isfinite(self.hi) or not math.isfinite(self.window_last_send):
            return
        bracket = now - self.window_last_send
        if not 0.0 <= bracket <= MAX_CALIBRATION_BRACKET or ticket.sent_at >= self.hi:
            return
        middle = (now + self.window_last_send) / 2.0
        self.calibrated = True
        self.offset = min(0.0, max(-INTEGER_RESET_SLACK, middle - self.hi))
        self.margin = min(MAX_MARGIN, max(MIN_MARGIN, bracket))
