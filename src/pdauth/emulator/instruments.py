"""What the emulator counts and what it injects: :class:`Stats` (the counters behind
``GET /_emulator/stats``) and :class:`FaultQueue` (failures queued through
``POST /_emulator/faults``, each served to one token or REST request)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Literal, cast, get_args

__all__ = ["Fault", "FaultKind", "FaultQueue", "FaultTarget", "Stats"]

FaultKind = Literal["500", "503", "timeout", "drop"]
FaultTarget = Literal["token", "rest"]


class Stats:
    """Counters served by ``GET /_emulator/stats``. All methods are cheap and thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: Counter[tuple[str, str]] = Counter()
        self._rest: Counter[tuple[str, str, int]] = Counter()
        self._429: Counter[bool] = Counter()
        self._faults: Counter[tuple[str, str]] = Counter()
        self._issued: Counter[str] = Counter()
        self._revoked: Counter[str] = Counter()
        self._reuse = 0
        self._authorize: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            for counter in (
                self._token, self._rest, self._429, self._faults, self._issued, self._revoked,
                self._authorize,
            ):  # fmt: skip
                counter.clear()
            self._reuse = 0

    def record_token(self, grant_type: str, outcome: str) -> None:
        """One token-endpoint request; ``outcome`` is ``ok`` or the OAuth error code."""
        with self._lock:
            self._token[(_label(grant_type), outcome)] += 1

    def record_rest(self, method: str, route: str, status: int) -> None:
        """One REST request; ``route`` is the path template, e.g. ``/users/{id}``."""
        with self._lock:
            self._rest[(method, route, status)] += 1

    def record_429(self, with_headers: bool) -> None:
        with self._lock:
            self._429[with_headers] += 1

    def record_fault(self, target: str, kind: str) -> None:
        with self._lock:
            self._faults[(target, kind)] += 1

    def record_reuse_detection(self) -> None:
        """A replayed authorization code or rotated refresh token was presented."""
        with self._lock:
            self._reuse += 1

    def record_issued(self, kind: Literal["access", "refresh", "code", "id_token"]) -> None:
        with self._lock:
            self._issued[kind] += 1

    def record_revoked(self, kind: Literal["access", "refresh", "grant"], count: int = 1) -> None:
        if count:
            with self._lock:
                self._revoked[kind] += count

    def record_authorize(self, outcome: str) -> None:
        """One authorize decision: ``approved``, ``denied`` or the error code redirected."""
        with self._lock:
            self._authorize[outcome] += 1

    def snapshot(self) -> dict[str, object]:
        """A JSON-serialisable copy of every counter."""
        with self._lock:
            token: dict[str, dict[str, int]] = {}
            for (grant_type, outcome), n in sorted(self._token.items()):
                token.setdefault(grant_type, {})[outcome] = n
            rest: dict[str, dict[str, int]] = {}
            for (method, route, status), n in sorted(self._rest.items()):
                rest.setdefault(f"{method} {route}", {})[str(status)] = n
            faults: dict[str, dict[str, int]] = {}
            for (target, kind), n in sorted(self._faults.items()):
                faults.setdefault(target, {})[kind] = n
            return {
                "token_requests": token,
                "token_requests_total": sum(self._token.values()),
                "refresh_reuse_detections": self._reuse,
                "authorize_decisions": dict(sorted(self._authorize.items())),
                "rest_requests": rest,
                "rest_requests_total": sum(self._rest.values()),
                "rate_limited": {
                    "total": self._429[True] + self._429[False],
                    "with_headers": self._429[True],
                    "without_headers": self._429[False],
                },
                "faults_served": faults,
                "tokens_issued": {
                    k: self._issued[k] for k in ("access", "refresh", "code", "id_token")
                },
                "tokens_revoked": {k: self._revoked[k] for k in ("access", "refresh", "grant")},
            }


def _label(value: str) -> str:
    # Counter keys come from client input (grant_type); keep the stats small and printable.
    cleaned = "".join(c for c in value[:40] if c.isprintable())
    return cleaned or "(missing)"


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``delay`` only matters for ``timeout``."""

    kind: FaultKind
    delay: float = 0.0


class FaultQueue:
    """Faults waiting to be served, FIFO per target; each request takes at most one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[FaultTarget, list[Fault]] = {"token": [], "rest": []}

    def add(self, target: FaultTarget, kind: str, count: int = 1, delay: float = 0.0) -> None:
        if target not in get_args(FaultTarget):
            raise ValueError("fault target must be 'token' or 'rest'")
        if kind not in get_args(FaultKind):
            raise ValueError("fault kind must be one of '500', '503', 'timeout', 'drop'")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise ValueError("fault count must be an integer between 1 and 10000")
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError("fault delay must be a number of seconds")
        if not 0 <= delay <= 600:  # also refuses NaN
            raise ValueError("fault delay must be between 0 and 600 seconds")
        fault = Fault(kind=cast(FaultKind, kind), delay=float(delay))
        with self._lock:
            self._queues[target].extend([fault] * count)

    def take(self, target: FaultTarget) -> Fault | None:
        with self._lock:
            queue = self._queues[target]
            return queue.pop(0) if queue else None

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {target: len(queue) for target, queue in self._queues.items()}

    def clear(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
