"""Operator stores in Redis: the live scene catalogue, the venue registry (点位) with its
gate assignments, and the named operators.

Keys (one `{ops}` hash tag: every script's keys share one Cluster slot):

* `<prefix>{ops}:scenes`            — hash: scene id → JSON; `__v` the catalogue version;
                                      `__order` the JSON list of ids in catalogue order
* `<prefix>{ops}:scenes:hist:<id>`  — list: the scene's revisions, newest first (capped)
* `<prefix>{ops}:venues`            — hash: venue id → JSON; `__v` the registry version
* `<prefix>{ops}:gates`             — hash: gate client id → venue id
* `<prefix>{ops}:operators`         — hash: operator name → JSON (token as SHA-256 only)
* `<prefix>{ops}:operators:tokens`  — hash: token SHA-256 → operator name

Every worker polls `HGET …scenes __v` and `HGET …venues __v` (one small read each, off the
request path) and reloads only when a version moved. Writes are Lua scripts: a change and its
version bump are one atomic step, so a poller never sees one without the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.adapters.redis_store import RedisClient

SEED_LUA = """
if redis.call('HEXISTS', KEYS[1], '__v') == 1 then return 0 end
local ids = cjson.decode(ARGV[1])
for i, id in ipairs(ids) do
  redis.call('HSET', KEYS[1], 's:' .. id, ARGV[i + 1], 'r:' .. id, 1)
  redis.call('DEL', KEYS[i + 1])
  redis.call('LPUSH', KEYS[i + 1], '{"revision":1,"scene":' .. ARGV[i + 1] ..
             ',"meta":{"updated_by":"seed","updated_at":null}}')
end
redis.call('HSET', KEYS[1], '__order', ARGV[1], '__v', 1)
return 1
"""

# The scene JSON is stored as given (no cjson round trip: cjson turns [] into {}); the
# revision lives beside it in `r:<id>` and the history entry is assembled by concatenation.
PUT_SCENE_LUA = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'r:' .. ARGV[1]) or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= rev then return {0, rev} end
if rev == 0 then
  local order = cjson.decode(redis.call('HGET', KEYS[1], '__order') or '[]')
  table.insert(order, ARGV[1])
  redis.call('HSET', KEYS[1], '__order', cjson.encode(order))
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[3], 'r:' .. ARGV[1], rev + 1)
redis.call('LPUSH', KEYS[2], '{"revision":' .. (rev + 1) .. ',"scene":' .. ARGV[3] ..
           ',"meta":' .. ARGV[4] .. '}')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
local v = redis.call('HINCRBY', KEYS[1], '__v', 1)
return {v, rev + 1}
"""

PUT_VENUES_LUA = """
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('HINCRBY', KEYS[1], '__v', 1)
"""

ASSIGN_GATE_LUA = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[1], '__v', 1)
"""

CREATE_OPERATOR_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_META = ("__v", "__order")


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class RedisSceneStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:", history_max: int = 50) -> None:
        self._r = redis
        base = f"{prefix}{{ops}}:scenes"
        self.key = base
        self._hist = base + ":hist:"
        self._history_max = history_max
        self._seed = redis.register_script(SEED_LUA)
        self._put = redis.register_script(PUT_SCENE_LUA)

    async def version(self) -> int:
        v = await self._r.hget(self.key, "__v")
        return int(v) if v is not None else 0

    async def seed(self, scenes: Sequence[Mapping[str, Any]]) -> bool:
        ids = [str(s["id"]) for s in scenes]
        docs = [_json(_bare(s)) for s in scenes]
        return int(await self._seed(keys=[self.key, *(self._hist + i for i in ids)],
                                    args=[_json(ids), *docs])) == 1

    async def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        raw = {_s(k): _s(v) for k, v in (await self._r.hgetall(self.key)).items()}
        version = int(raw.get("__v", 0))
        order = json.loads(raw.get("__order", "[]"))
        return version, [{**json.loads(raw["s:" + i]), "revision": int(raw.get("r:" + i, 1))}
                         for i in order if "s:" + i in raw]

    async def put(self, scene: Mapping[str, Any], expected_revision: int | None,
                  meta: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
        sid = str(scene["id"])
        bare = _bare(scene)
        ok, rev = await self._put(
            keys=[self.key, self._hist + sid],
            args=[sid, "" if expected_revision is None else str(expected_revision),
                  _json(bare), _json(dict(meta)), str(self._history_max)])
        if int(ok) == 0:
            return None
        return int(ok), {**bare, "revision": int(rev)}

    async def history(self, scene_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self._r.lrange(self._hist + scene_id, 0, max(0, limit - 1))
        out = []
        for r in rows:
            h = json.loads(_s(r))
            out.append({"revision": h["revision"], "scene": {**h["scene"],
                                                             "revision": h["revision"]},
                        **h["meta"]})
        return out

    async def ping(self) -> None:
        await self._r.ping()


def _bare(scene: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scene.items() if k != "revision"}


class RedisVenueStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self.key = f"{prefix}{{ops}}:venues"
        self.gates_key = f"{prefix}{{ops}}:gates"
        self._put = redis.register_script(PUT_VENUES_LUA)
        self._assign = redis.register_script(ASSIGN_GATE_LUA)

    async def version(self) -> int:
        v = await self._r.hget(self.key, "__v")
        return int(v) if v is not None else 0

    async def get(self, venue_id: str) -> dict[str, Any] | None:
        if venue_id in _META:
            return None
        raw = await self._r.hget(self.key, venue_id)
        return json.loads(_s(raw)) if raw is not None else None

    async def list(self) -> list[dict[str, Any]]:
        raw = await self._r.hgetall(self.key)
        return [json.loads(_s(v)) for k, v in raw.items() if _s(k) not in _META]

    async def put_many(self, venues: Sequence[Mapping[str, Any]]) -> int:
        args: list[str] = []
        for v in venues:
            args += [str(v["id"]), _json(dict(v))]
        return int(await self._put(keys=[self.key], args=args))

    async def assign_gate(self, gate_id: str, venue_id: str) -> int:
        return int(await self._assign(keys=[self.key, self.gates_key], args=[gate_id, venue_id]))

    async def gate_venues(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self._r.hgetall(self.gates_key)).items()}

    async def ping(self) -> None:
        await self._r.ping()


class RedisOperatorStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self.key = f"{prefix}{{ops}}:operators"
        self.tokens_key = f"{prefix}{{ops}}:operators:tokens"
        self._create = redis.register_script(CREATE_OPERATOR_LUA)

    async def get(self, name: str) -> dict[str, Any] | None:
        raw = await self._r.hget(self.key, name)
        return json.loads(_s(raw)) if raw is not None else None

    async def by_token_hash(self, token_hash: str) -> dict[str, Any] | None:
        name = await self._r.hget(self.tokens_key, token_hash)
        return await self.get(_s(name)) if name is not None else None

    async def create(self, operator: Mapping[str, Any]) -> bool:
        return int(await self._create(
            keys=[self.key, self.tokens_key],
            args=[str(operator["name"]), str(operator["token_hash"]),
                  _json(dict(operator))])) == 1

    async def update(self, operator: Mapping[str, Any]) -> None:
        await self._r.hset(self.key, str(operator["name"]), _json(dict(operator)))

    async def list(self) -> list[dict[str, Any]]:
        return [json.loads(_s(v)) for v in (await self._r.hgetall(self.key)).values()]

    async def ping(self) -> None:
        await self._r.ping()
