"""Retry rules: which failures are retried, and how long each wait is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.client.pacing import RateLimitHeaders
from pdauth.client.retry import RetryPolicy, parse_retry_after, should_retry

NOW = 1_800_000_000.0


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_a_request_that_never_left_is_always_retried(method: str) -> None:
    assert should_retry(method, "not_sent")


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", True), ("put", True), ("DELETE", True), ("POST", False), ("PATCH", False)],
)
@pytest.mark.parametrize("kind", ["unknown", "server_error"])
def test_after_sending_only_idempotent_methods_are_retried(
    method: str, expected: bool, kind: str
) -> None:
    assert should_retry(method, kind, None) is expected  # type: ignore[arg-type]


def test_the_caller_can_mark_a_call_idempotent_or_not() -> None:
    assert should_retry("POST", "server_error", idempotent=True)
    assert not should_retry("GET", "unknown", idempotent=False)
    assert should_retry("POST", "not_sent", idempotent=False)  # nothing was sent


@settings(max_examples=60)
@given(attempt=st.integers(min_value=0, max_value=200), rand=st.floats(0.0, 1.0))
def test_backoff_is_capped_and_jittered_but_never_zero(attempt: int, rand: float) -> None:
    policy = RetryPolicy(backoff_base=0.25, backoff_cap=8.0)
    delay = policy.backoff(attempt, rand)
    ceiling = min(8.0, 0.25 * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=8.0)
    assert [policy.backoff(a, 1.0) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_throttle_waits_ratelimit_reset_first() -> None:
    policy = RetryPolicy()
    headers = RateLimitHeaders(960, 0, 20.0)
    assert policy.throttle_delay(headers, 5.0, 3, 0.5) == 20.0


def test_throttle_waits_retry_after_without_ratelimit_headers() -> None:
    assert RetryPolicy().throttle_delay(None, 7.0, 3, 0.5) == 7.0


def test_throttle_backs_off_when_nothing_says_how_long() -> None:
    policy = RetryPolicy(throttle_base=1.0, throttle_cap=60.0)
    delays = [policy.throttle_delay(None, None, a, 0.0) for a in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_throttle_never_waits_longer_than_the_cap() -> None:
    policy = RetryPolicy(throttle_cap=60.0)
    assert policy.throttle_delay(RateLimitHeaders(960, 0, 3600.0), None, 0, 0.0) == 60.0
    assert policy.throttle_delay(None, 86_400.0, 0, 0.0) == 60.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),  # computed below
        ("soon", None),
        ("-3", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    if value and value.startswith("Wed"):
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value).timestamp()
        assert parse_retry_after(value, when - 30) == pytest.approx(30.0)
        assert parse_retry_after(value, when + 30) == 0.0
        return
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "kw",
    [{"retries": -1}, {"backoff_base": 0.0}, {"backoff_cap": float("inf")}, {"throttle_cap": -1}],
)
def test_bad_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r">= 0|positive"):
        RetryPolicy(**kw)  # type: ignore[arg-type]
