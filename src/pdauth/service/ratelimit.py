"""Per-client rate limits for the flow endpoints, and who "the client" is behind proxies.

docs/SECURITY.md item 42 asks to rate-limit ``/connect`` and the callback per client, and
item 41 to trust ``X-Forwarded-For`` only from our own proxies. :func:`client_address` takes the
socket peer, and only when that peer is a configured trusted proxy walks ``X-Forwarded-For``
from the right, skipping trusted hops, to the first untrusted address — the left part of the
header is whatever the client wrote and is never believed. :class:`RateLimiter` is a token
bucket per (bucket, client) in process memory, driven by the injected clock: several instances
of the service each enforce the limit on their own (documented; a shared limit belongs in the
reverse proxy or Redis). The number of tracked clients is bounded so a flood of spoofed
addresses cannot grow memory without limit.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pdauth.clock import Clock

__all__ = ["RateLimiter", "TrustedProxies", "client_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """A set of addresses/networks (``"10.0.0.0/8"``, ``"127.0.0.1"``) whose headers we believe."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[Network] = []
        for entry in entries:
            text = entry.strip()
            if text:
                networks.append(ipaddress.ip_network(text, strict=False))
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: TrustedProxies) -> str:
    """The address to rate-limit by (never taken from a header an untrusted peer sent)."""
    address = peer or "unknown"
    if not trusted or address not in trusted:
        return address
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed entry: stop believing the chain here; the last trusted hop stands.
            return address
        if hop not in trusted:
            return hop
        address = hop
    return address


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: ``limit`` requests per ``window`` seconds per key, bursts up to ``limit``.

    ``limit <= 0`` disables the limiter (benchmarks, load tests behind another limiter).
    """

    def __init__(self, limit: int, window: float, clock: Clock, *, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def hit(self, key: str) -> float:
        """Spend one token for ``key``; returns 0 when allowed, else seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self._clock.monotonic()
        rate = self.limit / self.window
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.limit), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.limit), bucket.tokens + elapsed * rate)
            bucket.updated = now
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return max(1.0, math.ceil((1.0 - bucket.tokens) / rate))
