"""What the live statistics counters cost on the verify path, isolated from the box's noise
(issue 15; docs/stats.md "Speed"): the claim-and-append script
(gateway/adapters/redis_records.py) run with and without its live HINCRBY on a private
redis-server, in interleaved rounds — redis-server CPU per call from /proc — and the Python cost
of building each call's arguments (the live keys and field); then the whole claim
(`RedisRecordingClaims.claim` through the Coalescer, on uvloop) with and without them, client
CPU per claim.

    python -m loadtests.live_cost [--calls 40000] [--rounds 6]

A whole-gateway A/B (python -m loadtests.ab --old HEAD --old-env GATEWAY_STATS_LIVE=false) on
a shared 2-core box spreads ±15–30 % per pair, more than this cost; this measures the part that
differs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import redis

from gateway.adapters import redis_records as rr
from gateway.services.records import TransactionRecord, new_record_id
from gateway.services.stats import live_field
from loadtests import bench

PREFIX = "lc:"
BATCH = 200


def _cpu_s(pid: int) -> float:
    """CPU seconds of redis-server so far (bench.tree_cpu_s; it is running, so never None)."""
    cpu = bench.tree_cpu_s(pid)
    assert cpu is not None, f"redis-server {pid} is gone"
    return cpu


def _args(sha: str, key: str, stream: str, wire: bytes, rec: TransactionRecord, t: float,
          live: bool) -> tuple[object, ...]:
    """The EVALSHA as RedisRecordingClaims.claim builds it, with or without live keys."""
    if live:
        return ("EVALSHA", sha, 3, key, stream, rr.live_key(PREFIX, 0, int(t // 60)), "v", 60000,
                2_000_000, wire, live_field(rec))
    return ("EVALSHA", sha, 2, key, stream, "v", 60000, 2_000_000, wire)


def run(calls: int, rounds: int) -> dict[bool, tuple[float, float]]:
    """{live: (median redis-server µs per call, median Python µs per call's arguments)}."""
    redis_us: dict[bool, list[float]] = {True: [], False: []}
    python_us: dict[bool, list[float]] = {True: [], False: []}
    with bench.redis_server() as (url, pid):
        r = redis.Redis.from_url(url)
        sha = str(r.script_load(rr.CLAIM_AND_APPEND))
        t = time.time()
        rec = TransactionRecord(new_record_id(t), "gate-metro-l1-xiaoshizi", "metro", "ykm",
                                "allow", "ok", t - 0.03, t, "online", "rid-1", "sub-1", {}, None)
        wire = rec.to_wire()
        stream = f"{PREFIX}tx:outbox:{{{PREFIX}tx:0}}"
        for i in range(rounds):
            for live in (True, False) if i % 2 else (False, True):
                started = time.process_time()
                for n in range(calls):
                    _args(sha, f"k{n}", stream, wire, rec, t, live)
                python_us[live].append((time.process_time() - started) / calls * 1e6)
                before = _cpu_s(pid)
                for b in range(0, calls, BATCH):
                    pipe = r.pipeline(transaction=False)
                    for n in range(b, min(calls, b + BATCH)):
                        pipe.execute_command(*_args(sha, f"c:{i}:{live}:{n}", stream, wire,
                                                    rec, t, live))
                    pipe.execute()
                redis_us[live].append((_cpu_s(pid) - before) / calls * 1e6)
                r.xtrim(stream, maxlen=0)
    return {live: (statistics.median(redis_us[live]), statistics.median(python_us[live]))
            for live in (False, True)}


def run_claims(calls: int, rounds: int, concurrency: int = 64) -> dict[bool, float]:
    """{live: median client CPU µs per claim}: `RedisRecordingClaims.claim` itself, through
    the Coalescer on uvloop (what a worker spends on it), with and without the counters."""
    import asyncio

    import redis.asyncio as aioredis
    import uvloop

    from gateway.adapters.redis_store import Coalescer

    async def go(url: str) -> dict[bool, float]:
        r = aioredis.Redis.from_url(url)
        coalescer = Coalescer(r)
        claims = {}
        for live in (True, False):
            claims[live] = rr.RedisRecordingClaims(coalescer, r.script_load,
                                                   prefix=f"{PREFIX}{int(live)}:", live=live)
            await claims[live].load()
        got: dict[bool, list[float]] = {True: [], False: []}
        for i in range(rounds):
            for live in (True, False) if i % 2 else (False, True):
                t = time.time()
                recs = [TransactionRecord(new_record_id(t), "gate-metro-l1-xiaoshizi", "metro",
                                          "ykm", "allow", "ok", t - 0.03, t, "online",
                                          f"rid-{n}", "sub-1", {}, None) for n in range(calls)]
                gate = asyncio.Semaphore(concurrency)

                async def one(n: int, live: bool = live, recs: list[TransactionRecord] = recs,
                              i: int = i, gate: asyncio.Semaphore = gate) -> None:
                    async with gate:
                        await claims[live].claim(f"k{i}:{n}", 60, "v", recs[n])

                started = time.process_time()
                await asyncio.gather(*(one(n) for n in range(calls)))
                got[live].append((time.process_time() - started) / calls * 1e6)
                await r.delete(*rr.outbox_keys(f"{PREFIX}{int(live)}:", 4))
        await r.aclose()
        return {live: statistics.median(got[live]) for live in (False, True)}

    with bench.redis_server() as (url, _):
        return uvloop.run(go(url))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.live_cost",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=40_000, help="script calls per round and side")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (off/on, on/off…)")
    a = p.parse_args(argv)
    load = os.getloadavg()[0]
    got = run(a.calls, a.rounds)
    for live, (r_us, p_us) in got.items():
        print(f"live counters {'on ' if live else 'off'}: redis-server {r_us:6.2f} us/call, "
              f"python arguments {p_us:5.2f} us/call (medians of {a.rounds})")
    claims = run_claims(min(a.calls, 20_000), a.rounds)
    for live, us in claims.items():
        print(f"live counters {'on ' if live else 'off'}: the claim through the Coalescer, "
              f"client CPU {us:6.2f} us/claim (medians of {a.rounds})")
    print(f"the counters add {got[True][0] - got[False][0]:+.2f} us of Redis and "
          f"{got[True][1] - got[False][1]:+.2f} us of Python (arguments) / "
          f"{claims[True] - claims[False]:+.2f} us (whole claim) per decision "
          f"(load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
