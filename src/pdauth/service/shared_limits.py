"""Request limits that hold across instances: counted in Redis when configured, else per process.

The service limits ``/connect``, the callback, admin login, connect-session creation and the
"Call PagerDuty" panel (docs/SECURITY.md item 42). With one process the in-memory token bucket
of :mod:`pdauth.service.ratelimit` is exact; with N instances behind a load balancer each would
allow the full limit, N times in all. With ``PDAUTH_REDIS_URL`` the count lives in Redis and is
shared by every instance.

Why the ``limits`` library: its moving-window limiter keeps each key's hits in Redis and decides
with one Lua script per hit, so concurrent instances cannot both spend the last slot; it talks
to Redis through redis-py (the client pdauth's ``redis`` extra already brings), and it is the
storage layer Flask-Limiter and SlowAPI stand on. Writing that script again here would buy
nothing. Keys live under ``PDAUTH_REDIS_PREFIX`` + ``limit``; client addresses and owner ids
are hashed into them, never written as they are.

Redis unreachable: the request is judged by the local limiter instead (never a 500, never an
unlimited endpoint), one warning is logged, and Redis is tried again after a short pause; one
more line is logged when it answers again.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Protocol

from pdauth.client.redis_pacer import REDIS_TIMEOUT
from pdauth.clock import Clock
from pdauth.errors import ConfigurationError
from pdauth.service.ratelimit import RateLimiter

__all__ = ["LocalLimiter", "RedisLimiter", "RequestLimiter", "build_limiter"]

log = logging.getLogger("pdauth.service")

RETRY_REDIS_AFTER = 5.0  # seconds of local limiting after Redis failed, before trying it again


class RequestLimiter(Protocol):
    """``hit(key)`` spends one request of ``key``'s budget: 0 when allowed, else seconds to wait."""

    limit: int

    async def hit(self, key: str) -> float: ...

    async def aclose(self) -> None: ...


class LocalLimiter:
    """The in-process token bucket behind the :class:`RequestLimiter` interface."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self.limit = limiter.limit

    async def hit(self, key: str) -> float:
        return self._limiter.hit(key)

    async def aclose(self) -> None:
        return None


def _hashed(key: str) -> str:
    # Client addresses and owner ids are personal data: keys carry their digest only.
    bucket, _, who = key.partition("|")
    return f"{bucket}/{hashlib.sha256(who.encode('utf-8')).hexdigest()[:32]}"


class RedisLimiter:
    """``limit`` requests per ``window`` seconds per key, counted in Redis (a moving window)."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        window: float,
        prefix: str,
        fallback: RateLimiter,
        clock: Clock,
    ) -> None:
        try:
            from limits import RateLimitItemPerSecond
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter
        except ImportError:
            raise ConfigurationError(
                "PDAUTH_REDIS_URL is set but the redis extra is not installed: "
                "pip install 'pdauth[redis]'"
            ) from None
        self.limit = limit
        self._item = RateLimitItemPerSecond(limit, max(1, math.ceil(window)))
        storage_url = "async+" + url if not url.startswith("async+") else url
        self._storage: Any = RedisStorage(
            storage_url,
            implementation="redispy",
            key_prefix=prefix + "limit",
            wrap_exceptions=True,
            # As the shared pacer's: a Redis that accepts but never answers costs a request
            # one second before the per-process fallback, not redis-py's unbounded wait.
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._fallback = fallback
        self._clock = clock
        self._down_until: float | None = None

    async def hit(self, key: str) -> float:
        if self.limit <= 0:
            return 0.0
        now = self._clock.monotonic()
        if self._down_until is not None and now < self._down_until:
            return self._fallback.hit(key)
        probing = self._down_until is not None
        if probing:
            # One request probes; the others stay local meanwhile instead of all waiting on
            # a Redis that may still be gone.
            self._down_until = now + RETRY_REDIS_AFTER
        from limits.errors import StorageError

        name = _hashed(key)
        try:
            if await self._limiter.hit(self._item, name):
                wait = 0.0
            else:
                stats = await self._limiter.get_window_stats(self._item, name)
                wait = max(
                    1.0, math.ceil(stats.reset_time - self._clock.now())
                )  # wall time, as limits keeps it
        except StorageError as exc:
            if not probing:
                log.warning(
                    "Redis is unreachable (%s): request limits are per process until it is back",
                    type(exc.storage_error).__name__,
                )
            self._down_until = now + RETRY_REDIS_AFTER
            return self._fallback.hit(key)
        if probing:
            log.warning("Redis answers again: request limits are shared across instances")
            self._down_until = None
        return wait

    async def aclose(self) -> None:
        # limits has no close of its own; its redis-py bridge keeps the client as ``storage``.
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()


def build_limiter(
    redis_url: str | None, *, limit: int, window: float, prefix: str, clock: Clock
) -> RequestLimiter:
    """The shared limiter when Redis is configured, else the local one."""
    local = RateLimiter(limit, window, clock)
    if redis_url is None or limit <= 0:
        return LocalLimiter(local)
    return RedisLimiter(
        redis_url, limit=limit, window=window, prefix=prefix, fallback=local, clock=clock
    )
