"""The `RateLimiter` port on Redis: GCRA as one atomic Lua script (gateway/ratelimit/gcra.lua),
the limiter the gateway builds — and the one under the contract suite (tests/ratelimit/).

One key per subject, `<prefix>{<key>}`: every call touches exactly one key, so it is safe on
Redis Cluster, and the hash tag keeps any future per-subject companion keys on the same slot.
Time comes from Redis `TIME`, so workers with skewed clocks agree. The script is loaded with
SCRIPT LOAD and run by EVALSHA through the Coalescer (one pipeline per loop tick for every
in-flight request's commands, instead of a redis-py round trip per hit); on NOSCRIPT
(failover, SCRIPT FLUSH) it is loaded again and the hit retried once. See
docs/rate-limits.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Any, Protocol

import redis.exceptions

from gateway.adapters.redis_store import Coalescer, RedisClient
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

__all__ = ["CommandQueue", "RedisRateLimiter"]


class CommandQueue(Protocol):
    """What the limiter needs of `gateway.adapters.redis_store.Coalescer`."""

    def execute(self, *args: Any, **options: Any) -> Awaitable[Any]: ...


class RedisRateLimiter:
    """GCRA shared by every worker through Redis.

    `commands` is the worker's Coalescer (one is made over `redis` when not given). `clock`
    is for tests only: when given, its time is sent to the script instead of Redis `TIME`
    (which would reintroduce clock skew between workers in production).
    """

    def __init__(self, redis: RedisClient, prefix: str = "rl:", *,
                 commands: CommandQueue | None = None, clock: Clock | None = None) -> None:
        self._commands: CommandQueue = commands if commands is not None else Coalescer(redis)
        self._script_load = redis.script_load
        self._prefix = prefix
        self._clock = clock
        self._script = gcra_lua()
        self._sha = hashlib.sha1(self._script.encode("utf-8")).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def load(self) -> None:
        """SCRIPT LOAD (start-up; a hit that meets NOSCRIPT loads it itself)."""
        await self._script_load(self._script)

    def key_for(self, key: str) -> str:
        """The Redis key of a subject: `rl:{gate:abc}` for `gate:abc`."""
        return redis_key(self._prefix, key)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        check_cost(cost, limit.burst)
        args: tuple[Any, ...] = ("EVALSHA", self._sha, 1, self.key_for(key),
                                 limit.emission_interval_us, limit.burst, cost)
        if self._clock is not None:
            args += (to_us(self._clock.now()),)
        try:
            reply = await self._commands.execute(*args)
        except redis.exceptions.NoScriptError:
            await self.load()
            reply = await self._commands.execute(*args)
        return decision_from_reply(reply, limit)
