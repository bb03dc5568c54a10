"""`gateway transactions export [--after CURSOR]` and `prune`, as an operator runs them: real
processes against a real PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
from gateway.services.records import TransactionRecord, new_record_id, to_ms
from tests.contract.test_record_store import drop_schema
from tests.foundation.test_cli import base_env, run


def record(i: int, t: float) -> TransactionRecord:
    return TransactionRecord(
        record_id=new_record_id(t), gate="gate-metro-1", scene="metro", face="ykm",
        decision="allow", reason="ok", scanned_at=to_ms(t - 1), verified_at=to_ms(t),
        origin="online", request_id=f"cli-{i}", subject="s", attributes={"concession": "senior"},
        credential_hash=bytes(32))


async def test_export_prints_every_record_then_resumes_after_the_cursor(
        database_url: str, tmp_path: Path) -> None:
    await drop_schema(database_url)
    pool = await connect_pool(database_url)
    store = PostgresRecordStore(pool)
    now = time.time()
    try:
        await store.write([record(i, now) for i in range(7)])
        env = base_env(tmp_path, GATEWAY_DATABASE_URL=database_url)
        r = run(["transactions", "export"], env, tmp_path)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert [x["request_id"] for x in lines] == [f"cli-{i}" for i in range(7)]
        assert lines[0]["attributes"] == {"concession": "senior"}
        cursor = r.stderr.strip().rsplit("next cursor: ", 1)[1].split()[0]
        assert cursor == lines[-1]["cursor"]
        await store.write([record(i, now) for i in range(7, 9)])
        r = run(["transactions", "export", "--after", cursor], env, tmp_path)
        assert [json.loads(x)["request_id"] for x in r.stdout.splitlines()] == ["cli-7", "cli-8"]
        r = run(["transactions", "export", "--after", "not-a-cursor"], env, tmp_path)
        assert r.returncode == 2 and "--after" in r.stderr
        # retention: a record 3 days old goes with its day; today's stay
        await store.write([record(99, now - 3 * 86400)])
        r = run(["transactions", "prune"], {**env, "GATEWAY_TRANSACTIONS_RETENTION_DAYS": "2"},
                tmp_path)
        assert r.returncode == 0 and "1 day partitions dropped" in r.stderr
        r = run(["transactions", "export"], env, tmp_path)
        assert "cli-99" not in r.stdout and len(r.stdout.splitlines()) == 9
    finally:
        await pool.close()


def test_export_without_a_database_says_so(tmp_path: Path) -> None:
    r = run(["transactions", "export"], base_env(tmp_path), tmp_path)
    assert r.returncode == 2 and "GATEWAY_DATABASE_URL" in r.stderr
    r = run(["transactions", "export"],
            base_env(tmp_path, GATEWAY_DATABASE_URL="postgresql://127.0.0.1:1/none"), tmp_path)
    assert r.returncode == 1 and "not reachable" in r.stderr
