"""Benchmarks of the transaction records (issue 14; docs/records.md), in one run:

  (r1) the exporter: an outbox of N records drained into PostgreSQL in batches (one COPY and
       the daily roll-ups' upsert per batch, the next batch prepared meanwhile), records/s —
       target ≥ 50,000; again without the roll-ups, for what they cost;
  (r2) verify allow with records on (outbox append in the claim's script, exporter running,
       PostgreSQL behind it) against the same gateway with records off, interleaved rounds,
       same worker count — target ≥ 0.95 ×;
  (r3) offline upload: POST /v1/gates/offline-scans in batches of 500 fresh codes, 2 workers,
       scans/s — target ≥ 20,000; then (r3') where an uploaded scan's CPU goes, in-process
       against the Ed25519 check that is its floor (loadtests/upload_floor.py).

PostgreSQL is a private server (tests/postgres_server.py) with its durable defaults (fsync on,
synchronous_commit on): the figures are those of a store that survives a power cut. Redis is
private too (loadtests.bench.redis_server). Figures on the shared 2-core box move ±25 % from
run to run; the ratio of (r2) is measured within one run, interleaved.

    python -m loadtests.records_bench [--records 200000] [--batch 20000] [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

TARGET_EXPORT_RPS = 50_000.0
TARGET_RECORDS_RATIO = 0.95
TARGET_OFFLINE_RPS = 20_000.0


def say(msg: str) -> None:
    print(f"records-bench: {msg}", file=sys.stderr, flush=True)


BENCH_SCENES = ("metro", "bus", "scenic_spot", "library")
BENCH_FACES = ("ykm", "essc", "ssc_card")


def bench_places() -> dict[str, tuple[str, str, str]]:
    """152 gates, one venue each: 38 districts × 4 scenes (what the roll-ups group by)."""
    from gateway.services.venues import DISTRICTS

    return {f"g-{d}-{s}": (f"v-{d}-{s}", d, s) for d in DISTRICTS for s in BENCH_SCENES}


async def fill_outbox(redis_url: str, n: int, shards: int, prefix: str = "bench:") -> None:
    """n records spread over the 152 gates, 3 forms, 1 deny in 10, 20,000 residents."""
    import redis.asyncio as aioredis

    from gateway.adapters.redis_records import outbox_keys
    from gateway.services.records import TransactionRecord, new_record_id

    r = aioredis.Redis.from_url(redis_url)
    streams = outbox_keys(prefix, shards)
    gates = sorted(bench_places().items())
    now = time.time()
    try:
        for start in range(0, n, 2000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + 2000)):
                gate, (_, _, scene) = gates[(i * 7919) % len(gates)]
                deny = i % 10 == 9
                rec = TransactionRecord(
                    record_id=new_record_id(now), gate=gate, scene=scene,
                    face=BENCH_FACES[i % 3], decision="deny" if deny else "allow",
                    reason="expired" if deny else "ok", scanned_at=now - 0.04 - (i % 50) / 1000,
                    verified_at=now, origin="online", request_id=f"bench-{i}",
                    subject=None if deny else f"{(i * 104729) % 20000:043d}",
                    attributes={"concession": "senior"}, credential_hash=bytes(32))
                pipe.xadd(streams[i % shards], {"r": rec.to_wire()})
            await pipe.execute()
    finally:
        await r.aclose()


async def drain(redis_url: str, pg_url: str, shards: int, batch: int,
                prefix: str = "bench:", rollups: bool = True) -> tuple[int, float, int]:
    import redis.asyncio as aioredis

    from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
    from gateway.adapters.postgres_stats import ExporterRollups, PostgresStatsStore
    from gateway.adapters.redis_records import RedisExporterLock, RedisOutbox
    from gateway.services.records import Exporter

    r = aioredis.Redis.from_url(redis_url)
    pool = await connect_pool(pg_url)
    places = bench_places()

    async def where() -> dict[str, tuple[str, str, str]]:
        return places

    try:
        async with pool.acquire() as conn:  # every run from empty tables: runs compare
            await conn.execute("DROP TABLE IF EXISTS gw_transactions, gw_stats_venue, "
                               "gw_stats_level, gw_stats_verified CASCADE")
        store = PostgresRecordStore(
            pool, ExporterRollups(PostgresStatsStore(pool), where) if rollups else None)
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
                 batch: int, rollups: bool = True) -> dict[str, Any]:
    """Records/s, and the CPU each record cost: the exporter (this process), PostgreSQL (the
    postmaster's whole tree) and Redis — a figure the box's other load moves far less."""
    import resource

    from loadtests.bench import tree_cpu_s

    say(f"(r1) filling the outbox with {n} records over {shards} shards")
    asyncio.run(fill_outbox(redis_url, n, shards))
    say(f"(r1) draining into PostgreSQL in batches of {batch}, roll-ups "
        f"{'on' if rollups else 'off'}")
    pg_pid = _postmaster_pid(pg.datadir)
    before = resource.getrusage(resource.RUSAGE_SELF)
    pg0, redis0 = tree_cpu_s(pg_pid), tree_cpu_s(redis_pid)
    taken, elapsed, stored = asyncio.run(drain(redis_url, pg.url, shards, batch,
                                               rollups=rollups))
    after = resource.getrusage(resource.RUSAGE_SELF)
    pg1, redis1 = tree_cpu_s(pg_pid), tree_cpu_s(redis_pid)
    rps = taken / elapsed if elapsed else 0.0

    def us(seconds: float | None) -> float | None:
        return round(seconds * 1e6 / taken, 2) if seconds is not None and taken else None

    py_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"name": "exporter_records_per_s" + ("" if rollups else " (roll-ups off)"),
            "records": taken, "stored": stored,
            "seconds": round(elapsed, 3), "rps": round(rps, 1),
            "exporter_cpu_us_per_record": us(py_s),
            "postgres_cpu_us_per_record": us(pg1 - pg0 if pg0 is not None and pg1 is not None
                                             else None),
            "redis_cpu_us_per_record": us(redis1 - redis0 if redis0 is not None
                                          and redis1 is not None else None),
            "target": f">= {TARGET_EXPORT_RPS:.0f}" if rollups else "",
            "passed": rps >= TARGET_EXPORT_RPS and stored == taken}


def _gateway_env(redis_url: str, keys_dir: Any, port: int, workers: int,
                 **extra: str) -> dict[str, str]:
    from loadtests.bench import UNLIMITED, gateway_env

    env = gateway_env(redis_url, keys_dir, port, workers)
    env.update({"GATEWAY_RATELIMIT_OAUTH_IP": UNLIMITED, "GATEWAY_LOG_LEVEL": "warning",
                "GATEWAY_MAX_INFLIGHT": "0", **extra})
    return env


def offline_bodies(keys: Any, person_id: str, attributes: Any, n_scans: int, batch: int,
                   path: Any) -> int:
    """`n_scans` fresh codes, scanned one second after issue, in upload bodies of `batch`."""
    from gateway.timefmt import rfc3339
    from loadtests import seed

    now = int(time.time())
    codes = seed.issue_codes(keys, n_scans, person_id, attributes=attributes, issued_at=now)
    at = rfc3339(now + 1)
    run = time.monotonic_ns()
    lines = []
    for b in range(0, n_scans, batch):
        scans = [{"request_id": f"off-{run}-{b + i}", "code": c, "scanned_at": at,
                  "local_decision": "allow"} for i, c in enumerate(codes[b:b + batch])]
        lines.append(json.dumps({"scans": scans}, separators=(",", ":")))
    seed.write_lines(path, lines)
    return len(lines)


def wait_drained(redis_url: str, prefix: str, shards: int, timeout_s: float = 300.0
                 ) -> tuple[int, float]:
    """(records the outbox held when the run ended, seconds until the exporter had drained
    them): the records-on gateway's exporter runs in its own process at a lower priority, so
    at peak the outbox absorbs the records and it catches up after — shown here, and waited
    for, so that no round bears the deferred work of the round before."""
    import redis

    from gateway.adapters.redis_records import outbox_keys

    r = redis.Redis.from_url(redis_url)
    keys = outbox_keys(prefix, shards)
    try:
        held = sum(int(r.xlen(k)) for k in keys)
        t0 = time.monotonic()
        while sum(int(r.xlen(k)) for k in keys) and time.monotonic() - t0 < timeout_s:
            time.sleep(0.1)
        left = sum(int(r.xlen(k)) for k in keys)
        if left:
            raise RuntimeError(f"the outbox still held {left} records after {timeout_s} s")
        return held, time.monotonic() - t0
    finally:
        r.close()


def _exporter_pid(serve_pid: int) -> int | None:
    """The exporter process of a `gateway serve`: its one child at a lower priority (nice)."""
    from tests.serving import children_nice

    return next((p for p, nice in children_nice(serve_pid).items() if nice > 0), None)


def _cpu_s(pid: int | None) -> float | None:
    from loadtests.bench import CLK_TCK, read_proc_stat

    st = read_proc_stat(pid) if pid is not None else None
    return st[1] / CLK_TCK if st is not None else None


def _stored(pg_url: str) -> int:
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM gw_transactions"))
        except asyncpg.UndefinedTableError:  # no exporter has written yet
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def gateway_rows(args: argparse.Namespace, pg: Any, redis_url: str, redis_pid: int,
                 only: set[str]) -> list[dict[str, Any]]:
    """(r2) verify allow with records on / off, interleaved; (r3) offline upload."""
    from pathlib import Path

    from loadtests import seed
    from loadtests.bench import (
        OUT_DIR,
        PY,
        demo_secret,
        ensure_wrk,
        free_port,
        median_result,
        prepare_keys,
        process,
        resident_person,
        run_wrk,
        sealed_attributes,
        tree_cpu_s,
        wait_http,
    )

    wrk = ensure_wrk()
    work = OUT_DIR / f"records-{time.strftime('%Y%m%dT%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    keys_dir = work / "keys"
    prepare_keys(keys_dir)
    keys = seed.GatewayKeys.load(keys_dir)
    w, c, d = args.workers, args.connections, args.duration
    on_port, off_port = free_port(), free_port()
    # The live counters (GATEWAY_STATS_LIVE, issue 15) ride the records' claim script and
    # exist only with records on: they are off on the "on" side too unless --live-stats, so
    # the two sides differ by the records alone ("the same without"); what the counters cost
    # is script/bench's own row (verify allow with live statistics on / off).
    on_env = _gateway_env(redis_url, keys_dir, on_port, w, GATEWAY_REDIS_PREFIX="on:",
                          GATEWAY_DATABASE_URL=pg.url,
                          GATEWAY_STATS_LIVE="true" if args.live_stats else "false")
    off_env = _gateway_env(redis_url, keys_dir, off_port, w, GATEWAY_REDIS_PREFIX="off:",
                           GATEWAY_TRANSACTIONS_ENABLED="false")
    rows: list[dict[str, Any]] = []
    with process([PY, "-m", "gateway", "serve", "--workers", str(w), "--port", str(on_port)],
                 env=on_env, log=work / "gateway-on.log") as on_proc, \
            process([PY, "-m", "gateway", "serve", "--workers", str(w), "--port",
                     str(off_port)], env=off_env, log=work / "gateway-off.log") as off_proc:
        bases = {"on": f"http://127.0.0.1:{on_port}", "off": f"http://127.0.0.1:{off_port}"}
        pids = {"on": on_proc.pid, "off": off_proc.pid}
        for base in bases.values():
            wait_http(f"{base}/healthz", timeout_s=60)
        time.sleep(1.0)
        secret = demo_secret(keys_dir, args.gate)
        tokens = {k: seed.client_token(b, args.gate, secret) for k, b in bases.items()}
        _, person_id, _ = resident_person(bases["on"], keys_dir)
        resident_token = seed.mint_resident_token(keys, bases["on"], person_id)
        attributes = sealed_attributes(bases["on"], keys, resident_token)
        if "verify" in only:
            rounds: dict[str, list[Any]] = {"on": [], "off": []}
            drains: list[tuple[int, float]] = []
            export_cpu: list[tuple[float | None, float | None]] = []  # µs/record: exporter, PG
            pg_pid = _postmaster_pid(pg.datadir)
            stored0 = _stored(pg.url)
            for i in range(1, args.rounds + 1):
                order = ("off", "on") if i % 2 else ("on", "off")  # ABBA: drift cancels
                for kind in order:
                    n = args.codes_per_second * d
                    say(f"(r2) verify allow, records {kind}, round {i}/{args.rounds}")
                    f = seed.write_lines(work / f"codes-{kind}-{i}.txt", seed.issue_codes(
                        keys, n, person_id, attributes=attributes))
                    if kind == "on":
                        xp = _exporter_pid(pids["on"])
                        cpu0 = (_cpu_s(xp), tree_cpu_s(pg_pid), _stored(pg.url))
                    rounds[kind].append(run_wrk(
                        wrk, f"verify_allow_records_{kind}#{i}", bases[kind], "verify.lua",
                        {"WRK_PATH": "/v1/codes/verify", "WRK_SCENE": args.scene,
                         "WRK_AUTH": f"Bearer {tokens[kind]}", "WRK_CODES": str(f),
                         "WRK_EXPECT": '"allow"'},
                        threads=1, connections=c, duration_s=d, server_pid=pids[kind],
                        redis_pid=redis_pid))
                    f.unlink()
                    if kind == "on":
                        drains.append(wait_drained(redis_url, "on:", args.shards))
                        say(f"(r2) the exporter drained {drains[-1][0]} records left in the "
                            f"outbox in {drains[-1][1]:.1f} s")
                        cpu1 = (_cpu_s(xp), tree_cpu_s(pg_pid), _stored(pg.url))
                        got = max(1, cpu1[2] - cpu0[2])
                        export_cpu.append(tuple(  # type: ignore[arg-type]
                            round((b - a) / got * 1e6, 1) if a is not None and b is not None
                            else None for a, b in zip(cpu0[:2], cpu1[:2], strict=True)))
            medians = {k: median_result(f"verify_allow_records_{k}", v)
                       for k, v in rounds.items()}
            on, off = medians["on"], medians["off"]
            ratio = on.expected_rps / off.expected_rps if off.expected_rps else 0.0
            for kind in ("off", "on"):
                r = medians[kind]
                rows.append({"name": r.name, "rps": r.expected_rps, "p99_ms": r.p99_ms,
                             "server_cpu_us_per_req": r.server_cpu_us_per_req,
                             "redis_cpu_us_per_req": r.redis_cpu_us_per_req,
                             "rounds": [x.expected_rps for x in rounds[kind]],
                             "target": "", "passed": True})
            allowed = sum(x.expected for x in rounds["on"])
            stored = _stored(pg.url) - stored0
            rows.append({"name": "records on: records left in the outbox at the end of each "
                                 "run / seconds the exporter process took to drain them",
                         "rps": [[n, round(t, 1)] for n, t in drains], "target": "",
                         "passed": True})
            rows.append({"name": "records on: CPU per record of the exporter process / of "
                                 "PostgreSQL, over each run and its drain (us)",
                         "rps": [list(x) for x in export_cpu], "target": "", "passed": True})
            # wrk counts the answers it read; the requests still in flight when it stopped
            # (at most one per connection) were decided, and recorded, all the same
            slack = c * args.rounds
            rows.append({"name": "records on: allows wrk counted / records in PostgreSQL",
                         "rps": [allowed, stored], "target": f"allows .. allows + {slack}",
                         "passed": allowed <= stored <= allowed + slack})
            rows.append({"name": "verify_allow_records_on / off", "rps": round(ratio, 3),
                         "target": f">= {TARGET_RECORDS_RATIO}",
                         "passed": ratio >= TARGET_RECORDS_RATIO})
        if "offline" in only:
            batch = args.offline_batch
            n_scans = int(TARGET_OFFLINE_RPS * 1.5 * d)
            say(f"(r3) offline upload: {n_scans} fresh codes in batches of {batch}")
            f = work / "offline-bodies.txt"
            offline_bodies(keys, person_id, attributes, n_scans, batch, f)
            status, first = seed.http_json(
                "POST", f"{bases['on']}/v1/gates/offline-scans",
                body=json.loads(Path(f).read_text().split("\n", 1)[0]),
                headers={"Authorization": f"Bearer {tokens['on']}"})
            assert status == 200 and isinstance(first, dict), (status, first)
            statuses = {r["status"] for r in first["results"]}
            assert statuses == {"confirmed"}, f"(r3) a fresh batch came back {statuses}"
            pg_pid = _postmaster_pid(pg.datadir)
            pg0 = tree_cpu_s(pg_pid)
            r = run_wrk(wrk, "offline_upload", bases["on"], "bodies.lua",
                        {"WRK_PATH": "/v1/gates/offline-scans", "WRK_BODIES": str(f),
                         "WRK_AUTH": f"Bearer {tokens['on']}", "WRK_EXPECT": '"confirmed"'},
                        threads=1, connections=args.offline_connections, duration_s=d,
                        server_pid=pids["on"], redis_pid=redis_pid)
            # the exporter process (lower priority) writes what the outbox absorbed during the
            # run: PostgreSQL's CPU per scan counts that deferred work too
            held, took = wait_drained(redis_url, "on:", args.shards)
            say(f"(r3) the exporter drained {held} records left in the outbox in {took:.1f} s")
            pg1 = tree_cpu_s(pg_pid)
            rows.extend(offline_rows(r, batch, w, pg1 - pg0 if pg0 is not None
                                     and pg1 is not None else None))
            f.unlink()
    import shutil

    shutil.rmtree(keys_dir, ignore_errors=True)
    return rows


def offline_rows(r: Any, batch: int, workers: int,
                 pg_cpu_s: float | None) -> list[dict[str, Any]]:
    """(r3) the upload rate, and where its CPU went per scan: the gateway's workers (pipeline,
    exporter, statistics), Redis, PostgreSQL (the exporter's COPY). The ceiling is what the
    box's cores could do if they did nothing but this: cores / (CPU per scan of all three)."""
    import os

    scans = r.requests * batch
    scans_per_s = r.expected_rps * batch

    def per_scan(us_per_req: float | None) -> float | None:
        return round(us_per_req / batch, 1) if us_per_req is not None else None

    gw, rd = per_scan(r.server_cpu_us_per_req), per_scan(r.redis_cpu_us_per_req)
    pg_us = round(pg_cpu_s * 1e6 / scans, 1) if pg_cpu_s is not None and scans else None
    total = sum(x for x in (gw, rd, pg_us) if x is not None)
    cores = len(os.sched_getaffinity(0))
    ceiling = round(cores * 1e6 / total) if total else None
    return [
        {"name": f"offline_upload_scans_per_s ({workers} workers, batches of {batch})",
         "rps": round(scans_per_s, 1), "batches_per_s": r.expected_rps, "p99_ms": r.p99_ms,
         "server_cpu_us_per_scan": gw, "redis_cpu_us_per_scan": rd,
         "postgres_cpu_us_per_scan": pg_us, "wrapped": r.wrapped,
         "first_other": r.first_other, "note": r.note, "runs": 1,
         "target": f">= {TARGET_OFFLINE_RPS:.0f}",
         "passed": scans_per_s >= TARGET_OFFLINE_RPS and r.wrapped == 0},
        {"name": f"offline upload ceiling on this box's {cores} cores from the CPU per scan "
                 f"(gateway {gw} + Redis {rd} + PostgreSQL {pg_us} us; wrk not counted), "
                 "scans/s", "rps": ceiling, "target": "", "passed": True}]


def floor_rows() -> list[dict[str, Any]]:
    """(r3') where an uploaded scan's CPU goes, in-process (loadtests/upload_floor.py, its own
    redis-server): the whole upload, the code face's check, the bare signature check."""
    import subprocess

    say("(r3') offline upload CPU per scan, in-process, against the signature check")
    r = subprocess.run([sys.executable, "-m", "loadtests.upload_floor", "--json"],
                       capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        say(f"upload_floor failed: {r.stderr[-300:]}")
        return []
    f = json.loads(r.stdout.strip().splitlines()[-1])
    m = f["cpu_us_per_scan_medians"]
    return [{"name": "offline upload CPU per scan in-process (us): server / of which the code "
                     "face's check / of which the Ed25519 check / Redis",
             "rps": [f["server_us_per_scan"], m["face_check"], m["signature"], m.get("redis")],
             "rounds": f["rounds"], "target": "", "passed": True},
            {"name": "offline upload ceiling on 2 cores from that CPU per scan (server + "
                     "Redis; the exporter's PostgreSQL not counted), scans/s",
             "rps": f["two_core_ceiling_scans_per_s"], "target": "", "passed": True},
            {"name": "2 cores doing nothing but the Ed25519 checks, scans/s",
             "rps": f["two_core_signature_only_scans_per_s"], "target": "", "passed": True}]


def calibration_row() -> dict[str, Any]:
    """What one Ed25519 verification (libsodium, the gate path's) costs in this run: the
    box's speed at the moment, to read the other rows against (about 45 µs on a quiet core
    of this machine, measured in issue 7)."""
    import timeit

    from nacl.signing import SigningKey

    key = SigningKey.generate()
    signed = key.sign(b"x" * 60)
    verify = key.verify_key.verify
    n = 2000
    seconds = min(timeit.repeat(lambda: verify(signed), number=n, repeat=5))
    return {"name": "calibration: one Ed25519 verify (us)", "rps": round(seconds / n * 1e6, 1),
            "target": "", "passed": True}


def main(argv: list[str] | None = None) -> int:
    from loadtests.bench import redis_server
    from tests.postgres_server import PostgresServer

    p = argparse.ArgumentParser(prog="records_bench")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--export-rounds", type=int, default=2)
    p.add_argument("--only", choices=["exporter", "verify", "offline"], action="append")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    # above what either side answers on this box (the records-off gateway reached 12,000, the
    # old default, and then answered 'replayed' on reused codes: its allows/s was the supply)
    p.add_argument("--codes-per-second", type=int, default=20000)
    p.add_argument("--live-stats", action="store_true",
                   help="records-on side with the live statistics counters on (its default)")
    p.add_argument("--offline-batch", type=int, default=500)
    p.add_argument("--offline-connections", type=int, default=4)
    p.add_argument("--gate", default="gate-metro-l1-xiaoshizi")
    p.add_argument("--scene", default="metro")
    args = p.parse_args(argv)
    only = set(args.only or ["exporter", "verify", "offline"])
    rows: list[dict[str, Any]] = [calibration_row()]
    pg = PostgresServer(durable=True).start()
    try:
        with redis_server() as (redis_url, redis_pid):
            if "exporter" in only:
                # alternated, fresh tables each run: with the roll-ups (the target) and
                # without (what they cost), --export-rounds of each
                for _ in range(args.export_rounds):
                    for rollups in (True, False):
                        rows.append(exporter_row(redis_url, redis_pid, pg, args.records,
                                                 args.shards, args.batch, rollups))
            if only & {"verify", "offline"}:
                rows.extend(gateway_rows(args, pg, redis_url, redis_pid, only))
        if "offline" in only:
            rows.extend(floor_rows())
    finally:
        pg.remove()
    rows.append(calibration_row())  # and again at the end: the box's speed moved meanwhile?
    for row in rows:
        print(json.dumps(row))
    print("\ntargets:")
    for row in rows:
        if row["target"]:
            print(f"  {'PASS' if row['passed'] else 'MISS'}  {row['name']}: {row['rps']} "
                  f"(goal {row['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
