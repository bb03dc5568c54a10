"""Contract: the live view's counters (docs/stats.md "The live view") — counted by the claim
that wins, per minute; "today" (UTC) is the sum of today's minutes — on memory, real Redis
and a real Redis Cluster (the claim script and the reader each touch one slot per shard)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.adapters.memory import MemorySingleUse
from gateway.adapters.memory_records import (
    MemoryLiveCounters,
    MemoryRecordingClaims,
    MemoryRecordStore,
)
from gateway.services.ports import LiveCounters
from gateway.services.records import Claim, RecordingClaims, TransactionRecord, new_record_id
from tests.contract.conftest import Backend

DAY = 20_833  # a UTC day number
MIDNIGHT = DAY * 86400.0
NOW = MIDNIGHT + 10 * 3600 + 30.0  # 10:00:30 that day
SHARDS = 4


def rec(t: float, n: int, gate: str = "gate-1", decision: str = "allow",
        reason: str = "ok") -> TransactionRecord:
    return TransactionRecord(
        record_id=new_record_id(t), gate=gate, scene="metro", face="ykm", decision=decision,
        reason=reason, scanned_at=t - 0.02, verified_at=t, origin="online",
        request_id=f"r-{n}", subject="s", attributes={})


def rig(backend: Backend) -> tuple[RecordingClaims, LiveCounters]:
    if backend.coalescer is None:
        live = MemoryLiveCounters()
        return (MemoryRecordingClaims(MemorySingleUse(backend.clock), MemoryRecordStore(),
                                      live), live)
    from gateway.adapters.redis_records import RedisLiveCounters, RedisRecordingClaims

    assert backend.redis is not None
    return (RedisRecordingClaims(backend.coalescer, backend.redis.script_load,
                                 prefix=backend.prefix, shards=SHARDS),
            RedisLiveCounters(backend.redis, prefix=backend.prefix, shards=SHARDS))




def fld(gate: str, reason: str) -> str:
    from gateway.services.stats import live_field

    return live_field(rec(NOW, 0, gate=gate, reason=reason))


async def test_today_is_the_sum_of_todays_minutes_and_a_retry_counts_once(
        backend: Backend) -> None:
    claims, live = rig(backend)
    if hasattr(claims, "load"):
        await claims.load()
    timeline = [  # (when, claim key, gate, reason)
        (MIDNIGHT - 30, "k-yesterday", "gate-1", "ok"),      # 23:59:30 the day before
        (MIDNIGHT + 5, "k-midnight", "gate-1", "ok"),         # the day's first minute
        (NOW - 5 * 3600, "k-early-1", "gate-1", "ok"),        # hours ago, long out of view
        (NOW - 5 * 3600, "k-early-2", "gate-2", "ok"),
        (NOW - 120, "k-recent", "gate-1", "replayed"),
        (NOW, "k-now", "gate-1", "ok"),
    ]
    for i, (t, key, gate, reason) in enumerate(timeline):
        r = rec(t, i, gate=gate, reason=reason)
        assert await claims.claim(key, 3600, f"v{i}", r) is None
        assert await claims.claim(key, 3600, "again", r) == f"v{i}"  # a retry: not counted
    # an offline upload's bulk claims count too (per distinct field in one call)
    bulk = [Claim(f"k-bulk-{i}", 3600, f"b{i}", rec(NOW, 100 + i, gate="gate-2"))
            for i in range(3)]
    assert await claims.claim_many(bulk) == [None, None, None]
    assert await claims.claim_many(bulk) == ["b0", "b1", "b2"]

    late = MIDNIGHT - 50  # the day before, in the view's last minutes just past midnight
    assert await claims.claim("k-late", 3600, "late", rec(late, 200)) is None

    # two minutes past midnight: the minutes reach back into yesterday, "today" does not
    got = await live.read(MIDNIGHT + 120, 5)
    assert got.day == DAY
    assert dict(got.today) == {fld("gate-1", "ok"): 1}  # k-midnight only
    assert dict(got.minutes[int(late // 60)]) == {fld("gate-1", "ok"): 2}

    now_m = int(NOW // 60)
    expected_today = {fld("gate-1", "ok"): 3, fld("gate-2", "ok"): 4,
                      fld("gate-1", "replayed"): 1}
    for _ in range(2):  # read again: what an earlier read summed is not summed twice
        got = await live.read(NOW, 5)
        assert got.day == DAY
        assert dict(got.today) == expected_today
        assert sorted(got.minutes) == list(range(now_m - 4, now_m + 1))
        assert dict(got.minutes[now_m]) == {fld("gate-1", "ok"): 1, fld("gate-2", "ok"): 3}
        assert dict(got.minutes[now_m - 2]) == {fld("gate-1", "replayed"): 1}
        assert sum(sum(m.values()) for m in got.minutes.values()) == 5

    # time goes on: a decision in the current minute is in today and in its minute at once,
    # and the minutes that were current at the last read are still counted once
    later = NOW + 3 * 60
    assert await claims.claim("k-later", 3600, "x", rec(later, 300, gate="gate-2")) is None
    got = await live.read(later, 5)
    assert dict(got.today) == {**expected_today, fld("gate-2", "ok"): 5}
    assert dict(got.minutes[int(later // 60)]) == {fld("gate-2", "ok"): 1}
    assert dict(got.minutes[now_m]) == {fld("gate-1", "ok"): 1, fld("gate-2", "ok"): 3}


async def test_one_minute_hash_per_shard_kept_past_the_day(backend: Backend) -> None:
    """One counter per decision: only the minute's hash, which must outlive the UTC day it
    belongs to (today is read from it) — no separate day hash."""
    if backend.redis is None:
        return  # memory keeps 25 hours of minutes itself (MemoryLiveCounters.KEEP_MINUTES)
    from gateway.adapters.redis_records import live_key

    claims, _ = rig(backend)
    for i in range(40):  # enough to reach every shard
        assert await claims.claim(f"k-{i}", 3600, "v", rec(NOW, i)) is None
    redis: Any = backend.redis
    for k in range(SHARDS):  # each routed to its slot (a Cluster's KEYS sees one node)
        assert 24 * 3600 * 1000 < await redis.pttl(live_key(backend.prefix, k, int(NOW // 60))) \
            <= 25 * 3600 * 1000
        day_hash = f"{backend.prefix}tx:live:{{{backend.prefix}tx:{k}}}:d:{DAY}"
        assert await redis.exists(day_hash) == 0
    if backend.name == "redis":
        keys = sorted(k.decode() for k in await redis.keys(f"{backend.prefix}tx:live:*"))
        assert keys == sorted(live_key(backend.prefix, k, int(NOW // 60)) for k in range(SHARDS))


async def test_two_workers_reading_at_once_fold_each_minute_once(backend: Backend) -> None:
    """Every worker's dashboard reads (and folds) at once: the fold is one script per shard,
    so the minutes are added to the day's sum once whoever reads."""
    claims, live = rig(backend)
    other: LiveCounters = live
    if backend.redis is not None:
        from gateway.adapters.redis_records import RedisLiveCounters

        second = await backend.another_client()
        other = RedisLiveCounters(second, prefix=backend.prefix, shards=SHARDS)
    for i in range(90):  # one decision a minute over the day's first hour and a half
        t = MIDNIGHT + 60 * i + 1
        assert await claims.claim(f"k-{i}", 3600, "v", rec(t, i)) is None
    now = MIDNIGHT + 60 * 90 + 30
    got = await asyncio.gather(*(r.read(now, 15) for r in (live, other, live, other)))
    for g in got:
        assert dict(g.today) == {fld("gate-1", "ok"): 90}
        # the window: the day's minutes 76–90; 90 has none yet
        assert sum(sum(m.values()) for m in g.minutes.values()) == 14
    again = await other.read(now + 60, 15)
    assert dict(again.today) == {fld("gate-1", "ok"): 90}
    if backend.redis is not None:
        await second.aclose()
