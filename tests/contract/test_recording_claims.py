"""Contract: claims that append their transaction record when, and only when, they win —
memory (straight into the store), real Redis and a real Redis Cluster (through the outbox
and the exporter)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.adapters.memory import MemorySingleUse
from gateway.adapters.memory_records import MemoryRecordingClaims, MemoryRecordStore
from gateway.services.records import (
    Claim,
    Exporter,
    RecordingClaims,
    TransactionRecord,
    new_record_id,
)
from tests.contract.conftest import Backend

#: the outbox and its exporter exist only on Redis (memory claims write straight to the store)
on_redis = pytest.mark.parametrize("backend", ["redis", "redis-cluster"], indirect=True)


def record(i: int) -> TransactionRecord:
    return TransactionRecord(
        record_id=new_record_id(1_800_000_000 + i), gate="gate-1", scene="metro", face="ykm",
        decision="allow", reason="ok", scanned_at=1_800_000_000.0, verified_at=1_800_000_001.0,
        origin="online", request_id=f"r-{i}", subject="s", attributes={})


class NoLock:
    async def acquire(self) -> bool:
        return True

    async def renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


@dataclass
class Rig:
    claims: RecordingClaims
    store: MemoryRecordStore
    exporter: Exporter | None
    full: list[int]

    async def stored(self) -> list[TransactionRecord]:
        if self.exporter is not None:
            await self.exporter.drain()
        page = await self.store.page(None, 100_000)
        return [r for _, r in page.records]


def rig(backend: Backend, *, bound: int = 1000, shards: int = 4) -> Rig:
    store = MemoryRecordStore()
    full: list[int] = []
    if backend.coalescer is None:
        return Rig(MemoryRecordingClaims(MemorySingleUse(backend.clock), store), store, None,
                   full)
    from gateway.adapters.redis_records import RedisOutbox, RedisRecordingClaims

    assert backend.redis is not None
    claims = RedisRecordingClaims(backend.coalescer, backend.redis.script_load,
                                  prefix=backend.prefix, shards=shards, bound=bound,
                                  on_full=lambda: full.append(1))
    outbox = RedisOutbox(backend.redis, prefix=backend.prefix, shards=shards, bound=bound)
    return Rig(claims, store, Exporter(outbox, store, NoLock(), batch_size=100), full)


async def test_a_winning_claim_appends_its_record_once(backend: Backend) -> None:
    r = rig(backend)
    rec = record(1)
    assert await r.claims.claim("code:aa", 5, "gate-1|r-1", rec) is None
    assert await r.claims.claim("code:aa", 5, "gate-2|r-9", record(2)) == "gate-1|r-1"
    assert await r.claims.peek("code:aa") == "gate-1|r-1"
    assert await r.stored() == [rec]


async def test_three_hundred_concurrent_claims_leave_one_record(backend: Backend) -> None:
    r = rig(backend)
    results = await asyncio.gather(*(r.claims.claim("code:hot", 5, f"v{i}", record(i))
                                     for i in range(300)))
    winners = [i for i, x in enumerate(results) if x is None]
    assert len(winners) == 1
    assert [x.request_id for x in await r.stored()] == [f"r-{winners[0]}"]


async def test_claims_of_one_tick_answer_each_as_claim_would(backend: Backend) -> None:
    """Concurrent claims (one loop tick: Redis sends them as one script call per shard) get
    what one claim after another would: a key claimed before answers its first value, a key
    twice in the tick is won by exactly one, every winner's record once."""
    r = rig(backend)
    assert await r.claims.claim("code:old", 5, "gate-0|r-0", record(0)) is None
    keys = [f"code:{i}" for i in range(1, 40)] + ["code:old", "code:5"]
    got = await asyncio.gather(*(r.claims.claim(k, 5, f"gate-1|r-{j + 1}", record(j + 1))
                                 for j, k in enumerate(keys)))
    assert got[:38] == [None] * 38
    assert got[39] == "gate-0|r-0"
    assert got[40] == "gate-1|r-5"  # the tick's first claim of code:5 won
    assert sorted(x.request_id for x in await r.stored()) == sorted(
        [f"r-{i}" for i in range(40)])


async def test_remember_sets_only_an_unset_key_and_appends_nothing(backend: Backend) -> None:
    r = rig(backend)
    await r.claims.remember("up:g|1", 5, "first")
    await r.claims.remember("up:g|1", 5, "second")
    assert await r.claims.peek("up:g|1") == "first"
    assert await r.claims.claim("up:g|1", 5, "third", record(1)) == "first"
    assert await r.stored() == []


