"""What the live view's read costs late in a busy day (docs/stats.md "The live view"): a
private redis-server holding 4 shards × 1,440 minute hashes × F fields each (the counters of a
whole UTC day), read by `RedisLiveCounters` — the first read of the day (which folds every
closed minute into the day's sum), then the steady reads of a dashboard refreshing once a
minute (each folds one minute). Wall time per read and redis-server CPU per read.

    python -m loadtests.live_read [--fields 200] [--reads 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import redis
import redis.asyncio as aioredis

from gateway.adapters import redis_records as rr
from loadtests import bench
from loadtests.live_cost import _cpu_s

SHARDS = 4


def fill(url: str, fields: int, day: int) -> None:
    r = redis.Redis.from_url(url)
    for k in range(SHARDS):
        pipe = r.pipeline(transaction=False)
        for m in range(day * 1440, day * 1440 + 1440):
            pipe.hset(rr.live_key("lr:", k, m),
                      mapping={f"metro\x1fgate-{g}\x1fykm\x1fok": 1 + g % 7 for g in range(fields)})
        pipe.execute()
    r.close()


async def reads(url: str, pid: int, day: int, n: int) -> tuple[float, float, list[float],
                                                                list[float]]:
    r = aioredis.Redis.from_url(url)
    live = rr.RedisLiveCounters(r, prefix="lr:", shards=SHARDS)
    now = day * 86400.0 + 86400 - 60 * n - 30  # late in the day, n minutes to go
    cpu0, t0 = _cpu_s(pid), time.perf_counter()
    await live.read(now, 15)
    first = (time.perf_counter() - t0) * 1e3, (_cpu_s(pid) - cpu0) * 1e3
    walls, cpus = [], []
    for i in range(1, n):
        cpu0, t0 = _cpu_s(pid), time.perf_counter()
        await live.read(now + 60 * i, 15)
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((_cpu_s(pid) - cpu0) * 1e3)
    await r.aclose()
    return first[0], first[1], walls, cpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.live_read",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--fields", type=int, default=200, help="fields per minute hash")
    p.add_argument("--reads", type=int, default=6, help="reads, a minute apart")
    a = p.parse_args(argv)
    day = int(time.time() // 86400)
    load = os.getloadavg()[0]
    with bench.redis_server() as (url, pid):
        fill(url, a.fields, day)
        first_ms, first_cpu, walls, cpus = asyncio.run(reads(url, pid, day, a.reads))
    print(f"{SHARDS} shards x 1,440 minutes x {a.fields} fields: first read of the day "
          f"{first_ms:.0f} ms (redis-server CPU {first_cpu:.0f} ms, folding every closed "
          f"minute); then median {statistics.median(walls):.1f} ms per read (redis-server "
          f"CPU {statistics.median(cpus):.1f} ms; {len(walls)} reads) "
          f"(load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
