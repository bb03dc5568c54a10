"""Hypothesis properties of the pure GCRA step (gateway/ratelimit/gcra.py)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit.gcra import Limit, gcra, gcra_us, to_us

START = 1_800_000_000.0

limits = st.builds(
    Limit,
    rate=st.integers(min_value=1, max_value=1000),
    period_s=st.sampled_from([0.1, 0.25, 1, 1.5, 60, 3600]),
    burst=st.integers(min_value=1, max_value=20),
)
# (µs since the previous request, cost as a fraction of the burst)
traffic = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3_000_000), st.floats(0, 1)),
    min_size=1, max_size=60,
)


def run(limit: Limit, steps: list[tuple[int, float]]) -> list[tuple[int, int, bool]]:
    """Feed the traffic through `gcra` (float API); returns (t_us, cost, allowed) per request."""
    tat: float | None = None
    t_us = to_us(START)
    out = []
    for gap_us, share in steps:
        t_us += gap_us
        cost = max(1, round(share * limit.burst))
        decision, new_tat = gcra(tat, t_us / 1_000_000, limit, cost)
        if new_tat is not None:
            assert tat is None or new_tat > tat                 # the TAT only moves forward
            tat = new_tat
        out.append((t_us, cost, decision.allowed))
    return out


@given(limit=limits, steps=traffic)
def test_never_more_than_burst_plus_elapsed_times_rate_in_any_window(
        limit: Limit, steps: list[tuple[int, float]]) -> None:
    history = run(limit, steps)
    rate_per_us = Fraction(limit.rate) / (Fraction(repr(float(limit.period_s))) * 1_000_000)
    for i in range(len(history)):
        admitted = 0
        for j in range(i, len(history)):
            t_j, cost, allowed = history[j]
            admitted += cost if allowed else 0
            elapsed_us = t_j - history[i][0]
            assert admitted <= limit.burst + elapsed_us * rate_per_us


@given(limit=limits, steps=traffic)
def test_decisions_are_sane(limit: Limit, steps: list[tuple[int, float]]) -> None:
    tat: float | None = None
    t = START
    for gap_us, share in steps:
        t += gap_us / 1_000_000
        cost = max(1, round(share * limit.burst))
        d, new_tat = gcra(tat, t, limit, cost)
        assert d.limit == limit.burst
        assert 0 <= d.remaining <= limit.burst
        assert d.retry_after_s >= 0 and d.reset_after_s >= 0
        assert d.reset_after_s <= limit.window_s + 1e-9
        if d.allowed:
            assert d.retry_after_s == 0 and new_tat is not None
            tat = new_tat
        else:
            assert d.retry_after_s > 0 and new_tat is None
            assert d.retry_after_s <= limit.window_s + 1e-9


@given(limit=limits, steps=traffic)
def test_retry_after_is_exact(limit: Limit, steps: list[tuple[int, float]]) -> None:
    """Denied at `now`: denied 1 µs before now + retry_after, allowed at it."""
    interval, tat = limit.emission_interval_us, None
    now = to_us(START)
    for gap_us, share in steps:
        now += gap_us
        cost = max(1, round(share * limit.burst))
        d = gcra_us(tat, now, interval, limit.burst, cost)
        if d.allowed:
            tat = d.new_tat_us
            continue
        later = now + d.retry_after_us
        assert not gcra_us(tat, later - 1, interval, limit.burst, cost).allowed
        assert gcra_us(tat, later, interval, limit.burst, cost).allowed


@given(limit=limits, tat_ahead=st.integers(min_value=-10**7, max_value=10**8),
       t1=st.integers(min_value=0, max_value=10**8), dt=st.integers(min_value=0, max_value=10**8),
       share=st.floats(0, 1))
def test_monotone_in_time_and_cost(limit: Limit, tat_ahead: int, t1: int, dt: int,
                                   share: float) -> None:
    interval, burst = limit.emission_interval_us, limit.burst
    tat = to_us(START) + min(tat_ahead, burst * interval)     # a reachable state
    now1, now2 = to_us(START) + t1, to_us(START) + t1 + dt
    cost = max(1, round(share * burst))
    early, late = gcra_us(tat, now1, interval, burst, cost), gcra_us(tat, now2, interval, burst,
                                                                      cost)
    if early.allowed:
        assert late.allowed                         # waiting never hurts
    # what is left grows with time (on a peek: an admission reports what is left after it)
    assert (gcra_us(tat, now1, interval, burst, 0).remaining
            <= gcra_us(tat, now2, interval, burst, 0).remaining)
    assert early.retry_after_us >= late.retry_after_us
    if early.allowed:                               # a cheaper request would conform too
        assert gcra_us(tat, now1, interval, burst, cost - 1).allowed


@given(limit=limits)
def test_a_fresh_subject_gets_exactly_the_burst_at_once(limit: Limit) -> None:
    tat: float | None = None
    allowed = 0
    for _ in range(limit.burst + 3):
        d, new_tat = gcra(tat, START, limit)
        if d.allowed:
            allowed += 1
            tat = new_tat
    assert allowed == limit.burst


@given(limit=limits)
def test_emission_interval_rounds_up_by_less_than_a_microsecond(limit: Limit) -> None:
    exact = Fraction(repr(float(limit.period_s))) * 1_000_000 / limit.rate
    assert exact <= limit.emission_interval_us < exact + 1


def test_decimal_periods_give_exact_intervals() -> None:
    assert Limit(rate=1, period_s=0.1, burst=1).emission_interval_us == 100_000
    assert Limit(rate=3, period_s=1, burst=1).emission_interval_us == 333_334
    assert Limit(rate=50, period_s=1, burst=100).window_s == 2.0


@given(st.integers(min_value=0, max_value=2**32 * 1_000_000))
def test_microseconds_survive_the_float_round_trip(us: int) -> None:
    assert to_us(us / 1_000_000) == us


@pytest.mark.parametrize("kwargs", [
    {"rate": 0, "period_s": 1, "burst": 1},
    {"rate": 1, "period_s": 0, "burst": 1},
    {"rate": 1, "period_s": float("inf"), "burst": 1},
    {"rate": 1, "period_s": float("nan"), "burst": 1},
    {"rate": 1, "period_s": 1, "burst": 0},
    {"rate": 1.5, "period_s": 1, "burst": 1},
    {"rate": True, "period_s": 1, "burst": 1},
])
def test_limit_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Limit(**kwargs)  # type: ignore[arg-type]


def test_cost_must_fit_the_burst() -> None:
    limit = Limit(rate=1, period_s=1, burst=3)
    with pytest.raises(ValueError):
        gcra(None, START, limit, cost=4)
    with pytest.raises(ValueError):
        gcra(None, START, limit, cost=-1)
