"""The RateLimiter contract, run on MemoryRateLimiter and RedisRateLimiter alike."""

from __future__ import annotations

import asyncio

import pytest

from gateway.ratelimit import Limit
from tests.ratelimit.conftest import LimiterFactory

# 10 per second (T = 0.1 s), 5 at once.
TEN_PER_S = Limit(rate=10, period_s=1, burst=5)
# Practically no refill while a test runs: the burst alone decides.
HOURLY = Limit(rate=1, period_s=3600, burst=50)


async def test_allows_exactly_burst_at_once_then_denies(make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    decisions = [await limiter.hit("gate:a", TEN_PER_S) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after_s == 0 for d in decisions)
    assert decisions[-1].reset_after_s == pytest.approx(0.5)

    denied = await limiter.hit("gate:a", TEN_PER_S)
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.retry_after_s == pytest.approx(0.1)  # one emission interval
    assert denied.reset_after_s == pytest.approx(0.5)
    assert denied.window_s == pytest.approx(0.5)


async def test_denial_spends_nothing(make_limiter: LimiterFactory) -> None:
    limiter, clock = make_limiter()
    for _ in range(5):
        await limiter.hit("k", TEN_PER_S)
    for _ in range(20):
        assert not (await limiter.hit("k", TEN_PER_S)).allowed
    clock.advance(0.1)
    assert (await limiter.hit("k", TEN_PER_S)).allowed


async def test_refills_at_the_rate(make_limiter: LimiterFactory) -> None:
    limiter, clock = make_limiter()
    for _ in range(5):
        assert (await limiter.hit("k", TEN_PER_S)).allowed
    denied = await limiter.hit("k", TEN_PER_S)
    assert not denied.allowed

    clock.advance(0.099)
    assert not (await limiter.hit("k", TEN_PER_S)).allowed
    clock.advance(0.001)                        # exactly retry_after later
    assert (await limiter.hit("k", TEN_PER_S)).allowed
    assert not (await limiter.hit("k", TEN_PER_S)).allowed

    clock.advance(0.3)                          # three intervals earn exactly three cells
    assert [(await limiter.hit("k", TEN_PER_S)).allowed for _ in range(4)] == [
        True, True, True, False]

    clock.advance(60)                           # long idle: back to the burst, not beyond
    assert [(await limiter.hit("k", TEN_PER_S)).allowed for _ in range(6)] == [
        True] * 5 + [False]


async def test_sustained_rate_over_a_long_run(make_limiter: LimiterFactory) -> None:
    limiter, clock = make_limiter()
    allowed = 0
    for _ in range(300):                        # 10 s, a request every 10 ms (100 rps offered)
        allowed += (await limiter.hit("k", TEN_PER_S)).allowed
        clock.advance(0.01)
    # burst + rate·elapsed = 5 + 10·2.99 → 34 (the 300th request is at t = 2.99 s)
    assert allowed == 5 + 29


async def test_keys_are_independent(make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    for _ in range(5):
        assert (await limiter.hit("gate:a", TEN_PER_S)).allowed
    assert not (await limiter.hit("gate:a", TEN_PER_S)).allowed
    b = await limiter.hit("gate:b", TEN_PER_S)
    assert b.allowed and b.remaining == 4
    assert (await limiter.hit("app_issue:a", TEN_PER_S)).allowed


async def test_cost_greater_than_one(make_limiter: LimiterFactory) -> None:
    limiter, clock = make_limiter()
    limit = Limit(rate=10, period_s=1, burst=10)
    first = await limiter.hit("k", limit, cost=4)
    assert first.allowed and first.remaining == 6
    second = await limiter.hit("k", limit, cost=4)
    assert second.allowed and second.remaining == 2
    third = await limiter.hit("k", limit, cost=4)
    assert not third.allowed
    assert third.remaining == 2                 # two cost-1 cells would still conform
    assert third.retry_after_s == pytest.approx(0.2)
    assert (await limiter.hit("k", limit, cost=2)).allowed
    assert not (await limiter.hit("k", limit, cost=1)).allowed
    clock.advance(0.4)
    assert (await limiter.hit("k", limit, cost=4)).allowed


async def test_cost_zero_peeks_without_spending(make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    await limiter.hit("k", TEN_PER_S, cost=2)
    for _ in range(3):
        peek = await limiter.hit("k", TEN_PER_S, cost=0)
        assert peek.allowed and peek.remaining == 3


async def test_cost_above_burst_is_a_caller_error(make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    with pytest.raises(ValueError, match="burst"):
        await limiter.hit("k", TEN_PER_S, cost=6)
    with pytest.raises(ValueError):
        await limiter.hit("k", TEN_PER_S, cost=-1)
    assert (await limiter.hit("k", TEN_PER_S)).remaining == 4   # nothing was spent


async def test_concurrent_callers_never_exceed_the_burst(make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    decisions = await asyncio.gather(*(limiter.hit("gate:hot", HOURLY) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == HOURLY.burst
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(HOURLY.burst))


async def test_concurrent_mixed_costs_never_exceed_the_burst(
        make_limiter: LimiterFactory) -> None:
    limiter, _ = make_limiter()
    costs = [1, 2, 3] * 60
    decisions = await asyncio.gather(*(limiter.hit("k", HOURLY, cost=c) for c in costs))
    spent = sum(c for c, d in zip(costs, decisions, strict=True) if d.allowed)
    assert spent <= HOURLY.burst
    assert spent >= HOURLY.burst - 2            # denials only once fewer than 3 cells remain
