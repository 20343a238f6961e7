"""Connect-session links: confidential, unforgeable, expiring, single use."""

from __future__ import annotations

import secrets

import pytest

from pdauth.clock import FrozenClock
from pdauth.crypto import KeyRing, generate_key
from pdauth.service.connect_sessions import (
    ConnectSessions,
    MemoryUsedTokens,
    RedisUsedTokens,
    validate_owner,
)


@pytest.fixture
def sessions(clock: FrozenClock) -> ConnectSessions:
    return ConnectSessions(KeyRing([generate_key("k1")]), MemoryUsedTokens(), clock)


def test_a_link_opens_to_its_owner_and_hides_it(sessions: ConnectSessions) -> None:
    token, issued = sessions.issue("user-42@example.com", "/settings")
    assert "user-42" not in token
    assert "settings" not in token
    opened = sessions.open(token)
    assert opened == issued
    assert opened is not None
    assert opened.owner == "user-42@example.com"
    assert opened.return_to == "/settings"


def test_an_unsafe_return_to_becomes_the_default(sessions: ConnectSessions) -> None:
    token, issued = sessions.issue("alice", "https://evil.com")
    assert issued.return_to is None
    opened = sessions.open(token)
    assert opened is not None
    assert opened.return_to is None


@pytest.mark.anyio
async def test_a_link_is_redeemed_once(sessions: ConnectSessions) -> None:
    token, _ = sessions.issue("alice", None)
    opened = sessions.open(token)
    assert opened is not None
    assert await sessions.redeem(opened)
    assert not await sessions.redeem(opened)
    assert sessions.open(token) is not None  # opening (reading) is not redeeming


@pytest.mark.anyio
async def test_a_link_expires_after_ten_minutes(
    sessions: ConnectSessions, clock: FrozenClock
) -> None:
    token, issued = sessions.issue("alice", None)
    clock.advance(600)
    assert sessions.open(token) is None
    assert not await sessions.redeem(issued)


def test_forged_and_foreign_tokens_do_not_open(
    sessions: ConnectSessions, clock: FrozenClock
) -> None:
    token, _ = sessions.issue("alice", None)
    other = ConnectSessions(KeyRing([generate_key("k1")]), MemoryUsedTokens(), clock)
    assert other.open(token) is None
    for bad in ["", "x", token[:-2], token + "A", "v1.k1.", "é" * 10, "a" * 5000]:
        assert sessions.open(bad) is None


@pytest.mark.parametrize("owner", ["", " a", "a ", "a\nb", "x" * 256, None, 7])
def test_owner_validation(owner: object) -> None:
    assert validate_owner(owner) is None


@pytest.mark.anyio
async def test_redis_used_tokens_claim_once() -> None:
    redis = pytest.importorskip("redis")
    used = RedisUsedTokens("redis://127.0.0.1:6379/0", prefix="pdauth-test:cs:")
    try:
        jti = secrets.token_urlsafe(8)
        try:
            first = await used.claim(jti, 1e12, 1e12 - 5)
        except redis.ConnectionError:
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        second = await used.claim(jti, 1e12, 1e12 - 5)
        assert (first, second) == (True, False)
    finally:
        await used.aclose()
