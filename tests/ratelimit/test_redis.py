"""What only the Redis implementation has: Redis TIME, key layout and expiry, many
connections, NOSCRIPT recovery, and exact agreement with the pure GCRA (gcra.py)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.redis_ratelimit import RedisRateLimiter
from gateway.clock import FrozenClock
from gateway.ratelimit import Limit, MemoryRateLimiter, gcra_lua


def blocking(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(url, max_connections=20, timeout=5))


async def test_redis_time_refills_in_real_time(blocking_client: aioredis.Redis) -> None:
    """No clock override: the script reads Redis TIME. Waits ~0.12 s in total."""
    limiter = RedisRateLimiter(blocking_client)
    limit = Limit(rate=10, period_s=1, burst=2)     # T = 100 ms
    assert (await limiter.hit("gate:t", limit)).allowed
    assert (await limiter.hit("gate:t", limit)).allowed
    denied = await limiter.hit("gate:t", limit)
    assert not denied.allowed
    assert 0 < denied.retry_after_s <= 0.1
    await asyncio.sleep(denied.retry_after_s + 0.02)
    assert (await limiter.hit("gate:t", limit)).allowed
    assert not (await limiter.hit("gate:t", limit)).allowed


async def test_one_cluster_safe_key_per_subject_that_expires_at_its_tat(
        blocking_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(blocking_client)
    limit = Limit(rate=10, period_s=60, burst=10)   # T = 6 s
    d = await limiter.hit("gate:abc", limit, cost=3)
    assert await blocking_client.keys("*") == [b"rl:{gate:abc}"]
    pttl = await blocking_client.pttl("rl:{gate:abc}")
    assert 17_000 < pttl <= 18_000                  # the TAT is 3·T = 18 s away
    assert d.reset_after_s == pytest.approx(18, abs=0.5)
    stored = await blocking_client.get("rl:{gate:abc}")
    assert stored is not None
    tat_us = int(stored)
    seconds, micros = await blocking_client.time()
    assert tat_us - (seconds * 1_000_000 + micros) == pytest.approx(18_000_000, abs=500_000)


async def test_key_expires_so_idle_subjects_cost_no_memory(
        blocking_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(blocking_client)
    await limiter.hit("gate:brief", Limit(rate=50, period_s=1, burst=1))   # TAT 20 ms ahead
    await asyncio.sleep(0.05)
    assert await blocking_client.exists("rl:{gate:brief}") == 0


async def test_denials_and_peeks_write_nothing(blocking_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(blocking_client)
    await limiter.hit("gate:p", Limit(rate=1, period_s=60, burst=1), cost=0)
    assert await blocking_client.exists("rl:{gate:p}") == 0


def test_subject_keys_with_braces_are_refused() -> None:
    limiter = RedisRateLimiter(aioredis.Redis())      # never connects
    assert limiter.key_for("rp:x") == "rl:{rp:x}"
    with pytest.raises(ValueError, match="braces"):
        limiter.key_for("gate:{evil}")


async def test_two_clients_with_real_time_never_exceed_the_burst(redis_url: str,
                                                                blocking_client: aioredis.Redis,
                                                                ) -> None:
    """Two workers, two connection pools, 400 concurrent hits, Redis TIME: exactly the burst."""
    first, second = blocking(redis_url), blocking(redis_url)
    try:
        limit = Limit(rate=1, period_s=3600, burst=50)
        a, b = RedisRateLimiter(first), RedisRateLimiter(second)
        decisions = await asyncio.gather(*(
            limiter.hit("gate:hot", limit) for _ in range(200) for limiter in (a, b)))
        assert sum(d.allowed for d in decisions) == 50
    finally:
        await first.aclose()
        await second.aclose()


async def test_survives_script_flush(blocking_client: aioredis.Redis) -> None:
    """After a failover or SCRIPT FLUSH, EVALSHA answers NOSCRIPT and redis-py reloads."""
    limiter = RedisRateLimiter(blocking_client)
    limit = Limit(rate=1, period_s=60, burst=3)
    assert (await limiter.hit("k", limit)).allowed
    await blocking_client.script_flush()
    assert (await limiter.hit("k", limit)).remaining == 1


async def test_script_refuses_bad_arguments(blocking_client: aioredis.Redis) -> None:
    script = blocking_client.register_script(gcra_lua())
    bad: list[list[int | str]] = [[0, 5, 1], [100, 0, 1], [100, 5, 6], [100, 5, -1], ["x", 5, 1]]
    for args in bad:
        with pytest.raises(redis.exceptions.ResponseError, match="gcra"):
            await script(keys=["rl:{k}"], args=args)
    assert await blocking_client.exists("rl:{k}") == 0


steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400_000),   # µs to advance
        st.sampled_from(["a", "b"]),
        st.integers(min_value=0, max_value=4),         # cost
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, burst=st.integers(min_value=4, max_value=8),
       rate=st.integers(min_value=1, max_value=30))
def test_lua_script_and_python_agree_exactly(redis_url: str, steps: list[tuple[int, str, int]],
                                             burst: int, rate: int) -> None:
    """Differential test: the Lua port and gcra.py give identical decisions on any sequence."""
    limit = Limit(rate=rate, period_s=1, burst=burst)

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.flushdb()
            clock = FrozenClock()
            memory, lua = MemoryRateLimiter(clock), RedisRateLimiter(client, clock=clock)
            for advance_us, key, cost in steps:
                clock.advance(advance_us / 1_000_000)
                assert await lua.hit(key, limit, cost) == await memory.hit(key, limit, cost)
        finally:
            await client.aclose()

    asyncio.run(run())
