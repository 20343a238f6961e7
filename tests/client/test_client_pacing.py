"""The pacing algorithm, as pure logic: given headers and clock readings, when to send.

Scenario tests pin each rule; simulation tests run many concurrent workers against a
fixed-window server (every rounding of ``ratelimit-reset``, windows aligned or not, requests
overtaking each other) and check the two promises: no 429 while headers are present, and most
of the limit used.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdauth.client.pacing import (
    PacingState,
    RateLimitHeaders,
    Ticket,
    parse_ratelimit_headers,
)

from .pacing_sim import FixedWindowServer, simulate


def admit(state: PacingState, now: float) -> Ticket:
    decision = state.try_acquire(now)
    assert isinstance(decision, Ticket), f"expected admission, got a wait of {decision}"
    return decision


def wait_of(state: PacingState, now: float) -> float:
    decision = state.try_acquire(now)
    assert not isinstance(decision, Ticket), "expected a wait, got an admission"
    return decision


# -- headers --------------------------------------------------------------------------------


def test_headers_are_parsed() -> None:
    parsed = parse_ratelimit_headers(
        {"ratelimit-limit": "960", "ratelimit-remaining": "959", "ratelimit-reset": "60"}
    )
    assert parsed == RateLimitHeaders(limit=960, remaining=959, reset=60.0)


def test_fractional_reset_is_kept() -> None:
    parsed = parse_ratelimit_headers(
        {"ratelimit-limit": "10", "ratelimit-remaining": "3", "ratelimit-reset": "1.25"}
    )
    assert parsed is not None
    assert parsed.reset == 1.25


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"ratelimit-limit": "960", "ratelimit-remaining": "1"},
        {"ratelimit-limit": "x", "ratelimit-remaining": "1", "ratelimit-reset": "3"},
        {"ratelimit-limit": "0", "ratelimit-remaining": "0", "ratelimit-reset": "3"},
        {"ratelimit-limit": "9", "ratelimit-remaining": "-1", "ratelimit-reset": "3"},
        {"ratelimit-limit": "9", "ratelimit-remaining": "1", "ratelimit-reset": "-3"},
        {"ratelimit-limit": "9", "ratelimit-remaining": "1", "ratelimit-reset": "nan"},
        {"ratelimit-limit": "9", "ratelimit-remaining": "1", "ratelimit-reset": "inf"},
    ],
)
def test_missing_or_bad_headers_mean_no_information(headers: dict[str, str]) -> None:
    assert parse_ratelimit_headers(headers) is None


def test_remaining_is_clamped_to_the_limit() -> None:
    parsed = parse_ratelimit_headers(
        {"ratelimit-limit": "5", "ratelimit-remaining": "50", "ratelimit-reset": "1"}
    )
    assert parsed is not None
    assert parsed.remaining == 5


# -- start-up -------------------------------------------------------------------------------


def test_first_request_probes_alone_until_its_answer() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    assert probe.probe
    assert wait_of(state, 0.0) == math.inf  # everyone else waits for the answer
    state.observe(probe, 0.01, RateLimitHeaders(100, 99, 10.0), 200)
    assert not admit(state, 0.01).probe


def test_a_lost_probe_lets_the_next_request_probe() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.forget(probe)
    assert admit(state, 0.1).probe


def test_a_server_without_headers_is_not_paced() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.01, None, 200)
    for i in range(50):
        admit(state, 0.01 + i * 1e-6)  # only the concurrency limit applies now


def test_an_error_without_headers_does_not_switch_pacing_off() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.01, None, 500)
    assert admit(state, 0.02).probe  # still probing for the headers


# -- accounting -----------------------------------------------------------------------------


def test_a_burst_never_exceeds_what_the_server_said_is_left() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10, 5, 10.0), 200)  # 5 left, window ~10 s
    admitted = 0
    now = 0.0
    while now < 9.0:
        decision = state.try_acquire(now)
        if isinstance(decision, Ticket):
            admitted += 1
        else:
            now += min(decision, 0.5)
    assert admitted == 4  # five left, one held back for the rollover probe


def test_older_requests_in_flight_count_against_the_ceiling() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(100, 10, 30.0), 200)
    older = admit(state, 0.0)  # seq 2, still unanswered
    state.next_slot = -math.inf
    newer = admit(state, 0.0)  # seq 3 overtakes it at the server
    state.observe(newer, 0.01, RateLimitHeaders(100, 9, 30.0), 200)
    # 9 left after seq 3, and seq 2 may still be counted: the ceiling is 9 + 3 - 1.
    assert state.ceiling == 11
    state.observe(older, 0.02, RateLimitHeaders(100, 8, 30.0), 200)
    assert state.ceiling == 10  # the smallest ceiling of the window wins


def test_a_late_answer_from_an_old_window_is_ignored() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(100, 99, 5.0), 200)
    slow = admit(state, 0.0)
    state.next_slot = -math.inf
    fresh = admit(state, 7.0)  # sent after the window surely ended
    state.observe(fresh, 7.01, RateLimitHeaders(100, 99, 5.0), 200)
    ceiling = state.ceiling
    state.observe(slow, 7.5, RateLimitHeaders(100, 1, 0.0), 200)  # from the old window
    assert state.ceiling == ceiling


def test_forgotten_requests_stay_spent() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(100, 3, 30.0), 200)
    first = admit(state, 0.0)
    left = state.ceiling - state.last_seq
    state.forget(first)
    assert state.ceiling - state.last_seq == left == 2  # the server may have counted it


def test_an_unexpected_429_holds_one_more_request_back() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(100, 50, 30.0), 200)
    ticket = admit(state, 0.0)
    state.observe(ticket, 0.01, RateLimitHeaders(100, 0, 29.0), 429)  # someone else spent it
    assert state.extra_reserve == 1
    assert wait_of(state, 0.02) > 0


# -- spreading and rollover -----------------------------------------------------------------


def test_budget_is_spread_over_the_time_left() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(1000, 100, 10.5), 200)  # fractional reset
    admit(state, 0.0)
    gap = wait_of(state, 0.0)
    assert gap == pytest.approx(10.5 / 99, rel=0.05)


def test_with_only_the_reserve_left_a_probe_goes_at_the_estimated_end() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10, 1, 2.5), 200)
    end = state.estimated_end()
    assert wait_of(state, 0.0) == pytest.approx(end)
    rollover = admit(state, end)
    assert rollover.probe
    assert wait_of(state, end) == math.inf  # the probe's answer decides


def test_when_even_the_reserve_is_spent_wait_for_the_guaranteed_end() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10, 0, 3.0), 200)
    assert wait_of(state, 0.0) == pytest.approx(state.hi)
    assert state.hi == pytest.approx(4.0)  # an integer reset may be a ceiling or a floor
    assert admit(state, state.hi).probe


def test_a_new_window_rebases_the_budget() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10, 0, 3.0), 200)
    rollover = admit(state, 4.0)
    state.observe(rollover, 4.01, RateLimitHeaders(10, 9, 5.0), 200)
    assert state.ceiling - state.last_seq == 9
    assert state.hi == pytest.approx(10.01)


def test_the_concurrency_limit_waits_for_an_answer() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10**6, 10**6 - 1, 60.5), 200)
    first, second = state.try_acquire(0.0, 2), state.try_acquire(0.001, 2)
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert state.try_acquire(0.002, 2) == math.inf  # two in flight: wait for an answer
    state.observe(first, 0.01, RateLimitHeaders(10**6, 10**6 - 3, 60.0), 200)
    assert isinstance(state.try_acquire(0.01, 2), Ticket)


def test_block_holds_every_request() -> None:
    state = PacingState()
    state.block(5.0)
    assert wait_of(state, 1.0) == pytest.approx(4.0)
    state.block(2.0)  # never shortens an existing block
    assert wait_of(state, 3.0) == pytest.approx(2.0)
    assert admit(state, 5.0).probe


def test_an_uncalibrated_window_is_probed_where_a_rounded_up_reset_ends_it() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(1000, 900, 5.0), 200)  # ends in 4..6 s
    assert state.hi == pytest.approx(6.0)
    early = state.hi - 1.0 + state.margin  # where it ends if the server rounds reset up
    ticket = admit(state, 0.0)
    assert not ticket.probe
    assert wait_of(state, 0.0) <= early  # wakes up for the early probe at the latest
    assert admit(state, early).probe
    # The probe came back from the old window (a server that floors): one request spent,
    # spreading goes on to the late end, and no second early probe.
    state.observe(Ticket(3, early, True), early + 0.01, RateLimitHeaders(1000, 897, 1.0), 200)
    state.next_slot = -math.inf
    assert not admit(state, early + 0.02).probe
    assert state.ceiling - state.last_seq > 800


def test_before_the_first_rollover_the_budget_is_spread_to_the_early_end() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(100, 99, 5.0), 200)  # ends in 4..6 s
    early = state.hi - 1.0 + state.margin
    admit(state, 0.0)
    # 99 left, one in reserve: 98 spread over the time to the early end (5 s, not 6 s).
    assert wait_of(state, 0.0) == pytest.approx((early - state.margin) / 98, rel=1e-6)


def test_a_failed_early_probe_is_never_tried_again() -> None:
    state = PacingState()
    probe = admit(state, 0.0)
    state.observe(probe, 0.0, RateLimitHeaders(10, 1, 5.0), 200)  # only the reserve left
    early = state.hi - 1.0 + state.margin
    assert wait_of(state, 0.0) == pytest.approx(early)  # not the late end
    early_probe = admit(state, early)
    assert early_probe.probe
    # It came back from the old window (the server floors): nothing left, wait for the end.
    state.observe(early_probe, early + 0.01, RateLimitHeaders(10, 0, 0.0), 200)
    assert state.early_failed
    assert wait_of(state, early + 0.01) == pytest.approx(state.hi - early - 0.01)
    rollover = admit(state, state.hi)
    state.observe(rollover, state.hi + 0.01, RateLimitHeaders(10, 9, 5.0), 200)
    assert not state.early_probed
    admit(state, state.hi)  # spreading goes on; no early probe in this window either
    assert state.try_acquire(state.hi - 1.0 + state.margin) != 0
    assert state.probe is None


@pytest.mark.parametrize(("low", "high"), [(0.0005, 0.002), (0.002, 0.01), (0.01, 0.05)])
def test_the_first_window_costs_no_more_than_a_round_trip(low: float, high: float) -> None:
    # A server that rounds reset up (the emulator does): the second window's first request
    # completes one margin and a few round trips after the first window's end.
    server = FixedWindowServer(100, 5.0, "ceil")
    result = simulate(server, workers=8, requests=300, latency=(low, high), seed=4)
    assert result.rejected == 0
    first_window_end = result.started + 5.0 + 2 * high  # it opened on the first arrival
    assert result.done_at[100] - first_window_end <= PacingState().margin + 4 * high
    if high <= 0.01:  # round trips like the benchmark's: the whole run at 0.97 L or more
        assert 300 / result.elapsed >= 0.97 * 100 / 5.0


def test_calibration_learns_that_the_server_rounds_reset_up() -> None:
    server = FixedWindowServer(limit=300, window=5.0, rounding="ceil")
    state = PacingState()
    simulate(server, workers=8, requests=1500, state=state)
    assert state.offset == pytest.approx(-1.0, abs=0.1)


def test_calibration_leaves_an_exact_reset_alone() -> None:
    server = FixedWindowServer(limit=300, window=5.0, rounding="float")
    state = PacingState()
    simulate(server, workers=8, requests=1500, state=state)
    assert state.offset == pytest.approx(0.0, abs=0.05)


# -- simulations ----------------------------------------------------------------------------


@pytest.mark.parametrize("rounding", ["ceil", "floor", "round", "float"])
@pytest.mark.parametrize("aligned", [False, True])
def test_pagerduty_window_is_used_fully_without_429(rounding: str, aligned: bool) -> None:
    # PagerDuty's own limit, 8 workers, ~1-4 ms round trips.
    server = FixedWindowServer(960, 60.0, rounding, aligned, phase=17.3)  # type: ignore[arg-type]
    result = simulate(server, workers=8, requests=960 * 3)
    assert result.rejected == 0
    assert result.completed == 960 * 3
    assert result.steady_rate(960) >= 0.95 * 960 / 60.0
    assert result.longest_sleep <= 60.0


@pytest.mark.parametrize("rounding", ["ceil", "floor", "round", "float"])
def test_the_first_windows_are_used_well_too(rounding: str) -> None:
    server = FixedWindowServer(300, 5.0, rounding)  # type: ignore[arg-type]
    result = simulate(server, workers=8, requests=1500, seed=2)
    assert result.rejected == 0
    assert result.completed / result.elapsed >= 0.95 * 300 / 5.0  # start-up included


@pytest.mark.parametrize("rounding", ["ceil", "floor", "round", "float"])
def test_emulator_window_of_the_integration_test(rounding: str) -> None:
    server = FixedWindowServer(300, 5.0, rounding)  # type: ignore[arg-type]
    result = simulate(server, workers=16, requests=3000, seed=3)
    assert result.rejected == 0
    assert result.steady_rate(300) >= 0.95 * 300 / 5.0


def test_negative_control_without_pacing_the_server_refuses() -> None:
    """The simulated server does punish a client that does not pace (the test can fail)."""

    class Greedy(PacingState):
        def try_acquire(self, now: float, max_in_flight: int | None = None) -> Ticket | float:
            return self._admit(now, probe=False)

    server = FixedWindowServer(50, 5.0)
    result = simulate(server, workers=8, requests=200, state=Greedy())
    assert result.rejected > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(min_value=2, max_value=400),
    window=st.floats(min_value=0.5, max_value=90.0),
    rounding=st.sampled_from(["ceil", "floor", "round", "float"]),
    aligned=st.booleans(),
    phase=st.floats(min_value=0.0, max_value=10.0),
    workers=st.integers(min_value=1, max_value=16),
    latency=st.tuples(
        st.floats(min_value=0.0, max_value=0.02), st.floats(min_value=0.0, max_value=0.2)
    ),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_never_a_429_while_headers_are_present(
    limit: int,
    window: float,
    rounding: str,
    aligned: bool,
    phase: float,
    workers: int,
    latency: tuple[float, float],
    seed: int,
) -> None:
    low, high = sorted(latency)
    server = FixedWindowServer(limit, window, rounding, aligned, phase)  # type: ignore[arg-type]
    result = simulate(
        server, workers=workers, requests=min(limit * 4, 600), latency=(low, high), seed=seed
    )
    assert result.rejected == 0
    assert result.completed == min(limit * 4, 600)
    # Never asleep longer than a (rounded-up) window plus the slack of an integer reset.
    assert result.longest_sleep <= math.ceil(window) + 1.0 + 1e-6
