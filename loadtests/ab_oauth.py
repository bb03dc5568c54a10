"""Paired A/B of the token endpoint (client_credentials) or introspection: an earlier revision
against the working tree, both up at once on one Redis (each under its own key prefix), runs
alternated old/new, new/old, … (loadtests/ab.py's method for the verify path), every answer
checked by loadtests/wrk/oauth.lua; prints each run and the medians.

    python -m loadtests.ab_oauth --old HEAD~1 --scenario token      # 4 pairs, 2 workers, 8 s
    python -m loadtests.ab_oauth --old HEAD~1 --scenario introspect --rounds 6
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

from loadtests import bench, seed

GATE = "gate-metro-l1-xiaoshizi"
FORM = f"grant_type=client_credentials&scope={bench.PEER_SCOPE}"


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    wrk = bench.ensure_wrk()
    work = bench.OUT_DIR / f"ab-oauth-{time.strftime('%Y%m%dT%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    old_tree = work / "old"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old_tree), args.old],
                   cwd=bench.ROOT, check=True)
    keys_dir = work / "keys"
    bench.prepare_keys(keys_dir)
    trees = {"old": old_tree, "new": bench.ROOT}
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        with bench.redis_server() as (redis_url, redis_pid), ExitStack() as servers:
            bases: dict[str, str] = {}
            pids: dict[str, int] = {}
            for name, tree in trees.items():
                port = bench.free_port()
                env = {**bench.gateway_env(redis_url, keys_dir, port, args.workers),
                       "GATEWAY_REDIS_PREFIX": f"ab-{name}:", "PYTHONPATH": str(tree)}
                proc = servers.enter_context(bench.process(
                    [bench.PY, "-m", "gateway", "serve", "--workers", str(args.workers),
                     "--port", str(port)], env=env, log=work / f"{name}.log", cwd=tree))
                bases[name], pids[name] = f"http://127.0.0.1:{port}", proc.pid
            for base in bases.values():
                bench.wait_http(f"{base}/healthz", timeout_s=60)
            time.sleep(1.5)  # every worker listening
            secret = bench.demo_secret(keys_dir, GATE)
            auth = seed.basic(GATE, secret)

            def env_for(name: str) -> dict[str, str]:
                if args.scenario == "token":
                    return {"WRK_PATH": "/oauth2/token", "WRK_BODY": FORM, "WRK_AUTH": auth,
                            "WRK_CHECK": "token"}
                token = seed.client_token(bases[name], GATE, secret, bench.PEER_SCOPE)
                return {"WRK_PATH": "/oauth2/introspect", "WRK_BODY": f"token={token}",
                        "WRK_AUTH": auth, "WRK_CHECK": "introspect"}

            envs = {name: env_for(name) for name in bases}
            for name, base in bases.items():
                bench.run_wrk(wrk, "warm-up", base, "oauth.lua", envs[name], threads=1,
                              connections=args.connections, duration_s=2)
            for i in range(args.rounds):
                for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    r = bench.run_wrk(wrk, name, bases[name], "oauth.lua", envs[name],
                                      threads=1, connections=args.connections,
                                      duration_s=args.duration, server_pid=pids[name],
                                      redis_pid=redis_pid)
                    row = {"checked_per_s": r.expected_rps, "p99_ms": r.p99_ms,
                           "server_us": r.server_cpu_us_per_req,
                           "redis_us": r.redis_cpu_us_per_req, "other": r.other,
                           "loadavg": r.note}
                    results[name].append(row)
                    print(f"{name}  {row}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)],
                       cwd=bench.ROOT, check=False)
        shutil.rmtree(keys_dir, ignore_errors=True)
    for field in ("checked_per_s", "p99_ms", "server_us", "redis_us"):
        old = statistics.median([r[field] or 0.0 for r in results["old"]])
        new = statistics.median([r[field] or 0.0 for r in results["new"]])
        change = f"{(new - old) / old * 100:+.1f} %" if old else "n/a"
        print(f"median {field:13s} old {old:9.1f}  new {new:9.1f}  {change}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the git revision to compare against")
    p.add_argument("--scenario", choices=("token", "introspect"), default="token")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
