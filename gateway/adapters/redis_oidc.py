"""Redis OIDC stores. Keys (docs/oidc.md "Stores"), every one under the configured prefix:

- `oidc:ls:{<session id>}` hash — a login session; status moves by compare-and-set (Lua);
- `oidc:code:{<sha256 of code>}` hash — an authorization code, `used` set atomically (Lua);
- `oidc:rf:{<family>}` hash + `oidc:rt:{<family>}:<sha256 of token>` hashes — a refresh
  family and its tokens; rotation and reuse detection in one Lua script over keys that share
  the family's `{hash tag}` (Redis Cluster safe);
- `oidc:consent:{<person>}` hash — remembered consents, one field per client;
- `oidc:par:<sha256 of request_uri>` string — a pushed authorization request (RFC 9126),
  taken with GETDEL (single use).
TTLs equal the remaining life of what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.adapters.redis_store import RedisClient
from gateway.authz.oidc import CodeRecord, Consent, Family, LoginSession

#: compare-and-set of a hash record's `status` (ARGV[1] → ARGV[2]) with its other changed
#: fields (ARGV[3..]: name, value, …): login sessions and device authorizations
TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur or cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

_CONSUME = """
local d = redis.call('HGET', KEYS[1], 'd')
if not d then return false end
local first = redis.call('HSETNX', KEYS[1], 'used', '1')
return {d, first}
"""

_CREATE_FAMILY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'active')
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: family, presented token, new token. ARGV: now (s), grace (s), sealed successor.
_ROTATE = """
local fam = redis.call('HMGET', KEYS[1], 'client_id', 'revoked', 'expires_at')
if not fam[1] then return {'unknown'} end
if fam[2] == '1' then return {'revoked'} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1000 end
local tok = redis.call('HMGET', KEYS[2], 'state', 'spent_at', 'next')
if not tok[1] then return {'unknown'} end
local now = tonumber(ARGV[1])
if tok[1] == 'active' then
  redis.call('HSET', KEYS[2], 'state', 'spent', 'spent_at', ARGV[1], 'next', ARGV[3])
  redis.call('HSET', KEYS[3], 'state', 'active')
  redis.call('PEXPIRE', KEYS[3], ttl)
  return {'rotated'}
end
if now - tonumber(tok[2]) < tonumber(ARGV[2]) then
  return {'grace', tok[3] or ''}
end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('HDEL', KEYS[2], 'next')
return {'reused'}
"""

_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
else
  redis.call('HSET', KEYS[1], 'revoked', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


async def put_fields(redis: RedisClient, key: str, fields: Mapping[str, str],
                     ttl_s: float) -> None:
    """Write a record's hash fields and its time to live in one transaction."""
    pipe = redis.pipeline(transaction=True)
    mapping: dict[Any, Any] = dict(fields)
    pipe.hset(key, mapping=mapping)
    pipe.pexpire(key, _ms(ttl_s))
    await pipe.execute()


class Transition:
    """The status compare-and-set (TRANSITION) on one hash record: login sessions and
    device authorizations."""

    def __init__(self, redis: RedisClient) -> None:
        self._script = redis.register_script(TRANSITION)

    async def __call__(self, key: str, expect: str, to: str,
                       fields: Mapping[str, str]) -> bool:
        args: list[str] = [expect, to]
        for k, v in fields.items():
            args += [k, v]
        return bool(await self._script(keys=[key], args=args))


class RedisLoginSessionStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._p = prefix + "oidc:ls:"
        self._transition = Transition(redis)

    def _key(self, session_id: str) -> str:
        return f"{self._p}{{{session_id}}}"

    async def create(self, session: LoginSession, ttl_s: float) -> None:
        await put_fields(self._r, self._key(session.id), session.to_fields(), ttl_s)

    async def get(self, session_id: str) -> LoginSession | None:
        raw = await self._r.hgetall(self._key(session_id))
        return LoginSession.from_fields(_decode(raw)) if raw else None

    async def transition(self, session_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        return await self._transition(self._key(session_id), expect, to, fields)


class RedisCodeStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._p = prefix + "oidc:code:"
        self._consume = redis.register_script(_CONSUME)

    def _key(self, code_hash: str) -> str:
        return f"{self._p}{{{code_hash}}}"

    async def put(self, code_hash: str, record: CodeRecord, ttl_s: float) -> None:
        await put_fields(self._r, self._key(code_hash), {"d": record.to_json()}, ttl_s)

    async def consume(self, code_hash: str) -> tuple[CodeRecord, bool] | None:
        out = await self._consume(keys=[self._key(code_hash)])
        if not out:
            return None
        return CodeRecord.from_json(_s(out[0])), int(out[1]) == 1


class RedisRefreshStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._fp = prefix + "oidc:rf:"
        self._tp = prefix + "oidc:rt:"
        self._create = redis.register_script(_CREATE_FAMILY)
        self._rotate = redis.register_script(_ROTATE)
        self._revoke = redis.register_script(_REVOKE)

    def _fam(self, family_id: str) -> str:
        return f"{self._fp}{{{family_id}}}"

    def _tok(self, family_id: str, token_hash: str) -> str:
        return f"{self._tp}{{{family_id}}}:{token_hash}"

    async def create(self, family: Family, token_hash: str, ttl_s: float) -> bool:
        args: list[Any] = [_ms(ttl_s), ""]
        for k, v in family.to_fields().items():
            args += [k, v]
        return bool(await self._create(
            keys=[self._fam(family.family_id), self._tok(family.family_id, token_hash)],
            args=args))

    async def get(self, family_id: str) -> Family | None:
        raw = _decode(await self._r.hgetall(self._fam(family_id)))
        if "client_id" not in raw:
            return None
        return Family.from_fields(family_id, raw)

    async def rotate(self, family_id: str, presented_hash: str, new_hash: str, now: float,
                     grace_s: float, successor: str = "") -> tuple[str, str | None]:
        out = await self._rotate(
            keys=[self._fam(family_id), self._tok(family_id, presented_hash),
                  self._tok(family_id, new_hash)],
            args=[repr(now), repr(grace_s), successor])
        outcome = _s(out[0])
        stored = _s(out[1]) if len(out) > 1 else ""
        return outcome, stored or None

    async def token_state(self, family_id: str, token_hash: str) -> str | None:
        v = await self._r.hget(self._tok(family_id, token_hash), "state")
        return None if v is None else _s(v)

    async def revoke(self, family_id: str, ttl_s: float) -> None:
        await self._revoke(keys=[self._fam(family_id)], args=[_ms(ttl_s)])


class RedisConsentStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._p = prefix + "oidc:consent:"

    def _key(self, person_id: str) -> str:
        return f"{self._p}{{{person_id}}}"

    async def remember(self, person_id: str, consent: Consent) -> None:
        await self._r.hset(self._key(person_id), consent.client_id, consent.to_json())

    async def get(self, person_id: str, client_id: str) -> Consent | None:
        raw = await self._r.hget(self._key(person_id), client_id)
        return None if raw is None else Consent.from_json(_s(raw))

    async def list(self, person_id: str) -> list[Consent]:
        raw = await self._r.hgetall(self._key(person_id))
        return sorted((Consent.from_json(_s(v)) for v in raw.values()),
                      key=lambda c: c.client_id)

    async def forget(self, person_id: str, client_id: str) -> bool:
        return bool(await self._r.hdel(self._key(person_id), client_id))


class RedisPushedRequestStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._p = prefix + "oidc:par:"

    async def put(self, key: str, request_json: str, ttl_s: float) -> None:
        await self._r.set(self._p + key, request_json, px=_ms(ttl_s))

    async def take(self, key: str) -> str | None:
        raw = await self._r.getdel(self._p + key)
        return None if raw is None else _s(raw)
