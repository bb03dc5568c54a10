"""`gateway stats rebuild --from DAY`, as an operator runs it: a real process against a real
PostgreSQL and Redis (the venue registry, the audit log)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis.asyncio as aioredis

from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
from gateway.adapters.postgres_stats import PostgresStatsStore
from gateway.adapters.redis_ops import RedisVenueStore
from gateway.services.records import TransactionRecord, new_record_id, to_ms
from gateway.services.stats import ANY
from tests.contract.test_record_store import drop_schema
from tests.contract.test_stats_store import drop_stats
from tests.foundation.test_cli import base_env, run


def record(i: int, t: float, gate: str = "gate-metro-1") -> TransactionRecord:
    return TransactionRecord(
        record_id=new_record_id(t), gate=gate, scene="metro", face="ykm",
        decision="allow", reason="ok", scanned_at=to_ms(t - 0.05), verified_at=to_ms(t),
        origin="online", request_id=f"rb-{i}", subject=f"s{i % 3}")


async def test_rebuild_recomputes_from_the_records_and_is_audited(
        database_url: str, redis_url: str, tmp_path: Path) -> None:
    await drop_schema(database_url)
    await drop_stats(database_url)
    r = aioredis.Redis.from_url(redis_url)
    await r.flushdb()
    venues = RedisVenueStore(r, "gw:")
    await venues.put_many([{"id": "venue-1", "name": "V", "scene": "metro",
                            "district": "500103", "operator": "op", "status": "active"}])
    await venues.assign_gate("gate-metro-1", "venue-1")
    pool = await connect_pool(database_url)
    now = time.time()
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    try:
        # records written before the roll-ups existed (or by a buggy version): none counted
        await PostgresRecordStore(pool).write([record(i, now) for i in range(12)])
        stats = PostgresStatsStore(pool)
        assert await stats.levels(today, today, ANY, ANY) == []
        env = base_env(tmp_path, GATEWAY_DATABASE_URL=database_url,
                       GATEWAY_REDIS_URL=redis_url)
        assert run(["keys", "generate"], env, tmp_path).returncode == 0
        done = run(["stats", "rebuild", "--from", today], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["records"] == 12
        by_district = dict(await stats.totals(today, today, ["district"], None, None))
        assert {k: v.scans for k, v in by_district.items()} == {("500103",): 12}
        # run twice: the same figures, not twice them
        assert run(["stats", "rebuild", "--from", today], env, tmp_path).returncode == 0
        assert dict(await stats.totals(today, today, ["district"], None, None))[
            ("500103",)].scans == 12
        listed = [json.loads(x) for x in run(["audit", "list"], env, tmp_path).stdout.splitlines()]
        rebuilt = [e for e in listed if e["action"] == "admin.stats.rebuilt"]
        assert len(rebuilt) == 2 and rebuilt[0]["actor"].startswith("operator:host:")
        assert rebuilt[0]["target"] == f"stats:from:{today}"
        bad = run(["stats", "rebuild", "--from", "yesterday"], env, tmp_path)
        assert bad.returncode == 2 and "--from" in bad.stderr and "Traceback" not in bad.stderr
        # a bounded range: one day here, reported as it commits, audited with its end
        one = run(["stats", "rebuild", "--from", today, "--to", today], env, tmp_path)
        assert one.returncode == 0, one.stderr
        out = json.loads(one.stdout)
        assert (out["from"], out["to"], out["days"], out["records"]) == (today, today, 1, 12)
        assert json.loads(one.stderr.splitlines()[-1]) == {"day": today, "records": 12,
                                                            "rows": 1}
        listed = [json.loads(x) for x in run(["audit", "list"], env, tmp_path).stdout.splitlines()]
        last = [e for e in listed if e["action"] == "admin.stats.rebuilt"][-1]
        assert last["detail"]["to"] == today and last["detail"]["days"] == 1
        # a day whose records are not stored: refused, its roll-ups are not wiped
        early = run(["stats", "rebuild", "--from", "2001-01-01"], env, tmp_path)
        assert early.returncode == 2 and f"rebuild from {today}" in early.stderr, early.stderr
        assert dict(await stats.totals(today, today, ["district"], None, None))[
            ("500103",)].scans == 12
        for to, says in (("2001-01-01", "before --from"), ("soon", "--to")):
            bad = run(["stats", "rebuild", "--from", today, "--to", to], env, tmp_path)
            assert bad.returncode == 2 and says in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr
    finally:
        await pool.close()
        await r.aclose()


def test_rebuild_without_a_database_says_so(tmp_path: Path) -> None:
    r = run(["stats", "rebuild", "--from", "2027-01-01"], base_env(tmp_path), tmp_path)
    assert r.returncode == 2 and "GATEWAY_DATABASE_URL" in r.stderr
