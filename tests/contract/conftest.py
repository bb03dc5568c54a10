"""The store contract suite runs every test here once per implementation: memory and real Redis.

A test asks for `backend` and builds the store it checks from it (`backend.single_use()`, or its
own factory using `backend.name`, `backend.redis`, `backend.coalescer`, `backend.clock`).
`await backend.elapse(s)` lets time pass: the frozen clock moves for memory; for Redis, whose
TTLs run on the server's clock, it really sleeps (keep it short).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.adapters.redis_store import Coalescer, RedisClientStore, RedisSingleUse
from gateway.clock import FrozenClock
from gateway.ports import ClientStore, SingleUse


@dataclass
class Backend:
    name: str
    clock: FrozenClock
    redis: aioredis.Redis | None = None
    coalescer: Coalescer | None = None
    prefix: str = "test:"
    url: str = ""

    async def elapse(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.redis is not None:
            await asyncio.sleep(seconds)

    def single_use(self) -> SingleUse:
        if self.coalescer is not None:
            return RedisSingleUse(self.coalescer, self.prefix)
        return MemorySingleUse(self.clock)

    async def another_client(self) -> Any:
        """A second, independent client of the same server (another worker's view)."""
        assert self.redis is not None
        if self.name == "redis-cluster":
            from redis.asyncio.cluster import RedisCluster

            # initialise before concurrent use: redis-py's lazy cluster set-up races otherwise
            return await RedisCluster.from_url(self.url).initialize()
        return aioredis.Redis.from_url(self.url)

    def clients(self) -> ClientStore:
        if self.redis is not None:
            # as the composition root builds it: reads through the coalescer
            return RedisClientStore(self.redis, self.prefix, self.coalescer)
        return MemoryClientStore()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Backend]:
    clock = FrozenClock()
    if request.param == "memory":
        yield Backend("memory", clock)
        return
    if request.param == "redis-cluster":
        # The same suite on a real Redis Cluster: multi-key scripts must share one hash slot.
        from redis.asyncio.cluster import RedisCluster

        url = request.getfixturevalue("redis_cluster_url")
        cluster = await RedisCluster.from_url(url).initialize()
        await cluster.flushall()
        coalescer = Coalescer(cluster)
        try:
            yield Backend("redis-cluster", clock, cluster, coalescer,  # type: ignore[arg-type]
                          url=url)
        finally:
            await coalescer.aclose()
            await cluster.aclose()
        return
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    coalescer = Coalescer(client)
    try:
        yield Backend("redis", clock, client, coalescer, url=redis_url)
    finally:
        await coalescer.aclose()
        await client.aclose()
