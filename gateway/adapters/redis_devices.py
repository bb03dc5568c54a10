"""Enrolled devices and the device revocation log in Redis (docs/devices.md "Storage").

Keys (prefix ``gw:`` by default):

* ``<p>devices:{<person>}`` — HASH device id → the device record as JSON (person, alg, key
  hash, created_at, certificates still in their window). Every change is ONE Lua script on
  this ONE key, so the per-person maximum holds under concurrent enrolments.
* ``<p>devices-removed:{<person>}`` — SET of the key hashes of removed devices (same slot): a
  removed key is never certified again for that person.
* ``<p>{device-revocations}:log`` — HASH serial → not_after; ``…:by-version`` and
  ``…:by-expiry`` — ZSETs of serials scored by log version and by not_after; ``…:version`` —
  the log version: the change's time in ms, or the previous version + 1 when that is not
  larger (it keeps growing across a store that lost its data, as the card deny-list's).
  One hash tag, so each script runs on one Redis Cluster slot. Entries go when their
  certificate's window (plus a minute) has passed.

Times are the gateway clock's (passed in). Nothing is retried: a lost connection fails the
call (the enrolment answers 503, nothing half-written matters: see DeviceService.remove).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.adapters.redis_store import RedisClient
from gateway.services.devices import (
    REVOCATION_GRACE_S,
    AddResult,
    DeviceRecord,
    RevokedSerial,
)

ADD_LUA = """
if redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 1 then return 'removed' end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return 'added'
end
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(raw)['key_hash'] == ARGV[4] then return 'exists' end
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'added'
"""

ADD_CERT_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local doc = cjson.decode(raw)
local cut = tonumber(ARGV[4])
local keep = {}
for _, c in ipairs(doc['certificates']) do
  if tonumber(c[2]) + tonumber(ARGV[5]) > cut then keep[#keep + 1] = c end
end
keep[#keep + 1] = {ARGV[2], tonumber(ARGV[3])}
doc['certificates'] = keep
local out = cjson.encode(doc)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"""

REMOVE_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], cjson.decode(raw)['key_hash'])
return raw
"""

REVOKE_LUA = """
local v = tonumber(redis.call('GET', KEYS[4]) or '0')
if #ARGV > 2 then
  v = math.max(tonumber(ARGV[2]), v + 1)
  redis.call('SET', KEYS[4], v)
  for i = 3, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
      redis.call('ZADD', KEYS[2], v, ARGV[i])
      redis.call('ZADD', KEYS[3], tonumber(ARGV[i + 1]), ARGV[i])
    end
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
for _, s in ipairs(gone) do
  redis.call('HDEL', KEYS[1], s); redis.call('ZREM', KEYS[2], s); redis.call('ZREM', KEYS[3], s)
end
return v
"""

READ_LUA = """
local v = tonumber(redis.call('GET', KEYS[4]) or '0')
local out = {v}
local got = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #got, 2 do
  local naf = redis.call('HGET', KEYS[1], got[i])
  if naf and tonumber(naf) > tonumber(ARGV[2]) then
    out[#out + 1] = got[i]; out[#out + 1] = naf; out[#out + 1] = got[i + 1]
  end
end
return out
"""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisDeviceStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._add = redis.register_script(ADD_LUA)
        self._add_cert = redis.register_script(ADD_CERT_LUA)
        self._remove = redis.register_script(REMOVE_LUA)
        self._revoke = redis.register_script(REVOKE_LUA)
        self._read = redis.register_script(READ_LUA)
        tag = f"{prefix}{{device-revocations}}"
        self._log_keys = [f"{tag}:log", f"{tag}:by-version", f"{tag}:by-expiry", f"{tag}:version"]

    def _key(self, person_id: str) -> str:
        return f"{self._prefix}devices:{{{person_id}}}"

    def _removed_key(self, person_id: str) -> str:
        return f"{self._prefix}devices-removed:{{{person_id}}}"

    async def add(self, record: DeviceRecord, max_per_person: int) -> AddResult:
        got = _text(await self._add(
            keys=[self._key(record.person_id), self._removed_key(record.person_id)],
            args=[record.device_id, json.dumps(record.to_json()), max_per_person,
                  record.key_hash]))
        return got if got in ("full", "removed", "exists") else "added"  # type: ignore[return-value]

    async def for_person(self, person_id: str) -> Sequence[DeviceRecord]:
        raw = await self._redis.hgetall(self._key(person_id))
        return [DeviceRecord.from_json(json.loads(v)) for v in raw.values()]

    async def add_certificate(self, person_id: str, device_id: str, serial: str,
                              not_after: int, now: float) -> DeviceRecord | None:
        got = await self._add_cert(keys=[self._key(person_id)],
                                   args=[device_id, serial, int(not_after), now,
                                         REVOCATION_GRACE_S])
        return None if got is None else DeviceRecord.from_json(json.loads(got))

    async def remove(self, person_id: str, device_id: str) -> DeviceRecord | None:
        got = await self._remove(keys=[self._key(person_id), self._removed_key(person_id)],
                                 args=[device_id])
        return None if got is None else DeviceRecord.from_json(json.loads(got))

    async def revoke_serials(self, serials: Sequence[tuple[str, int]], now: float) -> int:
        args: list[Any] = [now - REVOCATION_GRACE_S, int(now * 1000)]
        for serial, not_after in serials:
            args += [serial, int(not_after)]
        return int(await self._revoke(keys=self._log_keys, args=args))

    async def revocations(self, since: int, now: float) -> tuple[int, list[RevokedSerial]]:
        got = await self._read(keys=self._log_keys, args=[since, now - REVOCATION_GRACE_S])
        version = int(got[0])
        entries = [RevokedSerial(_text(got[i]), int(_text(got[i + 1])), int(float(got[i + 2])))
                   for i in range(1, len(got), 3)]
        return version, entries

    async def ping(self) -> None:
        await self._redis.ping()
