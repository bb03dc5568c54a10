"""Paired A/B of the gateway's verify allow path: an earlier revision against the working tree.

On a shared machine the same benchmark run moves ±25 %, more than most changes; two full
`script/bench` runs cannot tell a 7 % gain from the box's drift. This runs both gateways at
once (same Redis, same keys, each under its own key prefix), warms both, then alternates
wrk runs between them on freshly issued codes — old/new, new/old, … — so both see the same
drift, and prints each run's allows/s, p99 and server/Redis CPU per allow, and the medians.
Use an even number of rounds: each server then runs first as often as second.

    python -m loadtests.ab --old d30fd6a                   # 4 pairs, 2 workers, 64 conns, 8 s
    python -m loadtests.ab --old HEAD~3 --rounds 5 --duration 10
    python -m loadtests.ab --old HEAD --old-env GATEWAY_STATS_LIVE=false   # a setting's cost

The old revision is checked out with `git worktree` under loadtests/out/ and removed after.
Each revision gets its OWN key dir and environment, made by that revision's own
`loadtests.bench.prepare_keys` and `gateway_env` (run in its tree): a newer bench prepares keys
an older gateway cannot load (an SM2 `next` code key) and sets variables it refuses (a rate
limit kind it does not know), so one shared key dir stopped the old server at start-up. The
codes, tokens and sealed attributes of each run come from that revision's own keys.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import bench, seed

GATE = "gate-metro-l1-xiaoshizi"


def revision_env(tree: Path, redis_url: str, keys_dir: Path, port: int,
                 workers: int) -> dict[str, str]:
    """The key dir and the gateway environment a revision's own bench makes (its
    `loadtests.bench.prepare_keys` and `gateway_env`, run in its tree)."""
    code = ("import json, sys; from pathlib import Path; from loadtests import bench; "
            "k = Path(sys.argv[1]); bench.prepare_keys(k); "
            "print(json.dumps(bench.gateway_env(sys.argv[2], k, int(sys.argv[3]), "
            "int(sys.argv[4]))))")
    r = subprocess.run([bench.PY, "-c", code, str(keys_dir), redis_url, str(port),
                        str(workers)], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{tree}: preparing its keys failed: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


@dataclass
class Pair:
    """Both revisions up at once on one private Redis: their key dirs, base URLs and server
    pids, by name ("old", "new")."""

    work: Path
    keys_dirs: dict[str, Path]
    bases: dict[str, str]
    pids: dict[str, int]
    redis_pid: int


@contextmanager
def old_and_new(old: str, label: str, workers: int,
                extra_env: dict[str, dict[str, str]] | None = None) -> Iterator[Pair]:
    """`old` checked out with `git worktree` and the working tree, each served with its own
    key dir and environment (`revision_env`) under its own Redis key prefix; everything
    removed afterwards."""
    work = bench.OUT_DIR / f"{label}-{time.strftime('%Y%m%dT%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    old_tree = work / "old"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old_tree), old],
                   cwd=bench.ROOT, check=True)
    trees = {"old": old_tree, "new": bench.ROOT}
    keys_dirs = {name: work / f"keys-{name}" for name in trees}
    try:
        with bench.redis_server() as (redis_url, redis_pid), ExitStack() as servers:
            bases: dict[str, str] = {}
            pids: dict[str, int] = {}
            for name, tree in trees.items():
                port = bench.free_port()
                env = {**revision_env(tree, redis_url, keys_dirs[name], port, workers),
                       "GATEWAY_REDIS_PREFIX": f"ab-{name}:", "PYTHONPATH": str(tree),
                       **(extra_env or {}).get(name, {})}
                proc = servers.enter_context(bench.process(
                    [bench.PY, "-m", "gateway", "serve", "--workers", str(workers),
                     "--port", str(port)], env=env, log=work / f"{name}.log", cwd=tree))
                bases[name], pids[name] = f"http://127.0.0.1:{port}", proc.pid
            for base in bases.values():
                bench.wait_http(f"{base}/healthz", timeout_s=60)
            time.sleep(1.5)  # every worker listening
            yield Pair(work, keys_dirs, bases, pids, redis_pid)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)],
                       cwd=bench.ROOT, check=False)
        for keys_dir in keys_dirs.values():
            shutil.rmtree(keys_dir, ignore_errors=True)


def print_medians(results: dict[str, list[dict[str, Any]]], fields: tuple[str, ...]) -> None:
    for field in fields:
        old = statistics.median([r[field] or 0.0 for r in results["old"]])
        new = statistics.median([r[field] or 0.0 for r in results["new"]])
        change = f"{(new - old) / old * 100:+.1f} %" if old else "n/a"
        print(f"median {field:13s} old {old:9.1f}  new {new:9.1f}  {change}")


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    wrk = bench.ensure_wrk()
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with old_and_new(args.old, "ab", args.workers,
                     {"old": dict(args.old_env), "new": dict(args.new_env)}) as pair:
        work, keys_dirs, bases, pids = pair.work, pair.keys_dirs, pair.bases, pair.pids
        redis_pid = pair.redis_pid
        keys = {n: seed.GatewayKeys.load(k) for n, k in keys_dirs.items()}
        tokens = {n: seed.client_token(b, GATE, bench.demo_secret(keys_dirs[n], GATE))
                  for n, b in bases.items()}
        people: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for n, b in bases.items():
            resident, person, _ = bench.resident_person(b, keys_dirs[n])
            people[n] = (person, bench.sealed_attributes(b, keys[n], resident))

        def fresh_codes(name: str, n: int) -> list[str]:
            person, attributes = people[name]
            return seed.issue_codes(keys[name], n, person, attributes=attributes)

        junk = seed.write_lines(work / "junk.txt", seed.junk_codes(3000))

        def env_for(name: str, codes: Path, expect: str) -> dict[str, str]:
            return {"WRK_PATH": "/v1/codes/verify", "WRK_SCENE": "metro",
                    "WRK_AUTH": f"Bearer {tokens[name]}", "WRK_CODES": str(codes),
                    "WRK_EXPECT": expect}

        # warm-up on junk, then one untimed allow run each: the first allow run of a fresh
        # server is slower (new Redis keys, first leases), which would favour whichever
        # server runs second (measured: +17 % between two copies of the same code)
        for name, base in bases.items():
            bench.run_wrk(wrk, "warm-up", base, "verify.lua",
                          env_for(name, junk, "malformed"), threads=1,
                          connections=args.connections, duration_s=2)
            warm = seed.write_lines(work / f"warm-{name}.txt",
                                    fresh_codes(name, args.codes_per_second * 2))
            bench.run_wrk(wrk, "warm-up", base, "verify.lua",
                          env_for(name, warm, '"allow"'), threads=1,
                          connections=args.connections, duration_s=2)
            warm.unlink()
        for i in range(args.rounds):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                codes = fresh_codes(name, args.codes_per_second * args.duration)
                f = seed.write_lines(work / f"codes-{name}.txt", codes)
                r = bench.run_wrk(wrk, name, bases[name], "verify.lua",
                                  env_for(name, f, '"allow"'), threads=1,
                                  connections=args.connections,
                                  duration_s=args.duration, server_pid=pids[name],
                                  redis_pid=redis_pid)
                f.unlink()
                row = {"allows_per_s": r.expected_rps, "p99_ms": r.p99_ms,
                       "server_us": r.server_cpu_us_per_req,
                       "redis_us": r.redis_cpu_us_per_req, "other": r.other}
                results[name].append(row)
                print(f"{name}  {row}", flush=True)
    print_medians(results, ("allows_per_s", "p99_ms", "server_us", "redis_us"))
    return results


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("GATEWAY_"):
        raise argparse.ArgumentTypeError("expected GATEWAY_NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the git revision to compare against")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--codes-per-second", type=int, default=14000)
    p.add_argument("--old-env", type=_setting, action="append", default=[],
                   metavar="NAME=VALUE", help="an environment variable for the old server "
                   "only (repeatable): with --old HEAD, an A/B of a setting on the same code, "
                   "e.g. --old-env GATEWAY_STATS_LIVE=false")
    p.add_argument("--new-env", type=_setting, action="append", default=[],
                   metavar="NAME=VALUE", help="the same for the new server")
    args = p.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