async def test_claims_expire_with_their_ttl(backend: Backend) -> None:
    r = rig(backend)
    assert await r.claims.claim("code:short", 0.15, "x", record(1)) is None
    await backend.elapse(0.3)
    assert await r.claims.peek("code:short") is None
    assert await r.claims.claim("code:short", 5, "y", record(2)) is None
    assert [x.request_id for x in await r.stored()] == ["r-1", "r-2"]


async def test_records_spread_over_shards_all_arrive(backend: Backend) -> None:
    r = rig(backend, shards=8)
    for i in range(50):
        assert await r.claims.claim(f"code:{i}", 5, "v", record(i)) is None
    assert sorted(x.request_id for x in await r.stored()) == sorted(f"r-{i}" for i in range(50))


@on_redis
async def test_a_full_outbox_keeps_the_decision_drops_the_record_and_alarms(
        backend: Backend) -> None:
    assert backend.coalescer is not None and backend.redis is not None
    r = rig(backend, bound=3, shards=1)
    for i in range(5):
        assert await r.claims.claim(f"code:{i}", 5, "v", record(i)) is None
    assert len(r.full) == 2
    assert [x.request_id for x in await r.stored()] == ["r-0", "r-1", "r-2"]
    assert await r.claims.claim("code:9", 5, "v", record(9)) is None  # room again
    assert [x.request_id for x in await r.stored()] == ["r-0", "r-1", "r-2", "r-9"]


async def test_claim_many_answers_each_as_claim_would_in_order(backend: Backend) -> None:
    r = rig(backend)
    assert await r.claims.claim("code:old", 5, "gate-0|r-0", record(0)) is None
    batch = [Claim(f"code:{i}", 5, f"gate-1|r-{i}", record(i)) for i in range(1, 40)]
    batch.insert(7, Claim("code:old", 5, "gate-1|late", record(90)))    # claimed before
    batch.append(Claim("code:3", 5, "gate-1|again", record(91)))      # twice in the batch
    got = await r.claims.claim_many(batch)
    assert got[7] == "gate-0|r-0" and got[-1] == "gate-1|r-3"
    assert [x for j, x in enumerate(got) if j not in (7, len(got) - 1)] == [None] * 39
    assert await r.claims.claim_many([]) == []
    assert await r.claims.peek("code:12") == "gate-1|r-12"
    # every winner's record once, no loser's
    assert sorted(x.request_id for x in await r.stored()) == sorted(
        [f"r-{i}" for i in range(40)])


async def test_claim_many_from_two_callers_at_once_wins_each_key_once(
        backend: Backend) -> None:
    r = rig(backend)
    keys = [f"code:hot-{i}" for i in range(100)]
    a, b = await asyncio.gather(
        r.claims.claim_many([Claim(k, 5, "A", record(i)) for i, k in enumerate(keys)]),
        r.claims.claim_many([Claim(k, 5, "B", record(100 + i)) for i, k in enumerate(keys)]))
    for x, y in zip(a, b, strict=True):
        assert sorted((x or "", y or "")) in (["", "A"], ["", "B"])
    assert len(await r.stored()) == 100


async def test_remember_many_sets_only_unset_keys(backend: Backend) -> None:
    r = rig(backend)
    await r.claims.remember("up:g|1", 5, "first")
    await r.claims.remember_many(5, [(f"up:g|{i}", f"v{i}") for i in range(1, 30)])
    assert await r.claims.peek("up:g|1") == "first"
    assert await r.claims.peek("up:g|29") == "v29"
    assert await r.stored() == []


@on_redis
async def test_claim_many_on_a_full_outbox_keeps_the_decisions_and_alarms(
        backend: Backend) -> None:
    r = rig(backend, bound=3, shards=1)
    got = await r.claims.claim_many([Claim(f"code:{i}", 5, "v", record(i)) for i in range(5)])
    assert got == [None] * 5 and len(r.full) == 2
    assert [x.request_id for x in await r.stored()] == ["r-0", "r-1", "r-2"]


