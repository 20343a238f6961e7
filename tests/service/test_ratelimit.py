"""Rate limiting and which address is "the client" (docs/SECURITY.md items 41, 42)."""

from __future__ import annotations

from pdauth.clock import FrozenClock
from pdauth.service.ratelimit import RateLimiter, TrustedProxies, client_address


def test_bucket_allows_the_limit_then_refuses_then_refills(clock: FrozenClock) -> None:
    limiter = RateLimiter(5, 60.0, clock)
    assert [limiter.hit("a") for _ in range(5)] == [0.0] * 5
    wait = limiter.hit("a")
    assert wait >= 1.0
    assert limiter.hit("b") == 0.0  # another client has its own bucket
    clock.advance(12.0)  # one token per 12 s
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") > 0


def test_a_zero_limit_disables_the_limiter(clock: FrozenClock) -> None:
    limiter = RateLimiter(0, 60.0, clock)
    assert all(limiter.hit("a") == 0.0 for _ in range(1000))


def test_memory_is_bounded(clock: FrozenClock) -> None:
    limiter = RateLimiter(1, 60.0, clock, max_keys=10)
    for i in range(100):
        limiter.hit(f"10.0.0.{i}")
    assert len(limiter._buckets) == 10


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert client_address("203.0.113.9", ["198.51.100.1"], TrustedProxies()) == "203.0.113.9"
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert client_address("203.0.113.9", ["198.51.100.1"], trusted) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_takes_the_first_untrusted_hop_from_the_right() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    # The client forged "1.1.1.1"; the proxy appended the real address.
    assert client_address("10.0.0.2", ["1.1.1.1, 198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("10.0.0.2", ["198.51.100.7, 10.0.0.5"], trusted) == "198.51.100.7"
    assert client_address("10.0.0.2", ["1.1.1.1", "198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("10.0.0.2", [], trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", ["garbage"], trusted) == "10.0.0.2"
    assert client_address(None, [], trusted) == "unknown"
