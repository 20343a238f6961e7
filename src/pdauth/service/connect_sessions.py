"""Connect sessions: one-time links a host backend mints so that its user can connect PagerDuty.

Standalone deployments do not know who the browser's user is. The host application's backend
(holding an API key) calls ``POST /api/v1/connect-sessions {"owner", "return_to"}`` and gets a
URL valid for 10 minutes; its user opens it; the page binds the browser to that owner and offers
the Connect button. The link token is an AES-256-GCM ciphertext sealed by
:meth:`pdauth.sealing.Sealer.seal_connect_session` (the key ring and its associated-data rule)
of ``{owner, return_to, expires_at, jti}`` plus, when the host names them, the PagerDuty
account and user the link is meant for (an approval by anyone else connects nothing:
a link is a bearer credential, docs/SECURITY.md item 47): confidential (the owner id is not
readable from the URL), unforgeable and stateless, so any instance can open it. Opening a
link only *reads* it — link scanners and prefetchers fetch URLs — and the single use is
enforced when the user presses the button:
the ``jti`` is claimed in a :class:`UsedTokens` set (process memory by default; Redis ``SET NX``
when ``PDAUTH_REDIS_URL`` is set, so a link works once across every instance).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdauth.client.redis_pacer import REDIS_TIMEOUT
from pdauth.clock import Clock
from pdauth.connect_flow import check_expectation
from pdauth.crypto import KeyRing
from pdauth.errors import CryptoError, StoreError
from pdauth.owners import MAX_OWNER_LENGTH, OWNER_PATTERN, validate_owner
from pdauth.returnto import safe_return_to
from pdauth.sealing import Sealer

__all__ = [
    "CONNECT_SESSION_LIFETIME",
    "MAX_OWNER_LENGTH",
    "OWNER_PATTERN",
    "ConnectSession",
    "ConnectSessions",
    "MemoryUsedTokens",
    "RedisUsedTokens",
    "UsedTokens",
    "validate_owner",
]

CONNECT_SESSION_LIFETIME = 600.0
MAX_TOKEN_LENGTH = 2048


@dataclass(frozen=True)
class ConnectSession:
    """A decoded connect-session link (the token itself is never kept)."""

    owner: str
    return_to: str | None
    expires_at: float
    jti: str = field(repr=False)
    # Who the link is meant for: a PagerDuty subdomain or account id, a user id or email.
    expected_account: str | None = None
    expected_user: str | None = None


class UsedTokens(Protocol):
    """Remembers which link ids were redeemed, at least until they expire."""

    def claim(self, jti: str, expires_at: float, now: float) -> Awaitable[bool]:
        """True the first time a ``jti`` is claimed, False ever after (until it expires)."""
        ...


class MemoryUsedTokens:
    """Process-local set of redeemed link ids, purged as they expire."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._used: dict[str, float] = {}
        self._max = max_entries

    async def claim(self, jti: str, expires_at: float, now: float) -> bool:
        if len(self._used) >= self._max:
            self._used = {k: v for k, v in self._used.items() if v > now}
        if jti in self._used:
            return False
        self._used[jti] = expires_at
        return True


class RedisUsedTokens:
    """Redeemed link ids in Redis: ``SET key 1 NX EX ttl`` is one atomic round trip."""

    def __init__(self, url: str, *, prefix: str = "pdauth:connect-session:") -> None:
        import redis.asyncio as redis_asyncio  # optional dependency; imported only when used

        # Bounded like the pacer's and the limiter's: a silent Redis is a 503 within a second.
        self._redis: Any = redis_asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._prefix = prefix

    async def claim(self, jti: str, expires_at: float, now: float) -> bool:
        from redis.exceptions import RedisError

        ttl = max(1, int(expires_at - now) + 1)
        try:
            return bool(await self._redis.set(self._prefix + jti, b"1", nx=True, ex=ttl))
        except RedisError as exc:
            # Fail closed, and retryable: without Redis a link's single use cannot be checked
            # across instances. StoreError is answered 503 ("try again"), never a 500.
            raise StoreError(
                f"the connect-link store (Redis) is unavailable: {type(exc).__name__}"
            ) from None

    async def aclose(self) -> None:
        await self._redis.aclose()


class ConnectSessions:
    """Issues and opens connect-session link tokens."""

    def __init__(
        self,
        key_ring: KeyRing,
        used: UsedTokens,
        clock: Clock,
        *,
        lifetime: float = CONNECT_SESSION_LIFETIME,
    ) -> None:
        self._seal = Sealer(key_ring)
        self._used = used
        self._clock = clock
        self.lifetime = lifetime

    def issue(
        self,
        owner: str,
        return_to: str | None,
        *,
        expected_account: str | None = None,
        expected_user: str | None = None,
    ) -> tuple[str, ConnectSession]:
        """A new link token; ``return_to`` is reduced to a safe relative path or ``None``.

        ``expected_account``/``expected_user``: who may approve (ValueError when unusable).
        """
        if validate_owner(owner) is None:
            raise ValueError("owner must be 1-255 printable characters")
        session = ConnectSession(
            owner=owner,
            return_to=safe_return_to(return_to),
            expires_at=self._clock.now() + self.lifetime,
            jti=secrets.token_urlsafe(16),
            expected_account=check_expectation("expected_account", expected_account),
            expected_user=check_expectation("expected_user", expected_user),
        )
        payload: dict[str, object] = {
            "o": session.owner,
            "r": session.return_to,
            "e": session.expires_at,
            "j": session.jti,
        }
        if session.expected_account is not None:
            payload["a"] = session.expected_account
        if session.expected_user is not None:
            payload["u"] = session.expected_user
        return self._seal.seal_connect_session(json.dumps(payload, separators=(",", ":"))), session

    def open(self, token: str) -> ConnectSession | None:
        """The session a token names, or ``None`` if it is forged, malformed or expired."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        try:
            data = json.loads(self._seal.open_connect_session(token))
        except (CryptoError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        owner, return_to, expires_at, jti = (data.get(k) for k in ("o", "r", "e", "j"))
        if validate_owner(owner) is None or not isinstance(jti, str):
            return None
        if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            return None
        if return_to is not None and safe_return_to(return_to) is None:
            return None
        account, user = data.get("a"), data.get("u")
        if any(v is not None and validate_owner(v) is None for v in (account, user)):
            return None
        assert isinstance(owner, str)
        session = ConnectSession(
            owner,
            return_to,
            float(expires_at),
            jti,
            expected_account=account if isinstance(account, str) else None,
            expected_user=user if isinstance(user, str) else None,
        )
        return session if self._clock.now() < session.expires_at else None

    async def redeem(self, session: ConnectSession) -> bool:
        """Claim the link for good: True once, False when it was already used or has expired."""
        now = self._clock.now()
        if now >= session.expires_at:
            return False
        return await self._used.claim(session.jti, session.expires_at, now)