@on_redis
async def test_claim_many_reloads_a_flushed_script(backend: Backend) -> None:
    assert backend.redis is not None
    r = rig(backend)
    await backend.redis.script_flush()
    got = await r.claims.claim_many([Claim(f"code:{i}", 5, "v", record(i)) for i in range(9)])
    assert got == [None] * 9
    await backend.redis.script_flush()
    await r.claims.remember_many(5, [("up:g|1", "x")])
    assert await r.claims.peek("up:g|1") == "x"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_one_tick_of_claims_is_one_script_call_per_shard(backend: Backend) -> None:
    """Lua's own cost per call is larger than the SET it runs: the claims a worker makes in
    one loop tick go as ONE script call per outbox shard (commandstats counts them)."""
    assert backend.redis is not None
    r = rig(backend, shards=4)

    async def evalsha_calls() -> int:
        stats = await backend.redis.info("commandstats")  # type: ignore[union-attr]
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await evalsha_calls()
    got = await asyncio.gather(*(r.claims.claim(f"code:tick-{i}", 5, "v", record(i))
                                 for i in range(60)))
    assert got == [None] * 60
    assert await evalsha_calls() - before <= 4
    assert len(await r.stored()) == 60


@on_redis
async def test_a_claim_cancelled_before_its_tick_is_sent_claims_nothing(
        backend: Backend) -> None:
    """A gate that hung up (its request cancelled) while its claim waited for the end of the
    tick: the claim is not sent, so the code stays unused and no record is written."""
    r = rig(backend)
    task = asyncio.ensure_future(r.claims.claim("code:gone", 5, "v", record(1)))
    await asyncio.sleep(0)  # the claim is queued for the end of this tick
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert await r.claims.peek("code:gone") is None
    assert await r.claims.claim("code:gone", 5, "w", record(2)) is None
    assert [x.request_id for x in await r.stored()] == ["r-2"]


@on_redis
async def test_a_tick_of_claims_on_a_full_outbox_keeps_the_decisions_and_alarms(
        backend: Backend) -> None:
    r = rig(backend, bound=3, shards=1)
    got = await asyncio.gather(*(r.claims.claim(f"code:{i}", 5, "v", record(i))
                                 for i in range(5)))
    assert got == [None] * 5 and len(r.full) == 2
    assert [x.request_id for x in await r.stored()] == ["r-0", "r-1", "r-2"]


@on_redis
async def test_a_tick_of_claims_reloads_a_flushed_script(backend: Backend) -> None:
    assert backend.redis is not None
    r = rig(backend)
    await r.claims.claim("code:first", 5, "v", record(99))  # the scripts are loaded
    await backend.redis.script_flush()
    got = await asyncio.gather(*(r.claims.claim(f"code:{i}", 5, "v", record(i))
                                 for i in range(9)))
    assert got == [None] * 9
    await backend.redis.script_flush()
    assert await r.claims.claim("code:last", 5, "v", record(98)) is None  # alone in its tick
    assert len(await r.stored()) == 11


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_caught_up_exporter_lets_the_next_batch_fill(backend: Backend) -> None:
    """The exporter's loop, caught up (a batch shorter than a full one), waits
    GATEWAY_TRANSACTIONS_EXPORT_LINGER_MS before it takes again: what arrives while it writes
    goes in the next, fuller batch, not in a trickle of small ones."""
    assert backend.coalescer is not None and backend.redis is not None
    from gateway.adapters.redis_records import RedisOutbox, RedisRecordingClaims

    claims = RedisRecordingClaims(backend.coalescer, backend.redis.script_load,
                                  prefix=backend.prefix, shards=2, bound=1000)
    writes: list[int] = []

    class Arriving(MemoryRecordStore):
        """Each write is followed by 10 more scans reaching the outbox meanwhile."""

        async def write(self, records: Any) -> int:
            writes.append(len(records))
            n = len(writes)
            for i in range(10):
                await claims.claim(f"code:{n}-{i}", 5, "v", record(100 * n + i))
            return await super().write(records)

    for i in range(30):
        await claims.claim(f"code:first-{i}", 5, "v", record(i))
    outbox = RedisOutbox(backend.redis, prefix=backend.prefix, shards=2, bound=1000)
    exporter = Exporter(outbox, Arriving(), NoLock(), batch_size=100, linger_s=60.0)
    # one drain stops after its partial batch: the 10 that arrived meanwhile wait
    assert await exporter.drain(until_partial=True) == 30
    assert writes == [30] and await outbox.length() == 10
    stop = asyncio.Event()
    task = asyncio.ensure_future(exporter.run(stop))
    try:
        for _ in range(100):
            if len(writes) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        # the loop took the waiting 10 once, then lingers (60 s) instead of taking again
        assert writes == [30, 10] and await outbox.length() == 10
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    # a plain drain (what `gateway transactions` tooling and the tests use) empties it
    assert await Exporter(outbox, MemoryRecordStore(), NoLock(), batch_size=100).drain() == 10


