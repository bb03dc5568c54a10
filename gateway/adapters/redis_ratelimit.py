"""The `RateLimiter` port on Redis: GCRA as one atomic Lua script (gateway/ratelimit/gcra.lua).

One key per subject, `<prefix>{<key>}`: every call touches exactly one key, so it is safe on
Redis Cluster, and the hash tag keeps any future per-subject companion keys on the same slot.
Time comes from Redis `TIME`, so workers with skewed clocks agree. The script is sent once
with SCRIPT LOAD and then run by EVALSHA; redis-py reloads it on NOSCRIPT (after a failover
or SCRIPT FLUSH). See docs/rate-limits.md.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.clock import Clock
from gateway.ratelimit import gcra_lua
from gateway.ratelimit.gcra import (
    Decision,
    Limit,
    check_cost,
    decision_from_reply,
    redis_key,
    to_us,
)


class RedisRateLimiter:
    """GCRA shared by every worker through Redis.

    `clock` is for tests only: when given, its time is sent to the script instead of Redis
    `TIME` (which would reintroduce clock skew between workers in production).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str = "rl:", *,
                 clock: Clock | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._script = redis.register_script(gcra_lua())

    def key_for(self, key: str) -> str:
        """The Redis key of a subject: `rl:{gate:abc}` for `gate:abc`."""
        return redis_key(self._prefix, key)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        check_cost(cost, limit.burst)
        args: list[int] = [limit.emission_interval_us, limit.burst, cost]
        if self._clock is not None:
            args.append(to_us(self._clock.now()))
        reply = await self._script(keys=[self.key_for(key)], args=args)
        return decision_from_reply(reply, limit)
