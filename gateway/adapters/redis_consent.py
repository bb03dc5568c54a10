"""Consents in Redis (docs/consents.md "Storage").

Keys (prefix `gw:` by default):

* `<p>consent:{<id>}` — HASH: `doc` (immutable JSON: client, subject, person, types, purpose,
  times, max_uses) plus the mutable `status`, `uses`, `decided_at`, `revoked_at`, and copies
  of `approve_by`, `expires_at`, `max_uses` for the scripts. Expires `retain_s` after the
  consent's own expiry. Every state change and every use is ONE Lua script on this ONE key:
  the status, lifetime and uses it decides on are read in the step that changes them, so a
  revocation is seen by the next fetch on any worker and two fetches cannot share a last use.
* `<p>consents:person:{<person>}` — SET of the person's consent ids (their list).
* `<p>consent-approval:<sha256(code)>` — the consent id; PX = the approval window; deleted
  on its single use (compare-and-delete script).
* `<p>subject:<sector>:<subject>` — the person id the gateway handed this pairwise subject
  out for (the subject index); TTL refreshed on every remember.

Times are the gateway clock's (passed in), so tests can move a frozen clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from gateway.adapters.redis_store import Coalescer, RedisClient, text
from gateway.services.consents import Consent

EFFECTIVE_LUA = """
local function effective(now)
  local st = redis.call('HGET', KEYS[1], 'status')
  if not st then return nil end
  local approve_by = tonumber(redis.call('HGET', KEYS[1], 'approve_by'))
  if st == 'awaiting_authorisation' and now >= approve_by then
    return 'expired'
  end
  if st == 'authorised' and now >= tonumber(redis.call('HGET', KEYS[1], 'expires_at')) then
    return 'expired'
  end
  return st
end
"""

TRANSITION_LUA = EFFECTIVE_LUA + """
local now = tonumber(ARGV[1])
local before = effective(now)
if not before then return {0, false} end
local ok = false
for i = 3, #ARGV do if ARGV[i] == before then ok = true end end
if not ok then return {0, before} end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[2] == 'authorised' or ARGV[2] == 'rejected' then
  redis.call('HSET', KEYS[1], 'decided_at', ARGV[1])
elseif ARGV[2] == 'revoked' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
end
return {1, before}
"""

TAKE_USE_LUA = EFFECTIVE_LUA + """
local now = tonumber(ARGV[1])
local before = effective(now)
if not before then return {0, false, 0} end
local uses = tonumber(redis.call('HGET', KEYS[1], 'uses'))
local max = tonumber(redis.call('HGET', KEYS[1], 'max_uses'))
if before ~= 'authorised' then return {0, before, uses} end
if uses >= max then return {0, 'exhausted', uses} end
uses = redis.call('HINCRBY', KEYS[1], 'uses', 1)
if uses >= max then redis.call('HSET', KEYS[1], 'status', 'exhausted') end
return {1, before, uses}
"""

REFUND_LUA = """
local uses = tonumber(redis.call('HGET', KEYS[1], 'uses') or '0')
if uses <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'uses', -1)
if redis.call('HGET', KEYS[1], 'status') == 'exhausted' then
  redis.call('HSET', KEYS[1], 'status', 'authorised')
end
return 1
"""

SPEND_CODE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

MUTABLE = ("status", "uses", "decided_at", "revoked_at")



class RedisConsentStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:",
                 coalescer: Coalescer | None = None) -> None:
        self._r = redis
        self._c = coalescer
        self._p = prefix
        self._transition = redis.register_script(TRANSITION_LUA)
        self._take = redis.register_script(TAKE_USE_LUA)
        self._refund = redis.register_script(REFUND_LUA)
        self._spend = redis.register_script(SPEND_CODE_LUA)

    def _key(self, consent_id: str) -> str:
        return f"{self._p}consent:{{{consent_id}}}"

    def _person_key(self, person_id: str) -> str:
        return f"{self._p}consents:person:{{{person_id}}}"

    def _code_key(self, digest: str) -> str:
        return f"{self._p}consent-approval:{digest}"

    def _subject_key(self, sector: str, subject: str) -> str:
        return f"{self._p}subject:{sector}:{subject}"

    async def create(self, consent: Consent, approval_digest: str, retain_s: float) -> None:
        rec = consent.to_record()
        doc = {k: v for k, v in rec.items() if k not in MUTABLE}
        key = self._key(consent.id)
        # Relative TTLs: the gateway clock may differ from the server's (tests freeze it).
        keep_ms = max(1, int((consent.expires_at + retain_s - consent.created_at) * 1000))
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping={
            "doc": json.dumps(doc, ensure_ascii=False), "status": consent.status,
            "uses": consent.uses, "decided_at": "", "revoked_at": "",
            "approve_by": repr(consent.approve_by), "expires_at": repr(consent.expires_at),
            "max_uses": consent.max_uses})
        pipe.pexpire(key, keep_ms)
        await pipe.execute()
        pkey = self._person_key(consent.person_id)
        await self._r.sadd(pkey, consent.id)
        await self._r.pexpire(pkey, keep_ms, gt=True)
        if await self._r.pttl(pkey) < 0:
            await self._r.pexpire(pkey, keep_ms)
        window_ms = max(1, math.ceil((consent.approve_by - consent.created_at) * 1000))
        await self._r.set(self._code_key(approval_digest), consent.id, px=window_ms)

    async def get(self, consent_id: str) -> Consent | None:
        raw = await self._r.hgetall(self._key(consent_id))
        if not raw:
            return None
        h = {text(k): text(v) for k, v in raw.items()}
        rec: dict[str, Any] = json.loads(h["doc"])
        rec.update({k: h.get(k) for k in MUTABLE})
        return Consent.from_record(rec)

    async def for_person(self, person_id: str) -> Sequence[Consent]:
        ids = sorted(text(i) for i in await self._r.smembers(self._person_key(person_id)))
        out = []
        for i in ids:
            c = await self.get(i)
            if c is None:
                await self._r.srem(self._person_key(person_id), i)
            else:
                out.append(c)
        return out

    async def transition(self, consent_id: str, allowed_from: Sequence[str], to: str,
                         now: float) -> tuple[bool, str | None]:
        ok, before = await self._transition(keys=[self._key(consent_id)],
                                            args=[repr(now), to, *allowed_from])
        return int(ok) == 1, text(before) if before else None

    async def take_use(self, consent_id: str, now: float) -> tuple[bool, str | None, int]:
        ok, before, uses = await self._take(keys=[self._key(consent_id)], args=[repr(now)])
        return int(ok) == 1, text(before) if before else None, int(uses or 0)

    async def refund_use(self, consent_id: str) -> None:
        await self._refund(keys=[self._key(consent_id)])

    async def approval_code(self, digest: str) -> str | None:
        v = await self._r.get(self._code_key(digest))
        return text(v) if v is not None else None

    async def spend_approval_code(self, digest: str, consent_id: str) -> bool:
        return int(await self._spend(keys=[self._code_key(digest)], args=[consent_id])) == 1

    async def remember_subject(self, sector: str, subject: str, person_id: str,
                               ttl_s: float) -> None:
        key = self._subject_key(sector, subject)
        px = max(1, int(ttl_s * 1000))
        if self._c is not None:
            await self._c.execute("SET", key, person_id, "PX", px)
        else:
            await self._r.set(key, person_id, px=px)

    async def person_for_subject(self, sector: str, subject: str) -> str | None:
        v = await self._r.get(self._subject_key(sector, subject))
        return text(v) if v is not None else None

    async def ping(self) -> None:
        await self._r.ping()
