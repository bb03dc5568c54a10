"""The audit log in Redis: one STREAM, appended by a Lua compare-and-append so the chain
never forks across workers (docs/audit.md).

Keys (one `{audit}` hash tag, so the script's keys live in one Cluster slot):

* `<prefix>{audit}:log`   — the stream; entry id `<seq>-1`, one field `e` = canonical JSON
* `<prefix>{audit}:head`  — "seq hash" of the last entry (what the next entry must follow)
* `<prefix>{audit}:by:<subject>` — list of seqs about one holder (the resident's access log)

Redis Lua has no SHA-256, so the worker computes the entry (and its hash) over the head it
read, and the script appends only if the head is still that one; otherwise it answers the
new head and the worker re-chains and retries. Exactly one writer wins each seq.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.adapters.redis_store import RedisClient, connect, text
from gateway.services.audit import GENESIS, canonical_json, chain_entry, verify_log

APPEND_LUA = """
local head = redis.call('GET', KEYS[2])
local cur = head or ('0 ' .. ARGV[4])
if cur ~= ARGV[1] then return {0, cur} end
redis.call('XADD', KEYS[1], ARGV[2] .. '-1', 'e', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[5])
if #KEYS >= 3 then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
end
return {1, ARGV[2]}
"""


class AuditAppendFailed(RuntimeError):
    """The head kept moving under us for too long (pathological contention)."""



class RedisAuditLog:
    def __init__(self, redis: RedisClient, prefix: str = "gw:", *,
                 per_subject_max: int = 1000, max_attempts: int = 200) -> None:
        self._r = redis
        base = f"{prefix}{{audit}}:"
        self.stream_key = base + "log"
        self.head_key = base + "head"
        self._by = base + "by:"
        self._per_subject_max = per_subject_max
        self._max_attempts = max_attempts
        self._script = redis.register_script(APPEND_LUA)

    async def head(self) -> tuple[int, str]:
        raw = await self._r.get(self.head_key)
        if raw is None:
            return 0, GENESIS
        seq, h = text(raw).split(" ", 1)
        return int(seq), h

    async def append(self, event: Mapping[str, Any], ts: float) -> dict[str, Any]:
        seq, prev = await self.head()
        subject = event.get("subject") or ""
        for attempt in range(self._max_attempts):
            entry = chain_entry(event, seq + 1, ts, prev)
            ok, cur = await self._script(
                keys=[self.stream_key, self.head_key, *([self._by + subject] if subject else [])],
                args=[f"{seq} {prev}", str(seq + 1), canonical_json(entry).decode("utf-8"),
                      GENESIS, entry["hash"], subject, str(self._per_subject_max)])
            if int(ok) == 1:
                return entry
            s, prev = text(cur).split(" ", 1)
            seq = int(s)
            if attempt > 3:
                await asyncio.sleep(random.uniform(0, 0.002))  # noqa: S311 - jitter only
        raise AuditAppendFailed("audit head contention")

    @staticmethod
    def _decode(fields: Any) -> dict[str, Any]:
        raw = fields.get(b"e", fields.get("e"))
        return dict(json.loads(text(raw)))

    async def entries(self, start_seq: int = 1, count: int = 1000) -> Sequence[dict[str, Any]]:
        rows = await self._r.xrange(self.stream_key, min=f"{max(1, start_seq)}-0", max="+",
                                    count=count)
        return [self._decode(f) for _, f in rows or ()]

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        seqs = await self._r.lrange(self._by + subject, -limit, -1)
        out: list[dict[str, Any]] = []
        for s in reversed(seqs):
            rows = await self._r.xrange(self.stream_key, min=f"{text(s)}-1",
                                        max=f"{text(s)}-1", count=1)
            out.extend(self._decode(f) for _, f in rows or ())
        return out

    async def ping(self) -> None:
        await self._r.ping()


async def _verify(redis_url: str, prefix: str, cluster: bool) -> int:
    r = connect(redis_url, cluster=cluster)
    try:
        ok, broken, checked = await verify_log(RedisAuditLog(r, prefix))
    finally:
        await r.aclose()
    if ok:
        print(f"audit chain ok: {checked} entries")
        return 0
    print(f"audit chain BROKEN at seq {broken} ({checked} entries verified before it)")
    return 1


async def _list(redis_url: str, prefix: str, cluster: bool, start: int, count: int) -> int:
    r = connect(redis_url, cluster=cluster)
    try:
        log = RedisAuditLog(r, prefix)
        if start <= 0:  # the last `count` entries
            head_seq, _ = await log.head()
            start = max(1, head_seq - count + 1)
        for entry in await log.entries(start, count):
            print(json.dumps(entry, ensure_ascii=False, sort_keys=True))
    finally:
        await r.aclose()
    return 0


def audit_list_main(settings: Any, start: int = 0, count: int = 100) -> int:
    """`gateway audit list`: entries as JSON lines (the last `count`, or from seq `start`).
    The entries hold no personal data (subjects are keyed hashes); exit 2 without Redis."""
    if not settings.redis_url:
        print("no GATEWAY_REDIS_URL: the audit log is in memory only (sandbox); nothing to list")
        return 2
    return asyncio.run(_list(settings.redis_url, settings.redis_prefix, settings.redis_cluster,
                             start, max(1, min(count, 10_000))))


def audit_verify_main(settings: Any) -> int:
    """`gateway audit verify`: check the whole chain and its head; print the first broken
    link. Exit 0 = intact, 1 = broken, 2 = nothing durable to verify (no Redis configured)."""
    if not settings.redis_url:
        print("no GATEWAY_REDIS_URL: the audit log is in memory only (sandbox); nothing to verify")
        return 2
    return asyncio.run(_verify(settings.redis_url, settings.redis_prefix,
                               settings.redis_cluster))