class FlakyStore(MemoryRecordStore):
    """Writes, then fails before the exporter can acknowledge (a crash after COPY)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, records: Any) -> int:
        n = await super().write(records)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the store went away after committing")
        return n


@on_redis
async def test_an_exporter_crash_after_writing_redelivers_and_nothing_is_doubled(
        backend: Backend) -> None:
    assert backend.coalescer is not None and backend.redis is not None
    from gateway.adapters.redis_records import RedisOutbox, RedisRecordingClaims

    claims = RedisRecordingClaims(backend.coalescer, backend.redis.script_load,
                                  prefix=backend.prefix, shards=2, bound=1000)
    for i in range(30):
        await claims.claim(f"code:{i}", 5, "v", record(i))
    store = FlakyStore(failures=2)
    outbox = RedisOutbox(backend.redis, prefix=backend.prefix, shards=2, bound=1000)
    exporter = Exporter(outbox, store, NoLock(), batch_size=10)
    for _ in range(2):
        try:
            await exporter.step()
        except ConnectionError:
            pass
    await exporter.drain()
    page = await store.page(None, 1000)
    assert sorted(r.request_id for _, r in page.records) == sorted(f"r-{i}" for i in range(30))
    assert await outbox.length() == 0


@on_redis
async def test_the_exporter_loop_survives_a_store_outage(backend: Backend) -> None:
    assert backend.coalescer is not None and backend.redis is not None
    from gateway.adapters.redis_records import RedisOutbox, RedisRecordingClaims

    class Down(MemoryRecordStore):
        up = False

        async def write(self, records: Any) -> int:
            if not self.up:
                raise OSError("connection refused")
            return await super().write(records)

    claims = RedisRecordingClaims(backend.coalescer, backend.redis.script_load,
                                  prefix=backend.prefix, shards=2, bound=1000)
    for i in range(20):
        await claims.claim(f"code:{i}", 5, "v", record(i))
    store = Down()
    outbox = RedisOutbox(backend.redis, prefix=backend.prefix, shards=2, bound=1000)
    exporter = Exporter(outbox, store, NoLock(), batch_size=7, idle_s=0.01,
                        max_backoff_s=0.05)
    stop = asyncio.Event()
    task = asyncio.ensure_future(exporter.run(stop))
    await asyncio.sleep(0.2)
    assert await outbox.length() == 20  # nothing lost while the store is down
    store.up = True
    for _ in range(200):
        if await outbox.length() == 0:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    page = await store.page(None, 1000)
    assert len(page.records) == 20


@on_redis
async def test_only_one_exporter_holds_the_lock(backend: Backend) -> None:
    assert backend.coalescer is not None and backend.redis is not None
    from gateway.adapters.redis_records import RedisExporterLock

    a = RedisExporterLock(backend.redis, prefix=backend.prefix, ttl_s=0.3)
    b = RedisExporterLock(backend.redis, prefix=backend.prefix, ttl_s=0.3)
    assert await a.acquire() and not await b.acquire()
    assert await a.renew() and not await b.renew()
    await b.release()  # not b's: a keeps it
    assert not await b.acquire()
    await a.release()
    assert await b.acquire() and not await a.renew()
    await asyncio.sleep(0.5)  # b stops renewing: the lock lapses
    assert await a.acquire()


async def test_a_busy_exporter_still_renews_its_lock() -> None:
    """An outbox that never empties (steady traffic): the exporter's drain is bounded, so
    the lock (which lapses by itself) is renewed between drains."""
    from gateway.services.records import Batch

    class Endless:
        bound = 10

        async def take(self, max_records: int, after: Any = None) -> Batch:
            await asyncio.sleep(0.005)
            return Batch([record(0)], lambda: None)

        async def length(self) -> int:
            return 1

    class Counting(NoLock):
        renewals = 0

        async def renew(self) -> bool:
            Counting.renewals += 1
            return True

    exporter = Exporter(Endless(), MemoryRecordStore(), Counting(), renew_every_s=0.05)
    stop = asyncio.Event()
    task = asyncio.ensure_future(exporter.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await task
    assert Counting.renewals >= 3
