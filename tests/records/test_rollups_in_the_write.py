"""The daily roll-ups are kept by the exporter in the transaction that stores the records
(docs/stats.md), on a real PostgreSQL server and a real Redis outbox: a batch counts once —
re-delivered after a crash, half new, or rolled back — and `rebuild` recomputes from the
records exactly what the exporter kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
from gateway.adapters.postgres_stats import (
    ExporterRollups,
    PostgresStatsStore,
    RebuildRefused,
)
from gateway.adapters.redis_records import RedisExporterLock, RedisOutbox, outbox_keys
from gateway.services.records import Exporter, TransactionRecord, new_record_id
from gateway.services.stats import ANY
from tests.contract.test_record_store import drop_schema
from tests.contract.test_stats_store import drop_stats

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = "2027-01-15"
PLACES = {"gate-metro-1": ("venue-metro-1", "500103", "metro"),
          "gate-metro-2": ("venue-metro-2", "500106", "metro")}


def record(i: int, gate: str = "gate-metro-1", decision: str = "allow",
           t: float = T0) -> TransactionRecord:
    return TransactionRecord(
        new_record_id(t), gate, "metro", "ykm", decision,
        "ok" if decision == "allow" else "expired", t - 0.03, t, "online", f"r-{i}",
        f"sub-{i}" if decision == "allow" else None, {}, None)


@dataclass
class Stores:
    records: PostgresRecordStore
    stats: PostgresStatsStore
    pool: Any


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    await drop_schema(database_url)
    await drop_stats(database_url)
    pool = await connect_pool(database_url)

    async def places() -> Mapping[str, tuple[str, str, str]]:
        return PLACES

    stats = PostgresStatsStore(pool)
    try:
        yield Stores(PostgresRecordStore(pool, ExporterRollups(stats, places)), stats, pool)
    finally:
        await pool.close()


async def counts(stats: PostgresStatsStore) -> tuple[int, int, int]:
    """(scans, allows, denies) of the day at the all-of level."""
    rows = await stats.levels(DAY, DAY, ANY, ANY)
    return (sum(r.scans for _, r in rows), sum(r.allows for _, r in rows),
            sum(sum(r.denies.values()) for _, r in rows))


async def test_a_write_rolls_up_what_it_inserted_once(stores: Stores) -> None:
    batch = [record(i) for i in range(50)] + [record(50 + i, decision="deny")
                                              for i in range(10)]
    assert await stores.records.write(batch) == 60
    assert await counts(stores.stats) == (60, 50, 10)
    # the same batch again (an exporter that stopped between its write and its ack): nothing
    assert await stores.records.write(batch) == 0
    assert await counts(stores.stats) == (60, 50, 10)
    # half old, half new: only the new half counts
    fresh = [record(100 + i, gate="gate-metro-2") for i in range(20)]
    assert await stores.records.write(batch[:20] + fresh) == 20
    assert await counts(stores.stats) == (80, 70, 10)
    by_district = dict(await stores.stats.totals(DAY, DAY, ["district"], None, None))
    assert {k: r.scans for k, r in by_district.items()} == {("500103",): 60, ("500106",): 20}


async def test_a_rolled_back_write_counts_nothing(stores: Stores) -> None:
    batch = [record(i) for i in range(10)]
    rollups = stores.records.rollups
    assert isinstance(rollups, ExporterRollups)

    class Broken(ExporterRollups):
        async def apply(self, conn: Any, summary: object) -> None:
            await super().apply(conn, summary)
            raise ConnectionResetError("the link dropped after the roll-up")

    stores.records.rollups = Broken(rollups.stats, rollups.places)
    with pytest.raises(ConnectionResetError):
        await stores.records.write(batch)
    assert await counts(stores.stats) == (0, 0, 0)
    async with stores.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gw_transactions") == 0
    stores.records.rollups = rollups
    assert await stores.records.write(batch) == 10   # the retry counts them, once
    assert await counts(stores.stats) == (10, 10, 0)


async def test_an_exporter_crash_before_its_ack_never_double_counts(
        stores: Stores, redis_client: aioredis.Redis) -> None:
    streams = outbox_keys("t15:", 2)
    for i in range(40):
        await redis_client.xadd(streams[i % 2], {"r": record(i).to_wire()})
    outbox = RedisOutbox(redis_client, prefix="t15:", shards=2, bound=10_000)
    lock = RedisExporterLock(redis_client, prefix="t15:")
    crashed = Exporter(outbox, stores.records, lock, batch_size=25)
    batch = await outbox.take(25)
    assert batch is not None
    await stores.records.write(batch.records)    # stored and rolled up, then the crash: no ack
    assert await counts(stores.stats) == (len(batch.records), len(batch.records), 0)
    assert await Exporter(outbox, stores.records, lock, batch_size=25).drain() == 40
    assert await counts(stores.stats) == (40, 40, 0)
    assert await outbox.length() == 0
    del crashed


async def test_rebuild_recomputes_what_the_exporter_kept(stores: Stores) -> None:
    batch = [record(i, gate=("gate-metro-1", "gate-metro-2")[i % 2],
                    decision=("allow", "deny")[i % 3 == 0]) for i in range(90)]
    batch += [record(200 + i, t=T0 + 86400) for i in range(5)]   # the next day
    await stores.records.write(batch)
    kept_rows = await stores.stats.rows("2000-01-01", "2999-12-31")
    kept_sketches = await stores.stats.sketches("2000-01-01", "2999-12-31", "", "")
    # a bug wrote wrong counts: rebuild from the day puts back what the records say
    async with stores.pool.acquire() as conn:
        await conn.execute("UPDATE gw_stats_venue SET scans = scans * 7")
        await conn.execute("UPDATE gw_stats_level SET allows = 0, residents = NULL")
    read, written = await stores.stats.rebuild(DAY, PLACES)
    assert read == 95
    assert written == len(kept_rows)
    assert await stores.stats.rows("2000-01-01", "2999-12-31") == kept_rows
    assert await stores.stats.sketches("2000-01-01", "2999-12-31", "", "") == kept_sketches


async def test_a_thirty_day_question_reads_no_record(stores: Stores) -> None:
    """The records are dropped (as retention would): the roll-ups still answer."""
    await stores.records.write([record(i) for i in range(30)])
    async with stores.pool.acquire() as conn:
        await conn.execute("DROP TABLE gw_transactions CASCADE")
    got = dict(await stores.stats.totals("2026-12-17", DAY, ["day"], None, None))
    assert got[(DAY,)].scans == 30


async def test_a_prepared_batch_half_stored_meanwhile_counts_only_the_new(
        stores: Stores) -> None:
    """The exporter prepares a batch (its roll-up summed) before writing it; if part of it
    got stored in between (another exporter's write, a re-delivery), the prepared summary of
    the whole batch must not be added: only what the write really inserted counts."""
    batch = [record(i) for i in range(30)] + [record(30 + i, decision="deny")
                                              for i in range(10)]
    prepared = await stores.records.prepare(batch)
    assert await stores.records.write(batch[:25]) == 25
    assert await stores.records.write(batch, prepared) == 15
    assert await counts(stores.stats) == (40, 30, 10)
    # the same prepared batch once more: all stored, nothing counted
    assert await stores.records.write(batch, prepared) == 0
    assert await counts(stores.stats) == (40, 30, 10)


async def test_a_preparation_of_other_records_is_not_used(stores: Stores) -> None:
    batch = [record(i) for i in range(12)]
    other = await stores.records.prepare([record(100 + i) for i in range(3)])
    assert await stores.records.write(batch, other) == 12
    assert await counts(stores.stats) == (12, 12, 0)
    async with stores.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gw_transactions") == 12


class Watched(PostgresRecordStore):
    """The real store, telling the order of its calls."""

    events: list[str]

    async def prepare(self, records: Any) -> Any:
        self.events.append(f"prepare {records[0].request_id}")
        return await super().prepare(records)

    async def write(self, records: Any, prepared: object | None = None) -> int:
        self.events.append(f"write {records[0].request_id} "
                           f"{'prepared' if prepared is not None else 'bare'}")
        n = await super().write(records, prepared)
        self.events.append(f"written {records[0].request_id}")
        return n


async def test_the_exporter_prepares_the_next_batch_while_it_writes_one(
        stores: Stores, redis_client: aioredis.Redis) -> None:
    streams = outbox_keys("t16:", 1)
    for i in range(30):
        await redis_client.xadd(streams[0], {"r": record(i).to_wire()})
    outbox = RedisOutbox(redis_client, prefix="t16:", shards=1, bound=10_000)
    rollups = stores.records.rollups
    store = Watched(stores.pool, rollups)
    store.events = []
    exporter = Exporter(outbox, store, RedisExporterLock(redis_client, prefix="t16:"),
                        batch_size=10)
    assert await exporter.drain() == 30
    assert await counts(stores.stats) == (30, 30, 0)
    ev = store.events
    # every batch is written with its preparation; the next one is prepared before the
    # write of the one before has finished (the two overlap)
    assert [e for e in ev if e.startswith("write")] == [
        "write r-0 prepared", "write r-10 prepared", "write r-20 prepared"]
    assert ev.index("prepare r-10") < ev.index("written r-0")
    assert ev.index("prepare r-20") < ev.index("written r-10")


async def test_rebuild_of_a_bounded_range_recounts_those_days_only(stores: Stores) -> None:
    """`--from DAY --to DAY`: the days before and after keep what they hold (here a bug's
    counts, left wrong on purpose), the days inside get the records' figures back."""
    days = ("2027-01-14", DAY, "2027-01-16", "2027-01-17")
    batch = [record(100 * d + i, t=T0 + (d - 1) * 86400) for d in range(4) for i in range(d + 2)]
    await stores.records.write(batch)
    kept = {d: await stores.stats.rows(d, d) for d in days}
    async with stores.pool.acquire() as conn:
        await conn.execute("UPDATE gw_stats_venue SET scans = scans * 7")
    read, written = await stores.stats.rebuild(DAY, PLACES, "2027-01-16")
    assert read == 3 + 4  # the records scanned on the 15th and the 16th, nothing else
    assert written == 2
    assert await stores.stats.rows(DAY, DAY) == kept[DAY]
    assert await stores.stats.rows("2027-01-16", "2027-01-16") == kept["2027-01-16"]
    for outside in ("2027-01-14", "2027-01-17"):
        ((_, wrong),) = await stores.stats.rows(outside, outside)
        assert wrong.scans == 7 * kept[outside][0][1].scans


async def test_rebuild_commits_one_transaction_per_day(stores: Stores) -> None:
    """The writer lock is held for one day's recount at a time, not for the whole range: each
    day's rows are written by their own transaction (PostgreSQL's xmin), and each day is
    reported as it commits."""
    days = [f"2027-01-{15 + d}" for d in range(3)]
    await stores.records.write([record(100 * d + i, t=T0 + d * 86400)
                                for d in range(3) for i in range(3)])
    seen: list[tuple[str, int, int]] = []
    read, _ = await stores.stats.rebuild(DAY, PLACES, days[-1],
                                         progress=lambda *a: seen.append(a))
    assert read == 9 and [s[0] for s in seen] == days and all(s[1] == 3 for s in seen)
    async with stores.pool.acquire() as conn:
        xids = {d: {r[0] for r in await conn.fetch(
            "SELECT DISTINCT xmin::text FROM gw_stats_level WHERE day = $1::text::date", d)}
            for d in days}
    assert all(len(x) == 1 for x in xids.values()), xids
    assert len(set.union(*xids.values())) == 3, xids


async def test_an_open_ended_rebuild_reaches_the_last_stored_day(stores: Stores) -> None:
    """No `--to`: through the last day anything is stored (records or roll-ups), and a
    roll-up row of a later day with no record left behind it is dropped."""
    await stores.records.write([record(i, t=T0 + 2 * 86400) for i in range(4)])
    async with stores.pool.acquire() as conn:  # a stray row after every record
        await conn.execute(
            "INSERT INTO gw_stats_level (day, district, scene, face, scans, allows, denies, "
            "latency) VALUES ('2027-02-01', '*', '*', 'ykm', 5, 5, '{}', '{}')")
    assert await stores.stats.last_day() == "2027-02-01"
    read, _ = await stores.stats.rebuild("2027-01-17", PLACES)
    assert read == 4
    assert await stores.stats.levels("2027-02-01", "2027-02-01", ANY, ANY) == []
    got = dict(await stores.stats.totals("2027-01-01", "2027-12-31", ["day"], None, None))
    assert {k: v.scans for k, v in got.items()} == {("2027-01-17",): 4}


async def test_a_rebuild_before_the_oldest_stored_records_is_refused(stores: Stores) -> None:
    """The roll-ups outlive the records (retention drops day partitions): a rebuild from a
    day whose records are gone could only wipe its figures. Refused, nothing changed."""
    with pytest.raises(RebuildRefused, match="no transaction records"):
        await stores.stats.rebuild(DAY, PLACES)          # nothing stored at all
    await stores.records.write([record(i, t=T0 + d * 86400) for d in range(2) for i in range(3)])
    kept = await stores.stats.rows("2000-01-01", "2999-12-31")
    assert await stores.records.prune(T0 + 86400 - 8 * 3600) == 1  # the 15th's partition
    with pytest.raises(RebuildRefused, match="before 2027-01-16"):
        await stores.stats.rebuild(DAY, PLACES, "2027-01-16")
    assert await stores.stats.rows("2000-01-01", "2999-12-31") == kept
    read, _ = await stores.stats.rebuild("2027-01-16", PLACES)
    assert read == 3 and await stores.stats.rows("2000-01-01", "2999-12-31") == kept
