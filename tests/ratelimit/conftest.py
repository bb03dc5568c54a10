"""One contract, two implementations: every test taking `make_limiter` runs on the in-process
limiter and on the Redis script (a real redis-server, see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from gateway.adapters.redis_ratelimit import RedisRateLimiter
from gateway.clock import FrozenClock
from gateway.ratelimit import MemoryRateLimiter, RateLimiter

LimiterFactory = Callable[[], tuple[RateLimiter, FrozenClock]]


@pytest.fixture
async def blocking_client(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[
        aioredis.Redis]:
    """A client as the gateway should build it: a BlockingConnectionPool, because redis-py's
    default async pool raises MaxConnectionsError beyond 100 in-flight commands instead of
    queueing (200 concurrent hits fail on it). `redis_client` is requested for its FLUSHDB."""
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=20, timeout=5)
    client = aioredis.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> LimiterFactory:
    """Returns a factory of (limiter, clock). Both read time from the FrozenClock: the Redis
    script takes the test's `now` as its optional ARGV[4] instead of Redis TIME (the TIME path
    has its own tests in test_redis.py), so refill is tested exactly and without sleeping."""
    if request.param == "memory":
        def memory() -> tuple[RateLimiter, FrozenClock]:
            clock = FrozenClock()
            return MemoryRateLimiter(clock), clock
        return memory

    client: aioredis.Redis = request.getfixturevalue("blocking_client")

    def redis_backed() -> tuple[RateLimiter, FrozenClock]:
        clock = FrozenClock()
        return RedisRateLimiter(client, clock=clock), clock
    return redis_backed
