"""Contract: the daily roll-up store (gateway.services.ports.StatsStore), on memory (the
sandbox) and on a real PostgreSQL server (gateway/adapters/postgres_stats.py).

Both stores answer every question the same from the same rows: sums over days, the levels
(one value, every value, the all-of row), merged sketches, latency histograms, the venues that
verified something, and the days a rebuild clears.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import pytest

from gateway.adapters.memory_ops import MemoryStatsStore
from gateway.services.ports import StatsStore
from gateway.services.scenes import SceneCatalogue
from gateway.services.stats import (
    ANY,
    Rollup,
    Statistics,
    hll_add,
    hll_count,
    hll_empty,
    latency_bucket,
    roll_up,
)


async def drop_stats(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS gw_stats_venue, gw_stats_level, "
                           "gw_stats_verified CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StatsStore]:
    if request.param == "memory":
        yield MemoryStatsStore()
        return
    from gateway.adapters.postgres_records import connect_pool
    from gateway.adapters.postgres_stats import PostgresStatsStore

    url = request.getfixturevalue("database_url")
    await drop_stats(url)
    pool = await connect_pool(url)
    try:
        yield PostgresStatsStore(pool)
    finally:
        await pool.close()


class R:
    """A record as the roll-up reads it."""

    def __init__(self, gate: str, scene: str, face: str | None, decision: str, reason: str,
                 t: float, subject: str | None = None, latency_s: float = 0.05,
                 origin: str = "online") -> None:
        self.gate, self.scene, self.face = gate, scene, face
        self.decision, self.reason, self.subject = decision, reason, subject
        self.venue = None
        self.scanned_at, self.verified_at, self.origin = t, t + latency_s, origin


D1 = 1_800_000_000.0           # 2027-01-15
D2 = D1 + 86400                # 2027-01-16
PLACES = {"g-a": ("v-a", "500103", "metro"), "g-b": ("v-b", "500106", "metro"),
          "g-c": ("v-c", "500106", "scenic")}


def records() -> list[R]:
    out = [R("g-a", "metro", "ykm", "allow", "ok", D1, "s1", 0.02),
           R("g-a", "metro", "ykm", "allow", "ok", D1 + 5, "s2", 0.04),
           R("g-a", "metro", "essc", "deny", "expired", D1 + 9, latency_s=0.3),
           R("g-b", "metro", "ykm", "allow", "ok", D1 + 7, "s1", 0.02),
           R("g-b", "metro", None, "deny", "malformed", D1 + 8),
           R("g-c", "scenic", "ssc_card", "allow", "ok", D2, "s3", 1.5, origin="offline"),
           R("g-c", "scenic", "ssc_card", "deny", "replayed", D2 + 1),
           R("g-x", "metro", "ykm", "allow", "ok", D2 + 2, "s4")]  # a gate in no venue
    return out


async def fill(store: StatsStore, recs: list[R] | None = None) -> None:
    rows, sketches = roll_up(recs if recs is not None else records(), PLACES)
    await store.add(rows, sketches)


async def test_rows_read_back_summed_over_adds(store: StatsStore) -> None:
    await fill(store)
    await fill(store, records()[:2])   # a second batch adds to the same rows
    rows = dict(await store.rows("2027-01-15", "2027-01-15"))
    a = rows[("2027-01-15", "500103", "metro", "v-a", "ykm")]
    assert (a.scans, a.allows, a.denies) == (4, 4, {})
    assert sum(a.latency.values()) == 4
    assert rows[("2027-01-15", "500106", "metro", "v-b", "none")].denies == {"malformed": 1}
    assert ("2027-01-16", "unassigned", "metro", "unassigned", "ykm") in dict(
        await store.rows("2027-01-15", "2027-01-16"))
    assert [k for k, _ in await store.rows("2027-01-15", "2027-01-16", district="500106",
                                           scene="scenic")] == [
        ("2027-01-16", "500106", "scenic", "v-c", "ssc_card")]


async def test_reason_and_latency_maps_add_key_by_key(store: StatsStore) -> None:
    """A second add with a reason and a bucket already stored and new ones: the stored
    counts grow, the new keys join, the others stand — in the venue row and at its levels."""
    key = ("2027-01-15", "500103", "metro", "v-a", "ykm")
    await store.add({key: Rollup(3, 1, {"expired": 1, "malformed": 1}, {4: 2, 9: 1})}, {})
    await store.add({key: Rollup(4, 1, {"expired": 2, "replayed": 1}, {4: 1, 12: 3})}, {})
    await store.add({key: Rollup(1, 1)}, {})  # no reason, no latency: the maps stand
    (got_key, got), = await store.rows("2027-01-15", "2027-01-15")
    assert got_key == key
    assert (got.scans, got.allows) == (8, 3)
    assert got.denies == {"expired": 3, "malformed": 1, "replayed": 1}
    assert got.latency == {4: 3, 9: 1, 12: 3}
    for district, scene in (("500103", "metro"), (ANY, ANY)):
        (_, level), = await store.levels("2027-01-15", "2027-01-15", district, scene)
        assert (level.scans, level.allows, level.denies, level.latency) == (
            8, 3, {"expired": 3, "malformed": 1, "replayed": 1}, {4: 3, 9: 1, 12: 3})


async def test_levels_one_every_and_all_of(store: StatsStore) -> None:
    await fill(store)
    every = await store.levels("2027-01-15", "2027-01-15", "", ANY)
    assert {(k[1], k[3]): r.scans for k, r in every} == {
        ("500103", "ykm"): 2, ("500103", "essc"): 1, ("500106", "ykm"): 1,
        ("500106", "none"): 1}
    one = await store.levels("2027-01-15", "2027-01-16", "500106", "")
    assert {(k[0], k[2], k[3]): (r.scans, r.allows) for k, r in one} == {
        ("2027-01-15", "metro", "ykm"): (1, 1), ("2027-01-15", "metro", "none"): (1, 0),
        ("2027-01-16", "scenic", "ssc_card"): (2, 1)}
    whole = await store.levels("2027-01-15", "2027-01-16", ANY, ANY)
    assert sum(r.scans for _, r in whole) == len(records())


async def test_totals_group_in_the_store(store: StatsStore) -> None:
    await fill(store)
    by_district = dict(await store.totals("2027-01-15", "2027-01-16", ["district"], None, None))
    assert {k: (r.scans, r.allows, r.denies) for k, r in by_district.items()} == {
        ("500103",): (3, 2, {"expired": 1}),
        ("500106",): (4, 2, {"malformed": 1, "replayed": 1}),
        ("unassigned",): (1, 1, {})}
    by_venue = dict(await store.totals("2027-01-15", "2027-01-16", ["venue", "face"],
                                       "500106", None))
    assert {k: r.scans for k, r in by_venue.items()} == {
        ("v-b", "ykm"): 1, ("v-b", "none"): 1, ("v-c", "ssc_card"): 2}
    # the offline upload's delay is not a decision latency
    assert by_venue[("v-c", "ssc_card")].latency == {latency_bucket(50.0): 1}
    by_day = dict(await store.totals("2027-01-15", "2027-01-16", ["day"], None, "metro"))
    assert {k: r.scans for k, r in by_day.items()} == {("2027-01-15",): 5, ("2027-01-16",): 1}


async def test_sketches_merge_across_adds(store: StatsStore) -> None:
    await fill(store, [R("g-a", "metro", "ykm", "allow", "ok", D1, f"s{i}") for i in range(300)])
    await fill(store, [R("g-a", "metro", "ykm", "allow", "ok", D1, f"s{i}")
                       for i in range(200, 500)])
    got = await store.sketches("2027-01-15", "2027-01-15", ANY, ANY)
    assert [k for k, _ in got] == [("2027-01-15", ANY, ANY, "ykm")]
    assert abs(hll_count(got[0][1]) - 500) <= 500 * 0.1
    assert await store.sketches("2027-01-16", "2027-01-16", ANY, ANY) == []


async def test_verified_venues_need_an_allow_of_a_card_form(store: StatsStore) -> None:
    await fill(store)
    assert await store.verified_venues("2027-01-15", "2027-01-15") == {"v-a", "v-b"}
    assert await store.verified_venues("2027-01-16", "2027-01-16") == {"v-c", "unassigned"}
    assert await store.verified_venues("2027-02-01", "2027-02-28") == set()


async def test_clear_from_drops_that_day_and_later(store: StatsStore) -> None:
    await fill(store)
    assert await store.clear_from("2027-01-16") == 2
    assert {k[0] for k, _ in await store.rows("2000-01-01", "2999-12-31")} == {"2027-01-15"}
    assert await store.sketches("2027-01-16", "2027-01-16", "", "") == []
    assert await store.levels("2027-01-16", "2027-01-16", ANY, ANY) == []


async def test_the_service_answers_alike_on_both(store: StatsStore) -> None:
    await fill(store)
    stats = Statistics(store, SceneCatalogue.load())
    use = await stats.usage(date(2027, 1, 15), date(2027, 1, 16), ["face"])
    ykm = next(g for g in use["groups"] if g["face"] == "ykm")
    assert (ykm["scans"], ykm["allows"], ykm["distinct_residents"]) == (4, 4, 3)
    assert 19.0 <= ykm["latency_ms"]["p50"] <= 24.0   # 20 ms, within a bucket (±9 %)
    assert ykm["latency_ms"]["p99"] >= 40.0
    none = next(g for g in use["groups"] if g["face"] == "none")
    assert none["deny_reasons"] == {"malformed": 1}


def test_a_sketch_counts_without_listing() -> None:
    reg = hll_empty()
    for i in range(2000):
        hll_add(reg, f"subject-{i}")
    assert abs(hll_count(reg) - 2000) <= 2000 * 0.1
    assert b"subject" not in bytes(reg)
    assert Rollup().latency == {}
