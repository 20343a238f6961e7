"""Time, injected: the one place pdauth reads the wall clock.

Everything that depends on time (token expiry, leases, pending-authorization lifetimes,
rate-limit pacing) takes a :class:`Clock`, so tests can move time instead of sleeping.
``now()`` is wall-clock seconds since the epoch (for expiry stored in the database);
``monotonic()`` is for measuring intervals and deadlines in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FrozenClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time."""

    def now(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for deadlines and intervals)."""
        ...


@dataclass(frozen=True)
class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class FrozenClock:
    """A clock that only moves when told to (tests, simulations)."""

    current: float = 1_800_000_000.0
    _mono: float = field(default=0.0, repr=False)

    def now(self) -> float:
        return self.current

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.current += seconds
        self._mono += seconds
