"""Revocation lists in Redis: per list, under one hash tag (Cluster-safe), a version key, the
set of entries, a bounded change log (sorted set scored by version) and the log's floor.

Each change is one script: membership test, version bump, set update, log append and trim,
atomically. A read is one script too, so a full list and its version always agree.
"""

from __future__ import annotations

from typing import Any

from gateway.adapters.redis_store import RedisClient
from gateway.services.revocations import DenyListRead

# KEYS: ver, set, log, floor. ARGV: entry, revoked (1/0), now_ms, max_log
_CHANGE = """
local ver = tonumber(redis.call('GET', KEYS[1]) or '0')
local member = redis.call('SISMEMBER', KEYS[2], ARGV[1])
if (member == 1) == (ARGV[2] == '1') then return ver end
ver = math.max(ver + 1, tonumber(ARGV[3]))
if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[1])
else redis.call('SREM', KEYS[2], ARGV[1]) end
redis.call('SET', KEYS[1], ver)
redis.call('ZADD', KEYS[3], ver, ver .. ':' .. ARGV[2] .. ARGV[1])
local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if extra > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[3], extra)
  redis.call('SET', KEYS[4], dropped[#dropped])
end
return ver
"""

# KEYS: ver, set, log, floor. ARGV: since ('' = full)
_READ = """
local ver = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
local since = tonumber(ARGV[1])
if since == nil or since < floor or since > ver then
  return {ver, 1, redis.call('SMEMBERS', KEYS[2])}
end
return {ver, 0, redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. since, '+inf')}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDenyListStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:",
                 delta_events: int = 10_000) -> None:
        self._r = redis
        self._p = prefix + "deny:"
        self._max_log = delta_events
        self._change = redis.register_script(_CHANGE)
        self._read = redis.register_script(_READ)

    def _keys(self, name: str) -> list[str]:
        tag = f"{self._p}{{{name}}}"
        return [tag + ":ver", tag + ":set", tag + ":log", tag + ":floor"]

    async def change(self, name: str, entry: str, revoked: bool, now_ms: int) -> int:
        return int(await self._change(keys=self._keys(name),
                                      args=[entry, "1" if revoked else "0", now_ms,
                                            self._max_log]))

    async def version(self, name: str) -> int:
        return int(await self._r.get(self._keys(name)[0]) or 0)

    async def read(self, name: str, since: int | None) -> DenyListRead:
        ver, full, items = await self._read(keys=self._keys(name),
                                            args=["" if since is None else since])
        if int(full):
            return DenyListRead(int(ver), True, entries=frozenset(_text(m) for m in items))
        last: dict[str, bool] = {}
        for raw in items:  # "<version>:<1|0><entry>", in version order
            _, _, rest = _text(raw).partition(":")
            last[rest[1:]] = rest[:1] == "1"
        return DenyListRead(int(ver), False,
                            added=frozenset(e for e, r in last.items() if r),
                            removed=frozenset(e for e, r in last.items() if not r))
