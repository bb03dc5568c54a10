"""Contract: the transaction record store, on memory and on a real PostgreSQL server.

Written once per record id; listed in write order behind a cursor that never skips a late
record; whole days dropped by retention.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.adapters.memory_records import MemoryRecordStore
from gateway.services.records import RecordStore, TransactionRecord, new_record_id

DAY = 86400.0
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def record(i: int, t: float = T0, **kw: Any) -> TransactionRecord:
    base: dict[str, Any] = dict(
        record_id=new_record_id(t), gate="gate-metro-1", scene="metro", face="ykm",
        decision="allow", reason="ok", scanned_at=t - 1.5, verified_at=t, origin="online",
        request_id=f"r-{i}", subject=f"sub-{i}", attributes={"concession": "senior"},
        credential_hash=bytes(range(16)))
    base.update(kw)
    return TransactionRecord(**base)


async def drop_schema(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS gw_transactions CASCADE; "
                           "DROP SEQUENCE IF EXISTS gw_transactions_seq")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RecordStore]:
    if request.param == "memory":
        yield MemoryRecordStore()
        return
    from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool

    url = request.getfixturevalue("database_url")
    await drop_schema(url)
    pool = await connect_pool(url)
    try:
        yield PostgresRecordStore(pool)
    finally:
        await pool.close()


async def everything(store: RecordStore, after: str | None = None,
                     limit: int = 100) -> list[TransactionRecord]:
    out: list[TransactionRecord] = []
    while True:
        page = await store.page(after, limit)
        out.extend(r for _, r in page.records)
        if not page.records:
            return out
        after = page.next_cursor


async def test_a_record_reads_back_field_for_field(store: RecordStore) -> None:
    r = record(1, venue="venue-1")
    assert await store.write([r]) == 1
    page = await store.page(None, 10)
    assert [x for _, x in page.records] == [r]
    assert page.next_cursor == page.records[0][0]


async def test_nulls_and_empty_attributes_read_back(store: RecordStore) -> None:
    r = record(1, face=None, decision="deny", reason="malformed", subject=None,
               attributes={}, credential_hash=None)
    await store.write([r])
    assert await everything(store) == [r]


async def test_a_record_written_twice_is_stored_once(store: RecordStore) -> None:
    a, b = record(1), record(2)
    assert await store.write([a, b]) == 2
    assert await store.write([b, a, record(3)]) == 1  # a re-delivered batch, plus one new
    assert await store.write([a, a]) == 0
    got = await everything(store)
    assert [r.request_id for r in got] == ["r-1", "r-2", "r-3"]


async def test_duplicates_inside_one_batch_are_stored_once(store: RecordStore) -> None:
    a = record(1)
    assert await store.write([a, a, record(2), a]) == 2
    assert len(await everything(store)) == 2


async def test_pages_follow_write_order_and_the_cursor_resumes(store: RecordStore) -> None:
    rs = [record(i, T0 + (i % 3) * DAY) for i in range(25)]  # three days, interleaved
    for i in range(0, 25, 5):
        await store.write(rs[i:i + 5])
    first = await store.page(None, 10)
    assert [r.request_id for _, r in first.records] == [f"r-{i}" for i in range(10)]
    rest = await everything(store, first.next_cursor, limit=7)
    assert [r.request_id for r in rest] == [f"r-{i}" for i in range(10, 25)]
    end = await store.page(first.records[-1][0], 0)
    assert end.records == [] and end.next_cursor == first.records[-1][0]


async def test_a_late_record_comes_after_the_cursor_a_reader_holds(store: RecordStore) -> None:
    """An offline upload, or an outbox drained after an outage, writes records whose times lie
    before ones already exported: a reader that kept its cursor still gets them."""
    await store.write([record(1, T0)])
    page = await store.page(None, 10)
    await store.write([record(2, T0 - 3600), record(3, T0 - DAY)])
    later = await store.page(page.next_cursor, 10)
    assert [r.request_id for _, r in later.records] == ["r-2", "r-3"]


async def test_the_empty_store_answers_an_empty_page(store: RecordStore) -> None:
    page = await store.page(None, 10)
    assert page.records == [] and page.next_cursor == "0"
    assert store.valid_cursor(page.next_cursor)
    assert not store.valid_cursor("abc") and not store.valid_cursor("-1")


async def test_retention_drops_whole_days_before_the_cutoff(store: RecordStore) -> None:
    day0 = (T0 // DAY) * DAY
    await store.write([record(1, day0 - DAY + 10), record(2, day0 + 10),
                       record(3, day0 + DAY - 1), record(4, day0 + DAY + 5)])
    assert await store.prune(day0 + 100) == 1  # only the day that ended before the cutoff
    assert [r.request_id for r in await everything(store)] == ["r-2", "r-3", "r-4"]
    assert await store.prune(day0 + 100) == 0
    await store.write([record(5, day0 - DAY + 20)])  # a late record for a dropped day
    assert [r.request_id for r in await everything(store)] == ["r-2", "r-3", "r-4", "r-5"]


async def test_concurrent_writers_never_leave_a_hole_behind_a_reader(store: RecordStore) -> None:
    """Two writers at once (an exporter and a straggler after a lock hand-over) and a reader
    paging meanwhile: the reader ends with every record exactly once."""
    batches = [[record(b * 100 + i) for i in range(40)] for b in range(8)]
    seen: list[str] = []
    done = asyncio.Event()

    async def reader() -> None:
        after: str | None = None
        while True:
            page = await store.page(after, 13)
            seen.extend(r.request_id for _, r in page.records)
            after = page.next_cursor
            if done.is_set() and not page.records:
                return
            await asyncio.sleep(0)

    async def writer(bs: list[list[TransactionRecord]]) -> None:
        for b in bs:
            await store.write(b)

    task = asyncio.ensure_future(reader())
    await asyncio.gather(writer(batches[0::2]), writer(batches[1::2]), writer(batches[:3]))
    done.set()
    await task
    assert sorted(seen) == sorted(r.request_id for b in batches for r in b)


async def test_the_memory_store_keeps_its_bound_by_dropping_the_oldest() -> None:
    store = MemoryRecordStore(max_records=20)
    await store.write([record(i) for i in range(45)])
    got = await everything(store)
    assert len(got) <= 20 and got[-1].request_id == "r-44"
    assert [r.request_id for r in got] == [f"r-{i}" for i in range(45 - len(got), 45)]
