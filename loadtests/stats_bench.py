"""Benchmark of the operator's view (issue 15; docs/stats.md): the dashboard's queries over
30 days × 38 districts × 40 scenes of roll-ups, seeded here (not a timed test).

Seeds a roll-up store — PostgreSQL's (the production one, a private durable server:
tests/postgres_server.py) and the sandbox's in-memory one — with one row per day × district ×
scene × venue (one venue per district × scene) × face (3) — 136,800 rows — and the
distinct-resident sketches at their four levels, plus the venue registry of 1,520 venues with a
gate each; then times each query the dashboard makes (usage by day, usage by face, depth for
the period, and the same with a district filter) and the API's heavier ones (by district with
distinct residents, by venue) as the median of N runs. Target: every query ≤ 200 ms.

    python -m loadtests.stats_bench [--days 30] [--runs 7] [--store postgres|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import date, timedelta

from gateway.adapters.memory_ops import MemoryStatsStore
from gateway.services.ports import StatsStore
from gateway.services.scenes import SceneCatalogue
from gateway.services.stats import (
    ANY,
    FORMS,
    Period,
    Rollup,
    Statistics,
    hll_add,
    hll_empty,
)
from gateway.services.venues import DISTRICTS, Venue

TARGET_MS = 200.0


async def seed(days: int, today: date, store: StatsStore
               ) -> tuple[Statistics, list[Venue], dict[str, str]]:
    rnd = random.Random(15)
    scenes = SceneCatalogue.load()
    scene_ids = [s.id for s in scenes.all()][:40]
    while len(scene_ids) < 40:  # the catalogue holds 42 today; pad if it ever shrinks
        scene_ids.append(scene_ids[len(scene_ids) % len(scene_ids)])
    venues = [Venue(f"v-{d}-{s}", f"{d} {s}", s, d, "op") for d in DISTRICTS for s in scene_ids]
    gates = {f"g-{v.id}": v.id for v in venues}
    subjects = [f"sub-{i}" for i in range(2000)]
    for n in range(days):
        day = (today - timedelta(days=n)).isoformat()
        rows = {}
        sketches: dict[tuple[str, str, str, str], bytearray] = {}
        for d in DISTRICTS:
            for s in scene_ids:
                for face in FORMS:
                    scans = rnd.randint(0, 400)
                    allows = scans - rnd.randint(0, scans // 10 + 1) if scans else 0
                    rows[(day, d, s, f"v-{d}-{s}", face)] = Rollup(
                        scans=scans, allows=max(0, allows),
                        denies={"expired": max(0, scans - allows)},
                        latency={rnd.randint(18, 30): scans})
                    for key in ((day, d, s, face), (day, d, ANY, face), (day, ANY, s, face),
                                (day, ANY, ANY, face)):
                        if key not in sketches:
                            sketches[key] = hll_empty()
                    reg = sketches[(day, d, s, face)]
                    for sub in rnd.sample(subjects, 2):
                        hll_add(reg, sub)
        # the coarser levels: merged from the finest, as roll_up would have built them
        from gateway.services.stats import hll_merge
        for (dy, d, s, face), reg in list(sketches.items()):
            if d != ANY and s != ANY:
                for key in ((dy, d, ANY, face), (dy, ANY, s, face), (dy, ANY, ANY, face)):
                    hll_merge(sketches[key], reg)
        await store.add(rows, sketches)
    return Statistics(store, scenes), venues, gates


async def timed(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


async def main(days: int, runs: int, which: str) -> int:
    if which == "memory":
        return await measure(days, runs, MemoryStatsStore(), "memory")
    from gateway.adapters.postgres_records import connect_pool
    from gateway.adapters.postgres_stats import PostgresStatsStore
    from tests.postgres_server import PostgresServer

    pg = PostgresServer(durable=True).start()
    try:
        pool = await connect_pool(pg.url)
        try:
            store = PostgresStatsStore(pool)
            await store.ensure_schema()
            return await measure(days, runs, store, "postgres", pool)
        finally:
            await pool.close()
    finally:
        pg.remove()


async def measure(days: int, runs: int, store: StatsStore, label: str, pool: object = None
                  ) -> int:
    today = date.today()
    t0 = time.perf_counter()
    stats, venues, gates = await seed(days, today, store)
    if pool is not None:  # fresh statistics for the planner, as autovacuum would give
        async with pool.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("ANALYZE gw_stats_venue; ANALYZE gw_stats_level; "
                               "ANALYZE gw_stats_verified")
    rows = len(await stats.store.rows("0001-01-01", "9999-12-31"))
    print(f"[{label}] seeded {rows} roll-up rows ({days} days × {len(DISTRICTS)} districts × "
          f"40 scenes × 3 forms), {len(venues)} venues in {time.perf_counter() - t0:.1f} s")
    first = today - timedelta(days=days - 1)
    period = Period(first, today, f"{days}d")
    active = set(gates)
    # what GET /admin/dashboard asks (the target), then API questions it does not ask
    dashboard = {
        "usage by day (chart)": lambda: stats.usage(first, today, ["day"]),
        "usage by face (+ distinct residents)": lambda: stats.usage(first, today, ["face"]),
        "depth for the period": lambda: stats.depth(period, venues, gates, active),
        "usage by day, one district": lambda: stats.usage(first, today, ["day"], "500106"),
        "usage by face, one district": lambda: stats.usage(first, today, ["face"], "500106"),
        "depth, one district": lambda: stats.depth(period, venues, gates, active, "500106"),
    }
    api = {
        "API: usage by district (+ residents)": lambda: stats.usage(first, today, ["district"]),
        "API: usage by district × scene": lambda: stats.usage(first, today,
                                                              ["district", "scene"]),
        "API: usage by venue (the finest rows)": lambda: stats.usage(first, today, ["venue"]),
    }
    worst = 0.0
    print("dashboard queries:")
    for name, q in dashboard.items():
        ms = await timed(runs, q)
        worst = max(worst, ms)
        print(f"  {name:40s} {ms:8.1f} ms (median of {runs})")
    page = sum([await timed(runs, dashboard[name]) for name in list(dashboard)[:3]])
    print(f"one dashboard page (its three queries): {page:.1f} ms")
    print("other API questions:")
    worst_api = 0.0
    for name_, q in api.items():
        ms = await timed(runs, q)
        worst_api = max(worst_api, ms)
        print(f"  {name_:40s} {ms:8.1f} ms (median of {runs})")
    verdict = "PASS" if worst <= TARGET_MS else "MISS"
    print(f"[{label}] target: every dashboard query ≤ {TARGET_MS:.0f} ms — worst {worst:.1f} ms:"
          f" {verdict}; worst API question {worst_api:.1f} ms "
          f"({'PASS' if worst_api <= TARGET_MS else 'MISS'})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--store", choices=["postgres", "memory"], action="append")
    a = p.parse_args()
    code = 0
    for which in a.store or ["postgres", "memory"]:
        code |= asyncio.run(main(a.days, a.runs, which))
    raise SystemExit(code)
